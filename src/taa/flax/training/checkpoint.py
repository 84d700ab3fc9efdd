"""Checkpoints of a Flax run: the torch run folder's files, with torch's weight names.

The Flax twin of :mod:`taa.torch.training.checkpoint`. The weights go through
:mod:`taa.flax.weights` (:func:`taa.flax.hub.save_weights`): torch's names and layouts, a
tied weight once, so ``taa.torch.from_pretrained`` loads a Flax run's ``model.safetensors``
and ``best/step-N.safetensors`` as it loads its own, and the other way round. The folder
layout and the atomic writes are :mod:`taa.folders`'.

A resumable state (``state/``) holds the same files as torch's, each with the Flax run's
own contents where a framework's state is its own:

- ``model.safetensors``: the weights, as above;
- ``optimizer.safetensors``: every array of the optax state (moments, step counts, the
  rate), named by its place in the state (``inner_state.0.mu.<weight's torch name>``);
  ``optimizer.json``: the optimizer's settings, which must be the recipe's;
- ``rng.safetensors``: the key data and counts of the model's random streams (dropout);
- ``trainer.json``: the trainer's state, Python's and numpy's random states and the batch
  stream's position (:mod:`taa.training.state`, as torch's).

Every file is checked as it is read: each problem is one
:class:`~taa.folders.CheckpointError` naming the file and the field, and calling the
state damaged, before any training.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from taa import config as cfg
from taa import folders
from taa.convert.state_dict import ConversionError
from taa.flax.hub import save_weights
from taa.flax.training.step import named_leaves
from taa.flax.weights import load_state_dict
from taa.folders import OPTIMIZER_SETTINGS, OPTIMIZER_TENSORS, CheckpointError, read_json, weights_file
from taa.safetensors_file import read_tensors
from taa.training.state import DAMAGED

__all__ = [
    "load_average", "load_optimizer", "load_random_streams", "load_weights", "load_weights_file", "save_checkpoint",
    "save_optimizer", "save_random_streams", "save_weights",
]


# ------------------------------------------------------------------ tensors and weights


def save_arrays(arrays: dict[str, Any], path: Path) -> None:
    """Arrays into a safetensors file, atomically."""
    host = {name: np.array(value, order="C") for name, value in arrays.items()}  # a single number stays 0-d
    folders.write_file_atomically(Path(path), lambda tmp: save_file(host, str(tmp)))


def load_weights_file(model: nnx.Module, path: Path) -> nnx.Module:
    """Load a safetensors file of torch-named weights strictly: every key and shape must
    match; a missing or damaged file, or a weight holding nan or inf, is one CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (the model's weights)")
    try:
        return load_state_dict(model, read_tensors(path, "flax"), f"{path}: weights of {type(model).__name__}")
    except ConversionError as error:
        raise CheckpointError(str(error)) from None


def load_average(model: nnx.Module, paths: Iterable[Path]) -> nnx.Module:
    """Load the element-wise mean of several weight files (checkpoint averaging, paper §6.1)."""
    paths = list(paths)
    total = {key: np.asarray(value, np.float64) for key, value in read_tensors(paths[0], "np").items()}
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
    model: nnx.Module,
    recipe: cfg.RecipeConfig,
    metrics: Optional[dict[str, Any]] = None,
    write_extra: Optional[Callable[[Path], None]] = None,
) -> Path:
    """The final model: weights, recipe, metrics (and task files) into ``directory``
    (:func:`taa.folders.save_final_model`)."""
    return folders.save_final_model(directory, recipe, metrics, write_extra, lambda path: save_weights(model, path))


def load_weights(directory: str | Path, model: nnx.Module) -> nnx.Module:
    """Load a checkpoint folder's ``model.safetensors`` into ``model``."""
    return load_weights_file(model, weights_file(directory))


# ------------------------------------------------------------------ the optimizer


def save_optimizer(opt_state: Any, settings: dict[str, Any], directory: Path) -> None:
    """The optax state's arrays (by :func:`~taa.flax.training.step.leaf_name`) and the
    optimizer's settings into ``directory``."""
    save_arrays(named_leaves(opt_state), directory / OPTIMIZER_TENSORS)
    (directory / OPTIMIZER_SETTINGS).write_text(json.dumps({"settings": settings}, indent=2) + "\n")


def load_optimizer(fresh: Any, settings: dict[str, Any], directory: Path) -> Any:
    """The optax state :func:`save_optimizer` wrote into ``directory``, in the structure of
    ``fresh`` (the state the recipe's optimizer starts from), checked before anything is
    taken: the settings must be the recipe's, and the arrays those ``fresh`` holds, name
    for name, shape for shape, kind of number for kind of number."""
    directory = Path(directory)
    settings_path, path = directory / OPTIMIZER_SETTINGS, directory / OPTIMIZER_TENSORS
    saved = read_json(settings_path)  # missing, not UTF-8, not JSON: the file and line
    if not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict):
        raise CheckpointError(f"{settings_path}: expected a JSON object whose settings is a mapping; {DAMAGED}")
    for key in sorted(set(settings) | set(saved["settings"])):
        value, expected = saved["settings"].get(key), settings.get(key)
        if value != expected:
            raise CheckpointError(f"{settings_path}: settings.{key}={json.dumps(value)}, the recipe's optimizer has "
                                  f"{json.dumps(expected)}; {DAMAGED}")
    arrays = read_tensors(path, "np")  # damaged, or holding nan or inf: one line naming the file
    leaves, structure = jax.tree_util.tree_flatten_with_path(fresh)
    names = list(named_leaves(fresh))
    unknown = sorted(set(arrays) - set(names))
    if unknown:
        raise CheckpointError(f"{path}: {unknown[0]} is no array of this run's optimizer state; {DAMAGED}")
    loaded = []
    for name, (_, leaf) in zip(names, leaves):
        if name not in arrays:
            raise CheckpointError(f"{path}: no {name} (the optimizer's state for it); {DAMAGED}")
        value = arrays[name]
        if value.shape != leaf.shape or value.dtype != leaf.dtype:
            raise CheckpointError(f"{path}: {name} holds {value.shape} {value.dtype}, the optimizer keeps "
                                  f"{tuple(leaf.shape)} {leaf.dtype}; {DAMAGED}")
        loaded.append(jnp.asarray(value))
    return jax.tree_util.tree_unflatten(structure, loaded)


# ------------------------------------------------------------------ the random streams


def save_random_streams(model: nnx.Module, path: Path) -> None:
    """The key data and counts of the model's random streams (dropout's) into ``path``."""
    streams = {name: jax.random.key_data(value) if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key) else value
               for name, value in named_leaves(nnx.state(model, nnx.RngState)).items()}
    save_arrays(streams, path)


def load_random_streams(model: nnx.Module, path: Path) -> None:
    """Put the random streams :func:`save_random_streams` wrote back into ``model``: the
    same streams, each key and count of the same shape and kind."""
    arrays = read_tensors(path, "np")
    state = nnx.state(model, nnx.RngState)
    leaves, structure = jax.tree_util.tree_flatten_with_path(state)
    names = list(named_leaves(state))
    unknown = sorted(set(arrays) - set(names))
    if unknown:
        raise CheckpointError(f"{path}: {unknown[0]} is no random stream of this model; {DAMAGED}")
    loaded = []
    for name, (_, leaf) in zip(names, leaves):
        if name not in arrays:
            raise CheckpointError(f"{path}: no {name} (a random stream of the model); {DAMAGED}")
        value = arrays[name]
        is_key = jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        expected = jax.random.key_data(leaf) if is_key else leaf
        if value.shape != expected.shape or value.dtype != expected.dtype:
            raise CheckpointError(f"{path}: {name} holds {value.shape} {value.dtype}, the model's stream keeps "
                                  f"{tuple(expected.shape)} {expected.dtype}; {DAMAGED}")
        loaded.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(leaf)) if is_key else jnp.asarray(value))
    nnx.update(model, jax.tree_util.tree_unflatten(structure, loaded))
