"""Position-wise feed-forward network ("Attention Is All You Need" §3.3).

FFN(x) = max(0, x W1 + b1) W2 + b2, applied to each position separately and
identically. GELU (Hendrycks & Gimpel 2016) is BERT's and GPT's choice;
SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer") gates the hidden
layer: FFN(x) = (Swish(x W1) * (x V)) W2.

Notation: ``b`` batch, ``n`` length, ``d`` d_model, ``f`` d_ff.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class PositionwiseFeedForward(nn.Module):
    """Two linear maps with a non-linearity between them; ``swiglu`` adds a gate."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: str = "relu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if activation not in (*ACTIVATIONS, "swiglu"):
            raise ValueError(f"activation={activation!r} is not one of relu, gelu, swiglu")
        self.activation = activation
        self.w1 = nn.Linear(d_model, d_ff, bias=bias)  # paper: W1, b1
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if activation == "swiglu" else None  # SwiGLU: V
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)  # paper: W2, b2
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (b, n, d) -> (b, n, d)
        if self.gate is not None:
            hidden = F.silu(self.w1(x)) * self.gate(x)  # (b, n, f)
        else:
            hidden = ACTIVATIONS[self.activation](self.w1(x))  # (b, n, f)
        return self.w2(self.dropout(hidden))
