"""Checkpoints: folders of safetensors weights plus the recipe that built the model.

The layout of a run folder, the atomic writes and the recipe loading are framework-neutral
and live in :mod:`taa.folders`; this module reads and writes the tensors. Loading never
unpickles anything, and weights load strictly: every missing, unexpected or mis-shaped
key, and a tensor holding nan or inf, is named in one :class:`~taa.folders.CheckpointError`.
The files of a resumable state (the optimizer's, ``trainer.json``) are checked the same
way, each problem named with its file.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors.torch import load_model, save_file, save_model
from torch import Tensor, nn

from taa import config as cfg
from taa.safetensors_file import FLOATING_DTYPES, check_finite, check_floating, open_safetensors, read_tensors
from taa.safetensors_file import tensor_dtypes
from taa.folders import METRICS, OPTIMIZER_SETTINGS, OPTIMIZER_TENSORS, RECIPE, WEIGHTS, CheckpointError
from taa.folders import read_json, weight_mismatches, weights_file
from taa.folders import write_file_atomically
from taa.training.divergence import finite_json


# ------------------------------------------------------------------ tensors and weights


def save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    write_file_atomically(Path(path), lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp)))


def load_tensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file; a missing, damaged or foreign file, or a tensor
    holding nan or inf, is one CheckpointError."""
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

    A damaged or foreign file, what does not fit (missing, unexpected, mis-shaped keys;
    integers where the model holds floating-point weights) and weights holding nan or inf
    are one :class:`CheckpointError`. The values are checked once loaded, in the model:
    no second copy of the weights.
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
    state = model.state_dict()
    check_finite({key: state[key] for key in found}, path)  # as the file names them (a tied tensor once)
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
    """Continue ``optimizer`` from the files :func:`save_optimizer` wrote into ``directory``.

    Both files are checked before the optimizer takes anything, each problem one
    :class:`CheckpointError` naming its file: ``optimizer.json`` that is not JSON (the
    line) or not what :func:`save_optimizer` writes (:func:`_optimizer_settings`);
    ``optimizer.safetensors`` damaged, holding nan or inf, holding integers (every tensor
    the optimizers keep is floating-point, the step count of Adam's and Muon's too: torch
    would cast integers without a word), a name that is no ``<index>.<name>``, or a moment
    of another shape than its weight (which torch would broadcast into nan weights).
    """
    directory = Path(directory)
    settings, path = directory / OPTIMIZER_SETTINGS, directory / OPTIMIZER_TENSORS
    saved = _optimizer_settings(settings)
    kinds = tensor_dtypes(path)  # from the header, before reading the tensors
    check_floating(kinds, dict.fromkeys(kinds, True), f"{path}: optimizer state")
    tensors = load_tensors(path)
    weights = dict(zip([index for group in saved["param_groups"] for index in group["params"]],
                       [weight for group in optimizer.param_groups for weight in group["params"]]))
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *saved["scalars"].items()]:
        index, dot, name = key.partition(".")
        if not (dot and name and index.isdigit()):
            raise CheckpointError(f"{path if key in tensors else settings}: {key!r} names no optimizer state "
                                  "(<parameter index>.<name>)")
        weight = weights.get(int(index))
        if isinstance(value, Tensor) and value.dim() and weight is not None and value.shape != weight.shape:
            raise CheckpointError(f"{path}: {key} has shape {tuple(value.shape)}, its weight {tuple(weight.shape)}")
        state.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in saved["param_groups"]]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError) as error:  # other groups, another number of weights
        message = " ".join(str(error).split())
        raise CheckpointError(f"{settings}: does not fit this run's optimizer ({message})") from None


def _optimizer_settings(path: Path) -> dict[str, Any]:
    """``optimizer.json``: ``param_groups`` (a list of mappings, each with ``params``, a list
    of parameter indices) and ``scalars`` (a mapping); anything else is one CheckpointError
    naming the file and the field."""
    saved = read_json(path)  # missing, not UTF-8, not JSON: the file and line
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: expected a JSON object with param_groups and scalars")
    for name, kind in (("param_groups", list), ("scalars", dict)):
        if name not in saved:
            raise CheckpointError(f"{path}: no {name}")
        if not isinstance(saved[name], kind):
            raise CheckpointError(f"{path}: {name} should be a {'list' if kind is list else 'mapping'}")
    for number, group in enumerate(saved["param_groups"]):
        params = group.get("params") if isinstance(group, dict) else None
        if not isinstance(params, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in params):
            raise CheckpointError(f"{path}: param_groups[{number}] should be a mapping whose params is a list of "
                                  "parameter indices")
        if "betas" in group and not (isinstance(group["betas"], list) and len(group["betas"]) == 2):
            raise CheckpointError(f"{path}: param_groups[{number}].betas should be a list of two numbers")
    return saved


# What trainer.json holds beside the trainer's own fields: each random generator's state
# (Python's and numpy's, as their getstate() gives it with lists for tuples and arrays)
# and the batch stream's position (None for an iterator that has none).
_RANDOM_STATES = {
    "python": tuple[int, list[int], Optional[float]],
    "numpy": tuple[str, list[int], int, int, float],
    "batches": Optional[dict[str, Any]],
}
_FORMER_FIELDS = {"stopped_early": bool}  # older taa's flag, which the trainer reads as its stop_reason


def read_trainer_state(path: Path, fields: type) -> dict[str, Any]:
    """``trainer.json`` of a state folder, checked against the dataclass ``fields`` (the
    trainer's state) and the random states beside it: anything that is not what the
    trainer wrote is one :class:`CheckpointError` naming the file and the field (not JSON
    at line N, a field missing, unknown, or of the wrong type), not an error somewhere in
    resuming that names neither.

    Of the trainer's fields only ``step`` must be there: states of an older taa lack some
    that came later, which start from their defaults.
    """
    saved = read_json(path)  # missing, not UTF-8, not JSON: the file and line
    if not isinstance(saved, dict) or not isinstance(saved.get("trainer"), dict):
        raise CheckpointError(f"{path}: expected a JSON object whose trainer is a mapping of the trainer's state")
    trainer = saved["trainer"]
    hints = {**typing.get_type_hints(fields), **_FORMER_FIELDS}
    unknown = sorted(set(trainer) - set(hints))
    if unknown:
        raise CheckpointError(f"{path}: unknown field {', '.join(f'trainer.{name}' for name in unknown)}")
    for name in ["trainer.step", *_RANDOM_STATES]:
        section, _, field = name.rpartition(".")
        if field not in (trainer if section else saved):
            raise CheckpointError(f"{path}: no {name}")
    checks = [(value, hints[name], f"trainer.{name}") for name, value in trainer.items()]
    checks += [(saved[name], annotation, name) for name, annotation in _RANDOM_STATES.items()]
    problem = next(filter(None, (_json_problem(*check) for check in checks)), None)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return saved


def _json_problem(value: Any, annotation: Any, where: str) -> Optional[str]:
    """What is wrong with a value read from JSON for a type annotation, naming the field
    (``trainer.history[3][1] should be a number``); None when it fits. JSON has lists
    where Python has tuples."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return None
    if origin in (Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        problems = [_json_problem(value, option, where) for option in arguments if option is not type(None)]
        return None if None in problems else problems[0]
    if origin is tuple:
        if not isinstance(value, list) or len(value) != len(arguments):
            return f"{where} should be a list of {len(arguments)} values"
        return next(filter(None, (_json_problem(v, a, f"{where}[{i}]")
                                  for i, (v, a) in enumerate(zip(value, arguments)))), None)
    if origin is list:
        if not isinstance(value, list):
            return f"{where} should be a list"
        return next(filter(None, (_json_problem(v, arguments[0], f"{where}[{i}]") for i, v in enumerate(value))), None)
    if origin is dict:
        if not isinstance(value, dict):
            return f"{where} should be a mapping"
        return next(filter(None, (_json_problem(v, arguments[1], f"{where}.{k}") for k, v in value.items())), None)
    checks = {bool: (lambda v: isinstance(v, bool), "true or false"),
              int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
              float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
              str: (lambda v: isinstance(v, str), "a string")}
    if annotation not in checks:  # no other kind is in the state; anything else is taken as it is
        return None
    fits, kind = checks[annotation]
    return None if fits(value) else f"{where}={_short(value)} should be {kind}"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:40] + " ..."


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
    figures = json.dumps(finite_json(metrics or {}), indent=2, allow_nan=False) + "\n"  # strict JSON: null, not NaN
    write_file_atomically(directory / METRICS, lambda tmp: tmp.write_text(figures))
    save_weights(model, directory / WEIGHTS)  # last: a folder with weights is complete
    return directory


def load_weights(directory: str | Path, model: nn.Module) -> nn.Module:
    """Load a checkpoint folder's ``model.safetensors`` into ``model`` (pickled weights are refused)."""
    return load_weights_file(model, weights_file(directory))
