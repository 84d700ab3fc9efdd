"""What a run does when a step's loss or gradient is not finite (``train.nonfinite``).

A rate too high for the model, or a batch that overflows in low precision, makes the loss
or the gradient inf or nan. Applied once, such an update turns every weight to nan, and
from then on the run trains nothing while it looks alive: it saves nan checkpoints, keeps
one as "best" and fails much later somewhere else (decoding, evaluation). So each
framework's Trainer checks the step's loss and gradient norm *before* the optimizer
applies the update, and the weights before any of them is written; what follows a
non-finite step is this module's to decide:

- ``stop`` (the default): the run ends with a :class:`DivergenceError` naming the step,
  what was not finite and where the last good state is; nothing of the step is written;
- ``skip``: the step's update is dropped and the rate multiplied by
  ``train.skip_lr_factor`` for the rest of the run; after ``train.max_skipped_steps``
  skipped steps the next non-finite one stops the run as ``stop`` would.

Imports no framework: the checks themselves are the Trainer's (they need the tensors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

from taa.config import ConfigError, TrainConfig

STOP, SKIP = "stop", "skip"  # the values of train.nonfinite


class DivergenceError(ConfigError):
    """Training diverged: a step's loss, gradient or the weights are no longer finite.

    The message is one line naming the step, what was not finite, the rate and the state
    to resume from. A ConfigError because the way out is a setting (a lower ``train.lr``,
    ``train.grad_clip``, ``train.nonfinite: skip``), and so every command prints it as
    one line, as any other bad setting."""


def what_is_not_finite(loss: float, grad_norm: float) -> str:
    """``"the loss is nan"``, ``"the gradient norm is inf"``, or "" when both are finite."""
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    if not math.isfinite(grad_norm):
        return f"the gradient norm is {grad_norm}"
    return ""


def skip_or_stop(
    train: TrainConfig, step: int, problem: str, lr: float, skipped: Sequence[int], last_state: str
) -> None:
    """Decide on step ``step``, whose ``problem`` (:func:`what_is_not_finite`) was found
    before its update: return to skip it (the caller records it in ``skipped``, the steps
    skipped so far), or raise the :class:`DivergenceError` of :func:`diverged`."""
    if train.nonfinite != SKIP:
        raise diverged(step, problem, lr, last_state, "lower train.lr or set train.nonfinite: skip")
    if len(skipped) >= train.max_skipped_steps:
        raise diverged(step, problem, lr, last_state, f"{len(skipped)} steps skipped already "
                       f"(train.max_skipped_steps={train.max_skipped_steps}); lower train.lr")


def diverged(step: int, problem: str, lr: float, last_state: str, advice: str = "lower train.lr") -> DivergenceError:
    """The one-line error of a run that stops at ``step``: what was not finite, the rate,
    where to resume from (:func:`last_state_note`) and what to change."""
    return DivergenceError(f"training diverged at step {step}: {problem} (lr {lr:.3g}); {last_state}{advice}")


def last_state_note(folder: Optional[str], step: Optional[int]) -> str:
    """Where the run can resume from: ``folder`` holds the state of ``step`` (None: no state
    was saved yet); "" for a run without a folder."""
    if folder is None:
        return ""
    if step is None:
        return f"no state was saved in {folder} before it; "
    return f"the last good state is in {folder} (step {step}); "
