"""What a run does when a step's loss or gradient is not finite (``train.nonfinite``).

A rate too high for the model, or a batch that overflows in low precision, makes the loss
or the gradient inf or nan. Applied once, such an update turns every weight to nan, and
from then on the run trains nothing while it looks alive: it saves nan checkpoints, keeps
one as "best" and fails much later somewhere else (decoding, evaluation). So each
framework's Trainer checks the step's loss and gradient norm *before* the optimizer
applies the update, and the weights before any of them is written; what follows a
non-finite step is this module's to decide:

- ``stop`` (the default): the run ends with a :class:`DivergenceError` naming the step,
  what was not finite and where to resume from; nothing of the step is written. A state
  saved after the last update the run applied is not called good: resuming it meets the
  same weights and the same batch, whatever the rate (:meth:`LastState.repeats`), and
  its weights, made at the run's rate, may be spoiled already: the advice puts a new run
  with a lower rate first;
- ``skip``: the step's update is dropped and the rate multiplied by
  ``train.skip_lr_factor`` for the rest of the run; after ``train.max_skipped_steps``
  skipped steps the next non-finite one stops the run as ``stop`` would. When the steps
  before it were all skipped, several batches failed from the same weights: the message
  blames the weights, not a batch, and advises a new run with a lower rate rather than
  more skips (which would only skip batch after batch).

A figure that is not finite (a validation loss, the training loss of an interval whose
steps were all skipped) is written to JSON as null, never as ``NaN``
(:func:`taa.folders.strict_json`).

Imports no framework: the checks themselves are the Trainer's (they need the tensors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from taa.config import ConfigError, TrainConfig
from taa.training.progress import counted

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


# What a step found when its update overflowed: unlike a non-finite loss or gradient, the
# rate made it, so a lower rate from the state before can avoid it.
WEIGHTS_NOT_FINITE = "the weights are no longer finite"


@dataclass(frozen=True)
class LastState:
    """The newest resumable state of a run: its folder, the step it holds (None: no state
    was saved yet), and whether no update was applied since it was saved (the steps after
    it, if any, were all skipped)."""

    folder: str
    step: Optional[int] = None
    unchanged_since: bool = False

    def repeats(self, problem: str) -> bool:
        """Whether resuming this state meets ``problem`` again whatever the rate: the state
        holds the weights the failing step started from, and the loss and gradient of a step
        depend on its weights and its batch, not on its rate (a resumed run reads the same
        batches). An update that overflowed (:data:`WEIGHTS_NOT_FINITE`) is the rate's
        doing: a lower one from the same state may not overflow."""
        return self.step is not None and self.unchanged_since and problem != WEIGHTS_NOT_FINITE


def skip_or_stop(
    train: TrainConfig, step: int, problem: str, lr: float, skipped: Sequence[int], last_state: Optional[LastState]
) -> None:
    """Decide on step ``step``, whose ``problem`` (:func:`what_is_not_finite`) was found
    before its update: return to skip it (the caller records it in ``skipped``, the steps
    skipped so far, those of the run before a resume too), or raise the
    :class:`DivergenceError` of :func:`diverged`."""
    if train.nonfinite != SKIP:
        raise diverged(step, problem, lr, last_state, failing_since=first_failing_step(step, skipped))
    if len(skipped) >= train.max_skipped_steps:
        raise diverged(step, problem, lr, last_state, spent=(len(skipped), train.max_skipped_steps),
                       failing_since=first_failing_step(step, skipped))


def first_failing_step(step: int, skipped: Sequence[int]) -> int:
    """The first of the steps up to ``step``, which failed, that all failed one after the
    other: ``step`` itself unless the steps just before it were skipped. No update was
    applied between them, so they all started from the same weights, each with its own batch."""
    skipped, first = set(skipped), step
    while first - 1 in skipped:
        first -= 1
    return first


def diverged(step: int, problem: str, lr: float, last_state: Optional[LastState] = None,
             spent: Optional[tuple[int, int]] = None, failing_since: Optional[int] = None) -> DivergenceError:
    """The one-line error of a run that stops at ``step``: what was not finite, the rate,
    where to resume from and what to change. ``last_state`` is None for a run without a
    folder; ``spent`` is (steps skipped, ``train.max_skipped_steps``) when ``skip`` ran out
    of skips; ``failing_since`` the first of the steps that failed one after the other up
    to ``step`` (:func:`first_failing_step`).

    The trainer cannot tell a batch that breaks the step from weights that break every
    batch, so the advice says what it knows:

    - several steps in a row failed from the same weights, each on its own batch: the
      weights are at fault, not a batch, and skipping more batches only repeats the failure;
      the way out is a lower rate from weights it did not make, a new run;
    - the state the step started from (:meth:`LastState.repeats`) is not called good:
      resuming it meets the same batch again whatever the rate, and its weights, made by
      the updates before it, may already be spoiled by too high a rate; only one state is
      kept, so the first advice is a new run with a lower rate, skipping that batch the
      second (should every batch after it fail too, the first case says so).

    Changing the rate or the policy of a saved run takes ``--resume-changed``, so the
    advice says so."""
    skipped = f"{counted(spent[0], 'step')} skipped already (train.max_skipped_steps={spent[1]})" if spent else ""
    overflowed = problem == WEIGHTS_NOT_FINITE
    in_a_row = failing_since is not None and failing_since < step and not overflowed
    skipping_helps = not spent and not overflowed and not in_a_row
    remedy = "lower train.lr or set train.nonfinite: skip" if skipping_helps else "lower train.lr"
    parts = [f"training diverged at step {step}: {problem} (lr {lr:.3g})"]
    if in_a_row:
        parts += [f"steps {failing_since} to {step} all failed from the same weights, each on its own batch (no update "
                  f"was applied after step {failing_since - 1}): the weights are at fault, not a batch"]
    if last_state is None:
        parts += [skipped, remedy]
    elif last_state.step is None:
        parts += [f"no state was saved in {last_state.folder} before it", skipped, remedy]
    elif in_a_row and last_state.repeats(problem):
        parts += [f"the last state, in {last_state.folder} (step {last_state.step}), holds those weights", skipped,
                  "start again with a lower train.lr (a new run: skipping more steps meets the same failure)"]
    elif last_state.repeats(problem):
        skip = "a larger train.max_skipped_steps" if spent else "train.nonfinite: skip"
        parts += [f"the last state, in {last_state.folder} (step {last_state.step}), holds the weights this step "
                  "started from: resuming it meets the same batch again whatever train.lr, and those weights may "
                  "already be spoiled by too high a rate in the updates that made them", skipped,
                  "start again with a lower train.lr (no earlier state is kept); or, if that batch alone is at "
                  f"fault, resume it with {skip} (--resume-changed) to skip it"]
    else:
        parts += [f"the last good state is in {last_state.folder} (step {last_state.step})", skipped,
                  f"{remedy}, and resume it with --resume-changed"]
    return DivergenceError("; ".join(part for part in parts if part))
