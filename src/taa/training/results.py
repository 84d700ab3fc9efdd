"""What every framework's Trainer reports and keeps, without a framework: why a run ended,
its result, where it stands, and which weights Muon updates (by their torch names)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Optional

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
