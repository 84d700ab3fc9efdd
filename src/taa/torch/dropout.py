"""Dropout (Srivastava et al. 2014), as the paper uses it (§5.4): during training, zero
each element with probability p and scale the survivors by 1 / (1 - p), so the expected
value is unchanged and evaluation needs no rescaling.

The random mask is drawn by :func:`taa.torch.kernels.apply_dropout`, the faster way for
the tensor's device; either way from PyTorch's global generator, so ``torch.manual_seed``
and a saved RNG state make a run repeatable.
"""

from __future__ import annotations

from torch import Tensor, nn

from taa.torch import kernels


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability {p} is not between 0 and 1")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return kernels.apply_dropout(x, p)  # x * keep / (1 - p), keep ~ Bernoulli(1 - p) per element


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
