"""Learning-rate schedules, as multipliers of the optimizer's base rate.

The paper's schedule (§5.3), "noam" after its author's name in tensor2tensor:

    lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)

rises linearly for ``warmup_steps`` and then decays with the inverse square root of
the step. Cosine (Loshchilov & Hutter 2017) warms up linearly and then follows half
a cosine down to ``min_ratio`` of the peak.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def noam(d_model: int, warmup_steps: int) -> Callable[[int], float]:
    """The paper's schedule; ``step`` counts from 0 (the paper's step 1)."""

    def rate(step: int) -> float:
        step = step + 1
        return d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)

    return rate


def cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """Linear warm-up to 1, then a half cosine down to ``min_ratio`` at ``total_steps``."""

    def rate(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return rate


def constant(warmup_steps: int = 0) -> Callable[[int], float]:
    """1 after an optional linear warm-up."""

    def rate(step: int) -> float:
        return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0

    return rate


def schedule_from_config(train, d_model: int) -> Callable[[int], float]:
    """The multiplier a :class:`taa.config.TrainConfig` names."""
    if train.schedule == "noam":
        return noam(d_model, train.warmup_steps)
    if train.schedule == "cosine":
        return cosine(train.steps, train.warmup_steps, train.min_lr_ratio)
    return constant(train.warmup_steps)
