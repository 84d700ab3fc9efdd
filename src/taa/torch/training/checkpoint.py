"""Checkpoints: folders of safetensors weights plus the recipe that built the model.

The layout of a run folder, the atomic writes and the recipe loading are framework-neutral
and live in :mod:`taa.folders`; this module reads and writes the tensors. Loading never
unpickles anything, and weights load strictly: every missing, unexpected or mis-shaped
key is named in one :class:`~taa.folders.CheckpointError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_model, save_file, save_model
from torch import Tensor, nn

from taa import config as cfg
from taa.safetensors_file import FLOATING_DTYPES, check_floating, open_safetensors, read_tensors
from taa.folders import METRICS, OPTIMIZER_SETTINGS, OPTIMIZER_TENSORS, RECIPE, WEIGHTS, CheckpointError
from taa.folders import weight_mismatches, weights_file
from taa.folders import write_file_atomically


# ------------------------------------------------------------------ tensors and weights


def save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    write_file_atomically(Path(path), lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp)))


def load_tensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file; a missing, damaged or foreign file is one CheckpointError."""
    return read_tensors(path, "pt")


def save_weights(model: nn.Module, path: Path) -> None:
    """The model's weights; tied tensors are stored once."""
    write_file_atomically(Path(path), lambda tmp: save_model(model, str(tmp)))


def _tied_names(model: nn.Module) -> list[set[str]]:
    """Names of the state dict that share one tensor (tied weights, stored once)."""
    groups: dict[tuple, set[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if tensor.numel():
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            groups.setdefault(key, set()).add(name)
    return [names for names in groups.values() if len(names) > 1]


def load_weights_file(model: nn.Module, path: Path) -> nn.Module:
    """Load weights strictly: every key, shape and kind of number must match; tied tensors
    may be stored once.

    A damaged or foreign file, and what does not fit (missing, unexpected, mis-shaped keys;
    integers where the model holds floating-point weights) is one :class:`CheckpointError`.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file (the model's weights)")
    with open_safetensors(path, "pt") as weights:  # the header once: shapes and kinds of number
        slices = {key: weights.get_slice(key) for key in weights.keys()}
        found = {key: tensor.get_shape() for key, tensor in slices.items()}
        kinds = {key: (tensor.get_dtype(), tensor.get_dtype() in FLOATING_DTYPES) for key, tensor in slices.items()}
    state = model.state_dict()
    floating = {key: value.is_floating_point() for key, value in state.items()}
    check_floating(kinds, floating, f"{path}: weights of {type(model).__name__}")
    expected = {key: tuple(value.shape) for key, value in state.items()}
    for names in _tied_names(model):  # a tied tensor needs to be stored under one of its names
        if names & set(found):
            for name in names - set(found):
                expected.pop(name)
    problems = weight_mismatches(found, expected)
    if problems:
        raise CheckpointError(f"{path}: weights do not fit {type(model).__name__}: {' | '.join(problems)}")
    load_model(model, str(path), strict=True)
    return model


@torch.no_grad()
def load_average(model: nn.Module, paths: Iterable[Path]) -> nn.Module:
    """Load the element-wise mean of several weight files (checkpoint averaging, paper §6.1)."""
    paths = list(paths)
    load_weights_file(model, paths[0])  # checks keys and shapes
    total = {key: value.double() for key, value in load_tensors(paths[0]).items()}
    for path in paths[1:]:
        for key, value in load_tensors(path).items():
            total[key] += value.double()
    current = model.state_dict()
    for key, value in total.items():
        current[key].copy_(value / len(paths))
    return model


def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Moments as safetensors, hyper-parameters as JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    save_tensors(tensors, directory / OPTIMIZER_TENSORS)
    (directory / OPTIMIZER_SETTINGS).write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    saved = json.loads((directory / OPTIMIZER_SETTINGS).read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*load_tensors(directory / OPTIMIZER_TENSORS).items(), *saved["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in saved["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ------------------------------------------------------------------ final model checkpoints


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    recipe: cfg.RecipeConfig,
    metrics: Optional[dict[str, Any]] = None,
    write_extra: Optional[Callable[[Path], None]] = None,
) -> Path:
    """The final model: weights, recipe, metrics (and task files) into ``directory``.

    Each file is replaced atomically; other contents of the folder (``state/``,
    ``best/``) are left alone.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if write_extra is not None:
        write_extra(directory)
    write_file_atomically(directory / RECIPE, lambda tmp: tmp.write_text(cfg.dumps(recipe, "yaml")))
    write_file_atomically(directory / METRICS, lambda tmp: tmp.write_text(json.dumps(metrics or {}, indent=2) + "\n"))
    save_weights(model, directory / WEIGHTS)  # last: a folder with weights is complete
    return directory


def load_weights(directory: str | Path, model: nn.Module) -> nn.Module:
    """Load a checkpoint folder's ``model.safetensors`` into ``model`` (pickled weights are refused)."""
    return load_weights_file(model, weights_file(directory))
