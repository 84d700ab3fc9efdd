"""What a resumable state holds besides tensors, for every framework's Trainer: ``trainer.json``.

A state folder (:mod:`taa.folders`) keeps the weights, the optimizer's tensors and the
framework's random generators in safetensors files, each framework its own; beside them
``trainer.json`` holds what no framework owns: the trainer's bookkeeping
(:class:`~taa.training.results.TrainerState`), Python's and numpy's random states, and the
batch stream's position. This module writes that part (:func:`host_random_state`), reads it
back checked field by field (:func:`read_trainer_state`: each problem one
:class:`~taa.folders.CheckpointError` naming the file and the field, and calling the state
damaged, before any training) and restores it (:func:`restore_trainer_state`,
:func:`restore_host_random_state`). Imports no framework.
"""

from __future__ import annotations

import json
import math
import random
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np

from taa.config import TrainConfig
from taa.folders import CheckpointError, best_weights, read_json
from taa.training.results import EARLY_STOPPING, TIME_BUDGET, TrainerState

# What damaged state files are said to be, after the file, the field and what is wrong with it.
DAMAGED = "the state is damaged"


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
    at line N, a field missing, unknown, or of the wrong type; a count no run reaches,
    :func:`_count_problem`; a random state its generator would refuse or misread,
    :func:`_random_state_problem`), not an error somewhere in resuming that names neither,
    nor a run that resumes from nonsense.

    Of the trainer's fields only ``step`` must be there: states of an older taa lack some
    that came later, which start from their defaults.
    """
    saved = read_json(path)  # missing, not UTF-8, not JSON: the file and line
    if not isinstance(saved, dict) or not isinstance(saved.get("trainer"), dict):
        raise CheckpointError(f"{path}: expected a JSON object whose trainer is a mapping of the trainer's state; "
                              f"{DAMAGED}")
    trainer = saved["trainer"]
    hints = {**typing.get_type_hints(fields), **_FORMER_FIELDS}
    unknown = sorted(set(trainer) - set(hints))
    if unknown:
        raise CheckpointError(f"{path}: unknown field {', '.join(f'trainer.{name}' for name in unknown)}; {DAMAGED}")
    for name in ["trainer.step", *_RANDOM_STATES]:
        section, _, field = name.rpartition(".")
        if field not in (trainer if section else saved):
            raise CheckpointError(f"{path}: no {name}; {DAMAGED}")
    checks = [(value, hints[name], f"trainer.{name}") for name, value in trainer.items()]
    checks += [(saved[name], annotation, name) for name, annotation in _RANDOM_STATES.items()]
    problem = next(filter(None, (_json_problem(*check) for check in checks)), None)
    problem = problem or _count_problem(trainer) or _random_state_problem(saved)
    if problem:
        raise CheckpointError(f"{path}: {problem}; {DAMAGED}")
    return saved


# The most steps a state counts: beyond, a float (a rate schedule's position, JSON's
# numbers elsewhere) no longer tells one step from the next.
MOST_STEPS = 2**53


def _count_problem(trainer: dict[str, Any]) -> Optional[str]:
    """What no run writes, though every type fits: a step count below 0 or past
    :data:`MOST_STEPS`, a negative number of tokens, seconds or evaluations, or a step
    listed (logged, kept among the best, skipped) that is not one of the steps the state
    took; None when the counts make sense."""
    step = trainer["step"]
    if not 0 <= step <= MOST_STEPS:
        return f"trainer.step={_short(step)} should be a count of steps from 0 to 2**53"
    for name in ("tokens", "seconds", "evaluations_without_improvement"):
        if trainer.get(name, 0) < 0:
            return f"trainer.{name}={_short(trainer[name])} should be 0 or more"
    history = trainer.get("history", [])
    for i, (_, _, rate) in enumerate(history):
        if rate < 0:
            return f"trainer.history[{i}][2]={_short(rate)} should be a rate, 0 or more"
    listed = [(f"history[{i}][0]", entry[0]) for i, entry in enumerate(history)]
    listed += [(f"best[{i}][1]", entry[1]) for i, entry in enumerate(trainer.get("best", []))]
    listed += [(f"skipped_steps[{i}]", value) for i, value in enumerate(trainer.get("skipped_steps", []))]
    for where, value in listed:
        if not 1 <= value <= step:
            return f"trainer.{where}={_short(value)} is not one of the state's steps (1 to {step})"
    return None


# Python's and numpy's Mersenne Twister: 624 words of 32 bits and a position in them.
MT_WORDS = 624


def _random_state_problem(saved: dict[str, Any]) -> Optional[str]:
    """What is wrong with the random states of ``trainer.json``, of the right types already
    (:data:`_RANDOM_STATES`): Python's must be ``random.getstate()``'s (its version, 624
    words and a position 0 to 624), numpy's ``np.random.get_state()``'s ('MT19937', 624
    words, a position 0 to 624, a flag 0 or 1). Checked here, as their generators do not
    all: Python keeps the low 32 bits of a larger word and numpy a position past the end,
    without a word; an array too short is an IndexError from numpy."""

    def words(values: list[int]) -> bool:
        return len(values) == MT_WORDS and all(0 <= value < 2**32 for value in values)

    version, internal, _ = saved["python"]
    if version != random.Random.VERSION:
        return f"python[0]={_short(version)} should be {random.Random.VERSION} (Python's random state version)"
    if not (len(internal) == MT_WORDS + 1 and words(internal[:-1]) and 0 <= internal[-1] <= MT_WORDS):
        return f"python[1] should be {MT_WORDS} words of 32 bits and a position from 0 to {MT_WORDS}"
    name, keys, position, has_gauss, _ = saved["numpy"]
    if name != "MT19937":
        return f"numpy[0]={_short(name)} should be \"MT19937\""
    if not words(keys):
        return f"numpy[1] should be {MT_WORDS} words of 32 bits"
    if not 0 <= position <= MT_WORDS:
        return f"numpy[2]={_short(position)} should be a position from 0 to {MT_WORDS}"
    if has_gauss not in (0, 1):
        return f"numpy[3]={_short(has_gauss)} should be 0 or 1"
    return None


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
    if origin is Literal:
        options = ", ".join(map(json.dumps, arguments))
        return None if value in arguments else f"{where}={_short(value)} should be one of {options}"
    checks = {bool: (lambda v: isinstance(v, bool), "true or false"),
              int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
              float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
              str: (lambda v: isinstance(v, str), "a string")}
    if annotation not in checks:  # no other kind is in the state; anything else is taken as it is
        return None
    fits, kind = checks[annotation]
    if not fits(value):
        return f"{where}={_short(value)} should be {kind}"
    if annotation is float and not math.isfinite(value):  # the trainer writes null for a figure that is not
        return f"{where}={_short(value)} should be a finite number"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:40] + " ..."


# ------------------------------------------------------------------ writing and restoring


def host_random_state(batches: Any) -> dict[str, Any]:
    """What ``trainer.json`` keeps beside the trainer's fields: Python's and numpy's random
    states (lists for their tuples and arrays) and the batch stream's position (None for an
    iterator that has none)."""
    return {
        "python": _jsonable(random.getstate()),
        "numpy": _jsonable(np.random.get_state()),
        "batches": batches.state_dict() if hasattr(batches, "state_dict") else None,
    }


def restore_host_random_state(saved: dict[str, Any], batches: Any) -> None:
    """Put back what :func:`host_random_state` saved (read by :func:`read_trainer_state`)."""
    random.setstate(_python_random_state(saved["python"]))
    np.random.set_state(_numpy_random_state(saved["numpy"]))
    if saved["batches"] is not None:
        batches.load_state_dict(saved["batches"])


def restore_trainer_state(saved: dict[str, Any], train: TrainConfig) -> TrainerState:
    """The :class:`TrainerState` of ``trainer.json``'s ``trainer`` section (read by
    :func:`read_trainer_state`). A state of an older taa has a flag instead of the stop
    reason: the time budget if the run had spent it, else early stopping."""
    trainer = dict(saved)
    if "stopped_early" in trainer:
        out_of_time = train.max_minutes > 0 and trainer["seconds"] >= 60 * train.max_minutes
        stopped = trainer.pop("stopped_early")
        trainer["stop_reason"] = (TIME_BUDGET if out_of_time else EARLY_STOPPING) if stopped else ""
    return TrainerState(**{**trainer, "history": [tuple(h) for h in trainer.get("history", [])],
                           "best": [tuple(b) for b in trainer.get("best", [])]})


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _python_random_state(saved: list) -> tuple:
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)


def _numpy_random_state(saved: list) -> tuple:
    name, keys, pos, has_gauss, cached = saved
    return (name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached)


def check_best_weights(directory: Path, state: TrainerState, read: Callable[[Path], Any]) -> None:
    """Every best weights file the state in ``directory`` lists must be in its run folder's
    ``best/`` and sound (``read``: the framework's reader, which refuses a damaged file or
    one holding nan or inf): the run ends with them, so a problem is found now, not after
    the training."""
    for _, step in state.best:
        path = best_weights(directory.parent, step)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file, though the state in {directory} (step {state.step}) lists it "
                                  "among the best weights the run ends with")
        read(path)
