"""Run and model folders on disk: the file names, atomic writes, and what kind a folder is.

Three kinds of folder hold a model, each recognised by one file:

- a taa training run (``taa train --out DIR``), by its ``recipe.yaml``:

      model.safetensors, recipe.yaml, metrics.json   the final model
      tokenizer/                                     the task's tokenizer (if it has one)
      training_curves.png                            loss and validation curves
      state/                                         the latest resumable training state
      best/step-N.safetensors                        the best k weights by the validation metric

- a converted taa model (``taa convert --from-hf``), by its ``model.yaml`` (the class and
  the model section of a recipe, tagged ``taa.model/1``), with ``model.safetensors`` and
  ``tokenizer/``;
- a Hugging Face folder, by its ``config.json`` (or a sentence-transformers ``modules.json``).

Weights are safetensors only: a folder with only pickled weights (``pytorch_model.bin``,
``*.pt``) is refused, never unpickled. Every problem with a folder is one
:class:`CheckpointError` naming the folder or file.

Files are written atomically: a file goes to a temporary name and is renamed into place;
a folder is filled under a staging name and swapped in with renames, so a kill at any
moment leaves the previous version whole. Nothing here imports a framework.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from taa.config import ConfigError

# ------------------------------------------------------------------ file names

WEIGHTS = "model.safetensors"  # the model's weights, in every kind of folder
RECIPE = "recipe.yaml"  # a training run: the recipe that built and trained the model
METRICS = "metrics.json"  # a training run: its final figures
TOKENIZER = "tokenizer"  # the tokenizer folder of taa runs and converted models
CURVES = "training_curves.png"  # a training run: loss and validation curves
STATE = "state"  # a training run: the resumable training state (a folder)
TRAINER_STATE = "trainer.json"  # in the state folder: step, data position, kept best weights
OPTIMIZER_TENSORS = "optimizer.safetensors"  # in the state folder: the optimizer's moments
OPTIMIZER_SETTINGS = "optimizer.json"  # in the state folder: its hyper-parameters and scalars
RANDOM_STATE = "rng.safetensors"  # in the state folder: the framework's random generator state
BEST = "best"  # a training run: the best k weights, best/step-N.safetensors
MODEL_FILE = "model.yaml"  # a converted model: its class and config
MODEL_FORMAT = "taa.model/1"  # the format tag of model.yaml
HF_CONFIG = "config.json"  # a Hugging Face folder
HF_TOKENIZER = "tokenizer.json"  # a Hugging Face tokenizer (the ``tokenizers`` library's file)
HF_GENERATION_CONFIG = "generation_config.json"  # a Hugging Face folder's decoding settings
SENTENCE_TRANSFORMERS_MODULES = "modules.json"  # a sentence-transformers folder lists its modules
SENTENCE_TRANSFORMERS_CONFIG = "sentence_bert_config.json"  # its max_seq_length
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "*.pt", "*.pth", "*.ckpt", "*.bin")

TAA_RUN, TAA_MODEL, HUGGING_FACE = "taa_run", "taa_model", "hugging_face"  # what folder_kind returns


class CheckpointError(ConfigError):
    """A folder, or a file in it, cannot be loaded: missing, of the wrong kind, or its weights
    do not fit the model (missing, unexpected or mis-shaped keys). The message is one line
    naming the folder or file. A ConfigError, so every command reports it as a bad setting."""


def best_weights(folder: Path, step: int) -> Path:
    """Where a training run keeps the weights of step ``step`` among its best k."""
    return Path(folder) / BEST / f"step-{step}.safetensors"


# ------------------------------------------------------------------ which kind of folder


def folder_kind(folder: str | Path) -> str:
    """``taa_run``, ``taa_model`` or ``hugging_face``; a one-line error for anything else."""
    folder = Path(folder)
    if not folder.exists():
        raise CheckpointError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder (give the folder that holds the model)")
    if (folder / RECIPE).is_file():
        return TAA_RUN
    if (folder / MODEL_FILE).is_file():
        return TAA_MODEL
    if (folder / HF_CONFIG).is_file() or (folder / SENTENCE_TRANSFORMERS_MODULES).is_file():
        return HUGGING_FACE
    raise CheckpointError(
        f"{folder}: neither a taa checkpoint ({RECIPE} or {MODEL_FILE}) nor a Hugging Face folder ({HF_CONFIG})"
    )


def hugging_face_folders(folder: str | Path) -> list[Path]:
    """``folder`` and, for a sentence-transformers folder, its Transformer module's folder
    (the root itself for all-MiniLM-L6-v2, ``0_Transformer/`` in older ones)."""
    folder = Path(folder)
    folders = [folder]
    modules_file = folder / SENTENCE_TRANSFORMERS_MODULES
    if modules_file.is_file():
        for module in read_json(modules_file):
            if str(module.get("type", "")).endswith("models.Transformer"):
                inner = folder / module.get("path", "")
                if inner != folder and inner.is_dir():
                    folders.append(inner)
    return folders


def weights_file(folder: str | Path) -> Path:
    """The folder's ``model.safetensors``; a folder with only pickled weights is refused."""
    folder = Path(folder)
    path = folder / WEIGHTS
    if path.is_file():
        return path
    pickled = sorted({p.name for pattern in PICKLED_WEIGHTS for p in folder.glob(pattern)})
    if pickled:
        raise CheckpointError(
            f"{folder}: only pickled weights ({', '.join(pickled)}); taa reads safetensors only ({WEIGHTS})"
        )
    raise CheckpointError(f"{path}: no such file (the model's weights)")


def weight_mismatches(found: Mapping[str, Sequence[int]], expected: Mapping[str, Optional[Sequence[int]]]) -> list[str]:
    """What keeps weights from loading strictly: every missing, unexpected and mis-shaped key
    (``expected`` None: any shape), as parts of one message; empty when they fit."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(
        f"{key} {tuple(found[key])} != expected {tuple(expected[key])}"
        for key in set(expected) & set(found)
        if expected[key] is not None and tuple(found[key]) != tuple(expected[key])
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped: {'; '.join(misshaped)}")
    return problems


# ------------------------------------------------------------------ reading the descriptions


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}, line {error.lineno}: {error.msg}") from None


def load_recipe(folder: str | Path):
    """The :class:`~taa.config.RecipeConfig` of a training run."""
    from taa import config as cfg

    path = Path(folder) / RECIPE
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a taa checkpoint (no {RECIPE})")
    try:
        return cfg.RecipeConfig.from_dict(cfg.read_mapping(path))
    except CheckpointError:
        raise
    except ConfigError as error:
        raise CheckpointError(f"{path}: {error}") from None


def load_model_description(folder: str | Path) -> tuple[Any, Optional[str], dict[str, Any]]:
    """A converted model's ``model.yaml``: (its model config, its class name or None, the
    class's options: every other key, such as a BertModel's ``pooler``)."""
    from taa import config as cfg

    path = Path(folder) / MODEL_FILE
    try:
        description = cfg.read_mapping(path)
        if description.get("format") != MODEL_FORMAT:
            raise ConfigError(f"format={description.get('format')!r}, expected {MODEL_FORMAT!r}")
        config = cfg.model_config_from_dict(dict(description.get("model") or {}))
    except ConfigError as error:
        raise CheckpointError(f"{path}: {error}") from None
    options = {key: value for key, value in description.items() if key not in ("format", "architecture", "model")}
    return config, description.get("architecture"), options


def find_state_folder(folder: str | Path) -> Path:
    """The newest complete state folder in a run folder, a state folder itself, or what a kill
    between :func:`write_folder_atomically`'s two renames left (``state.new``, ``state.old``)."""
    folder = Path(folder)
    for candidate in (folder / STATE, folder / f"{STATE}.new", folder / f"{STATE}.old", folder):
        if (candidate / TRAINER_STATE).is_file():
            return candidate
    raise CheckpointError(f"{folder}: no resumable training state ({STATE}/{TRAINER_STATE})")


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
    temporary = _temporary_sibling(Path(path))
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
