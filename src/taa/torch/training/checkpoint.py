"""Checkpoints: folders of safetensors weights plus the recipe that built the model.

The layout of a run folder, the atomic writes and the recipe loading are framework-neutral
and live in :mod:`taa.folders`; this module reads and writes the tensors. Loading never
unpickles anything, and weights load strictly: every missing, unexpected or mis-shaped
key, and a tensor holding nan or inf, is named in one :class:`~taa.folders.CheckpointError`.
The files of a resumable state (the optimizer's, ``trainer.json``, the random states) are
checked the same way, field by field against what the trainer and the recipe's optimizer
write: each problem is one error naming the file and the field, and calling the state
damaged, before any training (``trainer.json``, which no framework owns, by
:mod:`taa.training.state`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_model, save_file, save_model
from torch import Tensor, nn

from taa import config as cfg
from taa import folders
from taa.safetensors_file import FLOATING_DTYPES, check_finite, check_floating, open_safetensors, read_tensors
from taa.safetensors_file import tensor_dtypes
from taa.folders import OPTIMIZER_SETTINGS, OPTIMIZER_TENSORS, CheckpointError
from taa.folders import read_json, weight_mismatches, weights_file
from taa.folders import write_file_atomically
from taa.training.state import DAMAGED, _short


# ------------------------------------------------------------------ tensors and weights


def save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    """Tensors into a safetensors file, from the CPU (a file loads on any device)."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    write_file_atomically(Path(path), lambda tmp: save_file(cpu, str(tmp)))


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


def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path, state: Optional[dict[str, Any]] = None) -> None:
    """Moments as safetensors, hyper-parameters as JSON. ``state``: the optimizer's state
    dict with whole tensors, when its own holds shards (a run on several processes)."""
    state = state if state is not None else optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    save_tensors(tensors, directory / OPTIMIZER_TENSORS)
    (directory / OPTIMIZER_SETTINGS).write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


# Settings of a parameter group that choose how torch computes the update, not what it is
# (a fused or for-each kernel, where the device has one): the machine resuming decides them,
# so a state saved on one device resumes on another.
KERNEL_SETTINGS = ("foreach", "fused", "capturable", "differentiable")


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Continue ``optimizer`` from the files :func:`save_optimizer` wrote into ``directory``.

    ``optimizer`` is the one the recipe builds; a resumed run keeps the recipe's optimizer
    settings (a resume refuses to change them), so the saved state must hold what that
    optimizer would have written, and is checked against it before the optimizer takes
    anything. Each problem is one :class:`CheckpointError` naming its file and field and
    calling the state damaged:

    - ``optimizer.json`` that is not JSON (the line) or not what :func:`save_optimizer`
      writes (:func:`_optimizer_settings`); param groups other than the optimizer's, a
      hyper-parameter of the wrong kind, not finite, or other than the recipe's
      (:func:`_group_problem`);
    - ``optimizer.safetensors`` damaged, holding nan or inf, holding integers (every tensor
      the optimizers keep is floating-point, the step count of Adam's and Muon's too: torch
      would cast integers without a word), a name that is no ``<index>.<name>`` of a
      weight, a weight whose state lacks a tensor a step keeps or holds one it does not
      (:func:`_fresh_state`), or a tensor of another shape than the step's (a moment of
      another shape than its weight, which torch would broadcast into nan weights).

    The optimizer then takes the recipe's hyper-parameters, the saved rate (which the
    trainer sets again before each step) and the saved tensors.
    """
    directory = Path(directory)
    settings, path = directory / OPTIMIZER_SETTINGS, directory / OPTIMIZER_TENSORS
    saved = _optimizer_settings(settings)
    groups = optimizer.param_groups
    if len(saved["param_groups"]) != len(groups):
        raise CheckpointError(f"{settings}: param_groups holds {len(saved['param_groups'])} groups, the recipe's "
                              f"optimizer {len(groups)}; {DAMAGED}")
    first = 0
    for number, (group, fresh) in enumerate(zip(saved["param_groups"], groups)):
        problem = _group_problem(group, fresh, first, f"param_groups[{number}]", type(optimizer).__name__)
        if problem:
            raise CheckpointError(f"{settings}: {problem}; {DAMAGED}")
        first += len(fresh["params"])
    kinds = tensor_dtypes(path)  # from the header, before reading the tensors
    check_floating(kinds, dict.fromkeys(kinds, True), f"{path}: optimizer state")
    tensors = load_tensors(path)
    weights = [weight for group in groups for weight in group["params"]]
    keeps = [state for group, state in zip(groups, _fresh_state(optimizer)) for _ in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *saved["scalars"].items()]:
        file = path if key in tensors else settings
        index, dot, name = key.partition(".")
        if not (dot and name and index.isdigit()):
            raise CheckpointError(f"{file}: {key!r} names no optimizer state (<parameter index>.<name>)")
        if int(index) >= len(weights):
            raise CheckpointError(f"{file}: {key} names weight {index}, the optimizer has {len(weights)}; {DAMAGED}")
        if name in state.get(int(index), {}):
            raise CheckpointError(f"{settings}: scalars holds {key}, which {path.name} holds too; {DAMAGED}")
        state.setdefault(int(index), {})[name] = value
    for index, values in sorted(state.items()):  # a weight the run never updated has no state
        _check_weight_state(f"{index}.", values, keeps[index], weights[index], type(optimizer).__name__, path, settings)
    # the recipe's hyper-parameters (checked equal to the saved ones), the saved rate
    loaded = [{**{key: value for key, value in fresh.items() if key != "params"}, "lr": group["lr"],
               "params": group["params"]} for group, fresh in zip(saved["param_groups"], groups)]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": loaded})
    except (ValueError, KeyError, TypeError) as error:  # what the checks above do not foresee
        message = " ".join(str(error).split())
        raise CheckpointError(f"{settings}: does not fit this run's optimizer ({message})") from None


def _check_weight_state(prefix: str, values: dict[str, Any], kept: dict[str, Any], weight: Tensor, name: str,
                        path: Path, settings: Path) -> None:
    """The saved state ``values`` of one weight against ``kept``, the state one step of the
    optimizer (called ``name``) leaves for such a weight (:func:`_fresh_state`): the same
    names, tensors in ``path`` where it keeps tensors and numbers in ``settings`` where it
    keeps numbers, a single number where it keeps one, else the weight's shape. The first
    problem is a CheckpointError naming the file it is (or belongs) in."""
    listed = ", ".join(sorted(kept))
    for key in sorted(set(kept) | set(values)):
        if key not in values:
            file = path if isinstance(kept[key], Tensor) else settings  # where it belongs
            raise CheckpointError(f"{file}: no {prefix}{key} (the state {name} keeps for each weight it updated: "
                                  f"{listed}); {DAMAGED}")
        value = values[key]
        file = path if isinstance(value, Tensor) else settings  # where it is
        if key not in kept:
            raise CheckpointError(f"{file}: {prefix}{key} is no state {name} keeps ({listed}); {DAMAGED}")
        fresh = kept[key]
        if isinstance(fresh, Tensor) != isinstance(value, Tensor):
            where = f"a tensor in {path.name}" if isinstance(fresh, Tensor) else f"a number in {settings.name}"
            raise CheckpointError(f"{file}: {prefix}{key} should be {where}; {DAMAGED}")
        if isinstance(value, Tensor) and not fresh.dim() and value.dim():
            raise CheckpointError(f"{path}: {prefix}{key} has shape {tuple(value.shape)}, expected a single number; "
                                  f"{DAMAGED}")
        if isinstance(value, Tensor) and fresh.dim() and value.shape != weight.shape:
            raise CheckpointError(f"{path}: {prefix}{key} has shape {tuple(value.shape)}, its weight "
                                  f"{tuple(weight.shape)}; {DAMAGED}")


def _group_problem(saved: dict[str, Any], fresh: dict[str, Any], first: int, where: str, name: str) -> Optional[str]:
    """What is wrong with a saved parameter group, compared with the group ``fresh`` the
    recipe's optimizer holds, whose weights are numbered from ``first``; None when it fits.

    The weights must be the group's, in order. Every hyper-parameter must be one the
    optimizer has, of its kind (true or false; a finite number; a list of them), and, but
    for the rate (the schedule's, which changes every step) and :data:`KERNEL_SETTINGS`,
    the recipe's value: the recipe decides them and a resume cannot change them. One the
    file lacks (a torch of before it) takes the recipe's value, which it would have been.
    """
    count = len(fresh["params"])
    if saved["params"] != list(range(first, first + count)):
        return f"{where}.params should number the weights {first} to {first + count - 1} in order"
    for key in saved:
        if key not in fresh:
            return f"{where}.{key} is no setting of {name}"
    for key, value in saved.items():
        if key == "params":
            continue
        expected = fresh[key]
        if key in KERNEL_SETTINGS:
            if value is not None and not isinstance(value, bool):
                return f"{where}.{key}={_short(value)} should be true, false or null"
            continue
        problem = _setting_kind_problem(value, expected, f"{where}.{key}")
        if problem:
            return problem
        if key == "lr":
            if value < 0:
                return f"{where}.lr={_short(value)} should be 0 or more"
        elif not _same_setting(value, expected):
            return f"{where}.{key}={_short(value)}, the recipe's optimizer has {_short(expected)}"
    return None


def _setting_kind_problem(value: Any, expected: Any, where: str) -> Optional[str]:
    """``value``, read from JSON, is not of the kind of the optimizer's ``expected``: true or
    false for a flag, a finite number for a number, a list of as many for a tuple."""
    if isinstance(expected, bool):
        return None if isinstance(value, bool) else f"{where}={_short(value)} should be true or false"
    if isinstance(expected, (int, float)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return f"{where}={_short(value)} should be a finite number"
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(value, list) or len(value) != len(expected):
            return f"{where}={_short(value)} should be a list of {len(expected)} numbers"
        return next(filter(None, (_setting_kind_problem(v, e, f"{where}[{i}]")
                                  for i, (v, e) in enumerate(zip(value, expected)))), None)
    return None if value == expected else f"{where}={_short(value)}, the recipe's optimizer has {_short(expected)}"


def _same_setting(value: Any, expected: Any) -> bool:
    """Equal, numbers to rounding (both went through the recipe's YAML and the state's JSON)."""
    if isinstance(expected, (tuple, list)):
        return all(_same_setting(v, e) for v, e in zip(value, expected))
    if isinstance(expected, float) or isinstance(value, float):
        return math.isclose(value, expected, rel_tol=1e-9, abs_tol=0.0)
    return value == expected


def _fresh_state(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """For each parameter group of ``optimizer``, the state one step leaves for a weight of
    that group: what a saved state must hold for each weight it updated (Adam's step,
    exp_avg, exp_avg_sq; Muon's momentum_buffer in its matrix groups). Taken from a step of
    a copy of the optimizer (its class, its settings) over one stand-in weight per group, a
    single number of the weight's rank, kind and device: no second copy of the weights,
    and no list of what each optimizer keeps to fall behind torch's."""
    stand_ins, groups = [], []
    for group in optimizer.param_groups:
        weight = group["params"][0]
        stand_in = torch.zeros((1,) * weight.dim(), dtype=weight.dtype, device=weight.device)
        stand_in.grad = torch.ones_like(stand_in)
        stand_ins.append(stand_in)
        groups.append({**group, "params": [stand_in]})
    probe = type(optimizer).__new__(type(optimizer))
    probe.__setstate__({"defaults": dict(optimizer.defaults), "state": defaultdict(dict), "param_groups": groups})
    probe.step()  # the way torch rebuilds an unpickled optimizer: no __init__, which each class spells its own way
    return [dict(probe.state[stand_in]) for stand_in in stand_ins]


def _optimizer_settings(path: Path) -> dict[str, Any]:
    """``optimizer.json``: ``param_groups`` (a list of mappings, each with ``params``, a list
    of parameter indices) and ``scalars`` (a mapping); anything else is one CheckpointError
    naming the file and the field."""
    saved = read_json(path)  # missing, not UTF-8, not JSON: the file and line
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: expected a JSON object with param_groups and scalars; {DAMAGED}")
    for name, kind in (("param_groups", list), ("scalars", dict)):
        if name not in saved:
            raise CheckpointError(f"{path}: no {name}; {DAMAGED}")
        if not isinstance(saved[name], kind):
            raise CheckpointError(f"{path}: {name} should be a {'list' if kind is list else 'mapping'}; {DAMAGED}")
    for number, group in enumerate(saved["param_groups"]):
        params = group.get("params") if isinstance(group, dict) else None
        if not isinstance(params, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in params):
            raise CheckpointError(f"{path}: param_groups[{number}] should be a mapping whose params is a list of "
                                  f"parameter indices; {DAMAGED}")
    return saved


# The name of torch's random state in ``rng.safetensors``.
TORCH_RNG = "torch_rng"
CUDA_RNG = "cuda_rng"  # the GPU's generator, in a state saved by a run on a GPU


def read_torch_rng(path: Path) -> tuple[Tensor, Optional[Tensor]]:
    """torch's random state from ``rng.safetensors``: bytes, as many as this torch's
    generator keeps (torch.set_rng_state refuses anything else, naming no file); and the
    GPU generator's bytes when a run on a GPU saved them (None otherwise)."""
    tensors = load_tensors(path)
    if TORCH_RNG not in tensors:
        raise CheckpointError(f"{path}: no {TORCH_RNG}; {DAMAGED}")
    value, expected = tensors[TORCH_RNG], torch.get_rng_state()
    if value.dtype != expected.dtype or value.shape != expected.shape:
        raise CheckpointError(f"{path}: {TORCH_RNG} holds {tuple(value.shape)} {value.dtype}, torch's random state is "
                              f"{tuple(expected.shape)} {expected.dtype}; {DAMAGED}")
    cuda = tensors.get(CUDA_RNG)
    if cuda is not None and (cuda.dtype != torch.uint8 or cuda.dim() != 1):
        raise CheckpointError(f"{path}: {CUDA_RNG} holds {tuple(cuda.shape)} {cuda.dtype}, a GPU's random state is "
                              f"bytes; {DAMAGED}")
    return value, cuda


# ------------------------------------------------------------------ final model checkpoints


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    recipe: cfg.RecipeConfig,
    metrics: Optional[dict[str, Any]] = None,
    write_extra: Optional[Callable[[Path], None]] = None,
) -> Path:
    """The final model: weights, recipe, metrics (and task files) into ``directory``
    (:func:`taa.folders.save_final_model`)."""
    return folders.save_final_model(directory, recipe, metrics, write_extra, lambda path: save_weights(model, path))


def load_weights(directory: str | Path, model: nn.Module) -> nn.Module:
    """Load a checkpoint folder's ``model.safetensors`` into ``model`` (pickled weights are refused)."""
    return load_weights_file(model, weights_file(directory))
