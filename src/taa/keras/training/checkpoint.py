"""Checkpoints of a Keras run: the torch run folder's files, with torch's weight names.

The Keras twin of :mod:`taa.torch.training.checkpoint`, for what a Keras run writes: the
best weights (``best/step-N.safetensors``) and the final model (``model.safetensors``,
``recipe.yaml``, ``metrics.json``). The weights go through :mod:`taa.keras.weights`: torch's
names and layouts, a tied weight once, so ``taa.torch.from_pretrained`` loads a Keras run
as it loads its own, and the other way round. The folder layout and the atomic writes are
:mod:`taa.folders`'.

A Keras run writes no resumable state (``state/``): its optimizer and random generators
are not saved, and ``--resume`` is refused before training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

import keras
import numpy as np

from taa import config as cfg
from taa import folders
from taa.convert.state_dict import ConversionError
from taa.folders import CheckpointError, weights_file
from taa.keras.hub import save_weights
from taa.keras.weights import load_state_dict
from taa.safetensors_file import read_tensors

__all__ = ["load_average", "load_weights", "load_weights_file", "save_checkpoint", "save_weights"]


def load_weights_file(model: keras.Model, path: Path) -> keras.Model:
    """Load a safetensors file of torch-named weights strictly: every key and shape must
    match; a missing or damaged file, or a weight holding nan or inf, is one CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (the model's weights)")
    try:
        return load_state_dict(model, read_tensors(path, "np"), f"{path}: weights of {type(model).__name__}")
    except ConversionError as error:
        raise CheckpointError(str(error)) from None


def load_average(model: keras.Model, paths: Iterable[Path]) -> keras.Model:
    """Load the element-wise mean of several weight files (checkpoint averaging, paper §6.1)."""
    paths = list(paths)
    total = {key: value.astype(np.float64) for key, value in read_tensors(paths[0], "np").items()}
    for path in paths[1:]:
        for key, value in read_tensors(path, "np").items():
            if key not in total or total[key].shape != value.shape:
                raise CheckpointError(f"{path}: {key} does not match {paths[0]}")
            total[key] += value
    mean = {key: (value / len(paths)).astype(np.float32) for key, value in total.items()}
    try:
        return load_state_dict(model, mean, f"the mean of {len(paths)} weight files")
    except ConversionError as error:
        raise CheckpointError(str(error)) from None


def save_checkpoint(
    directory: str | Path,
    model: keras.Model,
    recipe: cfg.RecipeConfig,
    metrics: Optional[dict[str, Any]] = None,
    write_extra: Optional[Callable[[Path], None]] = None,
) -> Path:
    """The final model: weights, recipe, metrics (and task files) into ``directory``
    (:func:`taa.folders.save_final_model`)."""
    return folders.save_final_model(directory, recipe, metrics, write_extra, lambda path: save_weights(model, path))


def load_weights(directory: str | Path, model: keras.Model) -> keras.Model:
    """Load a checkpoint folder's ``model.safetensors`` into ``model``."""
    return load_weights_file(model, weights_file(directory))
