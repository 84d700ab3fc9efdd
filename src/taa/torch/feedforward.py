"""Position-wise feed-forward network ("Attention Is All You Need" §3.3).

FFN(x) = max(0, x W1 + b1) W2 + b2, applied to each position separately and
identically. GELU (Hendrycks & Gimpel 2016) is BERT's choice; GPT-2 uses its
tanh approximation (``gelu_tanh``). The gated variants of Shazeer 2020 ("GLU
Variants Improve Transformer") gate the hidden layer: SwiGLU is
FFN(x) = (Swish(x W1) * (x V)) W2, GEGLU (T5 v1.1's "gated-gelu") the same with
the tanh GELU in place of Swish.

Notation: ``b`` batch, ``n`` length, ``d`` d_model, ``f`` d_ff.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from taa.torch import kernels
from taa.torch.dropout import Dropout


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    :func:`taa.torch.kernels.gelu_tanh` computes it, with the faster derivative for the
    device and dtype.
    """
    return kernels.gelu_tanh(x)


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": gelu_tanh}
GATED = {"swiglu": F.silu, "geglu": gelu_tanh}  # gated variants: activation of the W1 branch


class PositionwiseFeedForward(nn.Module):
    """Two linear maps with a non-linearity between them; ``swiglu`` and ``geglu`` add a gate."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: str = "relu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if activation not in (*ACTIVATIONS, *GATED):
            raise ValueError(f"activation={activation!r} is not one of {', '.join([*ACTIVATIONS, *GATED])}")
        self.activation = activation
        self.w1 = nn.Linear(d_model, d_ff, bias=bias)  # paper: W1, b1
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if activation in GATED else None  # gated: V
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)  # paper: W2, b2
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (b, n, d) -> (b, n, d)
        if self.gate is not None:
            hidden = GATED[self.activation](self.w1(x)) * self.gate(x)  # (b, n, f)
        else:
            hidden = ACTIVATIONS[self.activation](self.w1(x))  # (b, n, f)
        return self.w2(self.dropout(hidden))
