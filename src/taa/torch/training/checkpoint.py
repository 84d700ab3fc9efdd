"""Checkpoints: folders of safetensors weights plus the recipe that built the model.

Everything is written atomically: a file goes to a temporary name and is renamed into
place; a folder is filled under a staging name and swapped in with renames, so a kill
at any moment leaves the previous checkpoint whole. Loading never unpickles anything.

A run folder (``taa train --out DIR``) holds:

    model.safetensors, recipe.yaml, metrics.json   the final model (plus task files, e.g. tokenizer/)
    state/                                         the latest resumable training state
    best/step-N.safetensors                        the best k weights by the validation metric
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor, nn

from taa import config as cfg

WEIGHTS = "model.safetensors"
RECIPE = "recipe.yaml"
METRICS = "metrics.json"


# ------------------------------------------------------------------ atomic writes


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _temporary_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(handle)
    os.chmod(name, 0o666 & ~_umask())  # mkstemp makes 0600; checkpoints are ordinary files
    return Path(name)


def write_file_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary_path)`` then rename over ``path``."""
    temporary = _temporary_sibling(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_folder_atomically(directory: Path, fill: Callable[[Path], None]) -> Path:
    """``fill(staging)`` then swap the staging folder in for ``directory``.

    The swap is two renames; if a kill falls between them, ``directory.new`` (complete,
    newer) or ``directory.old`` (complete, older) remains, and :func:`find_state_folder`
    finds it.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    os.chmod(staging, 0o777 & ~_umask())
    new, old = directory.with_name(directory.name + ".new"), directory.with_name(directory.name + ".old")
    try:
        fill(staging)
        shutil.rmtree(new, ignore_errors=True)
        staging.rename(new)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    new.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def find_state_folder(directory: str | Path) -> Path:
    """The newest complete state folder in a run folder, a state folder itself, or a swap leftover."""
    directory = Path(directory)
    for candidate in (directory / "state", directory / "state.new", directory / "state.old", directory):
        if (candidate / "trainer.json").is_file():
            return candidate
    raise cfg.ConfigError(f"{directory}: no resumable training state (state/trainer.json)")


# ------------------------------------------------------------------ tensors and weights


def save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    write_file_atomically(Path(path), lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp)))


def load_tensors(path: Path) -> dict[str, Tensor]:
    return load_file(str(path))


def save_weights(model: nn.Module, path: Path) -> None:
    """The model's weights; tied tensors are stored once."""
    write_file_atomically(Path(path), lambda tmp: save_model(model, str(tmp)))


def load_weights_file(model: nn.Module, path: Path) -> nn.Module:
    """Load weights; every key and shape must match (a clear error lists what does not)."""
    path = Path(path)
    if not path.is_file():
        raise cfg.ConfigError(f"{path}: no such file")
    try:
        load_model(model, str(path), strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise cfg.ConfigError(f"{path}: weights do not fit the model: {' '.join(first)[:500]}") from None
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
    save_tensors(tensors, directory / "optimizer.safetensors")
    (directory / "optimizer.json").write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    saved = json.loads((directory / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*load_tensors(directory / "optimizer.safetensors").items(), *saved["scalars"].items()]:
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


def load_recipe(directory: str | Path) -> cfg.RecipeConfig:
    directory = Path(directory)
    if not (directory / RECIPE).is_file():
        raise cfg.ConfigError(f"{directory}: not a taa checkpoint (no {RECIPE})")
    return cfg.RecipeConfig.from_dict(cfg.read_mapping(directory / RECIPE))


def load_weights(directory: str | Path, model: nn.Module) -> nn.Module:
    """Load a checkpoint folder's ``model.safetensors`` into ``model``."""
    return load_weights_file(model, Path(directory) / WEIGHTS)
