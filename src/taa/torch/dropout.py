"""Dropout (Srivastava et al. 2014), as the paper uses it (§5.4): during training, zero
each element with probability p and scale the survivors by 1 / (1 - p), so the expected
value is unchanged and evaluation needs no rescaling.

On a CPU, PyTorch's own dropout draws its mask with ``bernoulli_``, one 32-bit Mersenne
Twister call and a float compare per element: on this project's 2-core machine that was
a quarter of a translation training step. Here the mask is drawn from the same global
generator (so ``torch.manual_seed`` and the trainer's saved RNG state still make a run
repeatable), but each 64-bit draw gives four 15-bit uniform numbers, and an element is
kept when its number is at least round(p * 2**15). p is thus rounded to a multiple of
2**-15 (0.2 becomes 0.20001), far below anything that changes training. Other devices
use ``torch.nn.functional.dropout``, whose kernels are fast there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 15  # 15 uniform bits per element


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> Tensor:
    """A bool tensor of ``shape``, each element True with probability 1 - p (p in 2**-15 steps)."""
    n = 1
    for size in shape:
        n *= size
    # random_() on int64 gives uniform integers in [0, 2**63): the top bit is always 0,
    # so each 16-bit lane keeps only its low 15 bits, which are uniform in every lane.
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()
    numbers = words.view(torch.int16)[:n].view(shape) & (_LEVELS - 1)  # uniform in [0, 2**15)
    return numbers >= round(p * _LEVELS)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability {p} is not between 0 and 1")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    keep = keep_mask(x.shape, p, x.device)
    return x * (keep.to(x.dtype) * (1.0 / (1.0 - p)))  # autograd keeps the scaled mask for backward


class Dropout(nn.Module):
    """:func:`dropout` as a module, active in ``train()`` mode only (like ``nn.Dropout``)."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability {p} is not between 0 and 1")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
