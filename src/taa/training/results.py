"""What every framework's Trainer reports and keeps, without a framework: why a run ended,
its result, where it stands, and which weights Muon updates (by their torch names); and the
bookkeeping every Trainer does alike on the host: the rate of the next step, the ranking of
validations (the best weights, early stopping), a skipped step's report, the result."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from taa.folders import finite_json

# Why a run ended: every step done, the ``max_minutes`` budget spent, or ``early_stopping``
# validations in a row without improvement.
STEPS, TIME_BUDGET, EARLY_STOPPING = "steps", "time_budget", "early_stopping"
STOP_REASONS = (STEPS, TIME_BUDGET, EARLY_STOPPING)
StopReason = Literal["", "steps", "time_budget", "early_stopping"]  # "": the run may go on (the state's field)


@dataclass
class TrainResult:
    steps: int
    final_loss: Optional[float]  # None: every step of the last logging interval was skipped
    seconds: float
    tokens_per_second: float
    history: list[tuple[int, Optional[float], float]] = field(default_factory=list)  # (step, loss or None, lr)
    evaluations: list[dict[str, Optional[float]]] = field(default_factory=list)  # each with "step"; None: not finite
    stop_reason: str = STEPS  # one of STOP_REASONS
    skipped_steps: list[int] = field(default_factory=list)  # steps not applied (train.nonfinite: skip)
    compiles: Optional[int] = None  # how many times the training step was compiled; None: not counted
    compile_seconds: Optional[float] = None  # the wall time of the steps that compiled
    first_compile_seconds: Optional[float] = None  # that of the first step (its compilation included)


@dataclass
class TrainerState:
    """What, besides tensors, a resumed run needs (the torch trainer saves it as JSON)."""

    step: int = 0
    tokens: int = 0
    seconds: float = 0.0
    # (step, mean training loss of the interval, lr); the loss is None when every step of it was skipped
    history: list[tuple[int, Optional[float], float]] = field(default_factory=list)
    evaluations: list[dict[str, Optional[float]]] = field(default_factory=list)  # a figure that is not finite: None
    best: list[tuple[float, int]] = field(default_factory=list)  # (metric, step), best first; in best/ if out
    evaluations_without_improvement: int = 0
    stop_reason: StopReason = ""  # "" while the run may go on, else one of STOP_REASONS
    skipped_steps: list[int] = field(default_factory=list)  # non-finite steps not applied (train.nonfinite: skip)


# a weight inside the i-th layer of a stack: "blocks.layers.3.feed_forward.w1.weight"
IN_A_LAYER = re.compile(r"(^|\.)layers\.(\d+)\.")


def is_hidden_matrix(name: str, shape: tuple[int, ...]) -> bool:
    """A weight matrix inside a layer of a stack (``layers.i``), by its torch name: what
    Muon updates. Embeddings, position tables, the output head, biases and norm gains are not."""
    return len(shape) == 2 and "embed" not in name and IN_A_LAYER.search(name) is not None


# ------------------------------------------------------------------ the host's bookkeeping


def scheduled_rate(train: Any, state: TrainerState, schedule: Callable[[int], float], step: Optional[int] = None
                   ) -> float:
    """The rate of the step after ``step`` (default: the state's last one). With a time budget
    (``max_minutes``) the schedule runs on whichever is further along, steps or time, so it
    always completes its decay by the deadline (such runs depend on the clock, so they do not
    resume bit for bit). Each skipped step (``train.nonfinite: skip``) multiplies the rate by
    ``train.skip_lr_factor`` for the rest of the run."""
    position = state.step if step is None else step
    if train.max_minutes > 0:
        position = max(position, int(train.steps * state.seconds / (60 * train.max_minutes)))
    lowered = train.skip_lr_factor ** len(state.skipped_steps)
    return train.lr * schedule(min(position, train.steps)) * lowered


def ranking(state: TrainerState, train: Any, value: float) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    """The best weights kept and dropped once this step's validation ``value`` ranks, as
    (metric, step) best first (a figure that is not finite never ranks)."""
    sign = 1.0 if train.select_mode == "min" else -1.0
    ranks = math.isfinite(value)
    candidates = sorted([*state.best, *([(value, state.step)] if ranks else [])], key=lambda item: sign * item[0])
    return candidates[: train.keep_best], candidates[train.keep_best :]


def record_validation(state: TrainerState, train: Any, metrics: dict[str, float]) -> list[int]:
    """A validation at the state's step (which the trainer has tracked): recorded (a figure
    that is not finite as None, as JSON has no nan); counted as an improvement or not, which
    may stop the run (``early_stopping``); ranked among the best. Returns the steps whose
    weights fell out of the ranking (the trainer deletes their files when no saved state
    lists them any more)."""
    state.evaluations.append({"step": state.step, **finite_json(metrics)})
    if train.select_metric not in metrics:
        raise KeyError(f"select_metric={train.select_metric!r} is not among the metrics {sorted(metrics)}")
    value = metrics[train.select_metric]
    sign = 1.0 if train.select_mode == "min" else -1.0
    improved = math.isfinite(value) and (not state.best or sign * value < sign * state.best[0][0])
    state.evaluations_without_improvement = 0 if improved else state.evaluations_without_improvement + 1
    if train.early_stopping and state.evaluations_without_improvement >= train.early_stopping:
        state.stop_reason = EARLY_STOPPING
    kept, dropped = ranking(state, train, value)
    state.best = kept  # ranked with or without a run folder: early stopping compares with the best
    return [step for _, step in dropped]


def ranks_among_the_best(state: TrainerState, train: Any, metrics: dict[str, float]) -> bool:
    """Whether the weights validated at the state's step with ``metrics`` rank among the
    ``keep_best`` (so the trainer writes them); False without the select metric (the
    KeyError of :func:`record_validation` says so)."""
    value = metrics.get(train.select_metric)
    return value is not None and (value, state.step) in ranking(state, train, value)[0]


def report_skip(bar: Any, train: Any, state: TrainerState, step: int, problem: str, lr: float) -> dict[str, float]:
    """A skipped step, as a line on the bar (``bar``: a :class:`~taa.training.progress.TrainingProgress`,
    or None; ``lr`` is the rate the steps after it take); returns what the trainer tracks of
    it (the number of steps skipped so far)."""
    if bar is not None and bar.enabled:
        bar.console.print(f"step {step}: {problem}; update skipped, lr now {lr:.3g} "
                          f"({len(state.skipped_steps)} of {train.max_skipped_steps} skips)", highlight=False)
    return {"skipped_steps": float(len(state.skipped_steps))}


def train_result(state: TrainerState, compiles: Optional[int] = None) -> TrainResult:
    """What ``fit`` hands back, from the state at the end of the run."""
    return TrainResult(
        steps=state.step,
        final_loss=state.history[-1][1] if state.history else None,
        seconds=state.seconds,
        tokens_per_second=state.tokens / state.seconds if state.seconds else 0.0,
        history=list(state.history),
        evaluations=list(state.evaluations),
        stop_reason=state.stop_reason or STEPS,
        skipped_steps=list(state.skipped_steps),
        compiles=compiles,
    )


def record_interval(state: TrainerState, bar: Any, loss_sum: float, tokens: int, lr: float) -> dict[str, float]:
    """The end of a logging interval at the state's step: its mean training loss (``loss_sum``
    over the ``tokens`` of its applied steps; None when every step was skipped) and the rate
    into the history and the progress bar; returns what the trainer tracks of it."""
    mean_loss = loss_sum / tokens if tokens else None
    state.history.append((state.step, mean_loss, lr))
    loss = {} if mean_loss is None else {"loss": mean_loss}
    bar.update(state.step, **loss, lr=lr, tokens_per_s=state.tokens / max(state.seconds, 1e-9))
    return {**{f"train_{k}": v for k, v in loss.items()}, "lr": lr}
