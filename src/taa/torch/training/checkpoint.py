"""Checkpoints: a folder with safetensors weights and the recipe that built the model.

Writing is atomic: everything goes into a temporary folder beside the target, which
then replaces the target with a rename, so a kill mid-write leaves the previous
checkpoint whole. Loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from safetensors.torch import load_model, save_model
from torch import nn

from taa import config as cfg

WEIGHTS = "model.safetensors"
RECIPE = "recipe.yaml"
METRICS = "metrics.json"


def save_checkpoint(
    directory: str | Path, model: nn.Module, recipe: cfg.RecipeConfig, metrics: Optional[dict[str, Any]] = None
) -> Path:
    """Write ``model.safetensors``, ``recipe.yaml`` and ``metrics.json`` atomically into ``directory``."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        save_model(model, str(staging / WEIGHTS))  # drops duplicates of tied weights
        cfg.save(recipe, staging / RECIPE)
        (staging / METRICS).write_text(json.dumps(metrics or {}, indent=2) + "\n")
        previous = None
        if directory.exists():
            previous = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            directory.rename(previous)
        staging.rename(directory)
        if previous is not None:
            shutil.rmtree(previous)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def load_recipe(directory: str | Path) -> cfg.RecipeConfig:
    directory = Path(directory)
    if not (directory / RECIPE).is_file():
        raise cfg.ConfigError(f"{directory}: not a taa checkpoint (no {RECIPE})")
    return cfg.RecipeConfig.from_dict(cfg.read_mapping(directory / RECIPE))


def load_weights(directory: str | Path, model: nn.Module) -> nn.Module:
    """Load ``model.safetensors`` into ``model``; every key and shape must match."""
    path = Path(directory) / WEIGHTS
    if not path.is_file():
        raise cfg.ConfigError(f"{directory}: no {WEIGHTS}")
    load_model(model, str(path), strict=True)
    return model
