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

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from taa.torch.dropout import Dropout

_K = 2 * math.sqrt(2 / math.pi)  # u = _K (x + _C x^3), so that 0.5 (1 + tanh(u / 2)) = sigmoid(u)
_C = 0.044715


class _TanhGeluWithSlope(torch.autograd.Function):
    """The tanh GELU whose forward pass also computes its derivative, so backward is one product.

    With u = 2 sqrt(2/pi) (x + 0.044715 x^3) and s = sigmoid(u) = 0.5 (1 + tanh(u / 2)):
    GELU(x) = x s and GELU'(x) = s + x s (1 - s) u'. It keeps one tensor for backward (the
    derivative instead of x), as the built-in does; ATen's float32 tanh-GELU backward costs
    more than this whole forward on the CPU (0.8 against 0.53 ms forward + backward for
    768 x 512 values on 2 threads, AMD EPYC).
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        # Beyond |x| = 100, s is exactly 0 or 1 in float32 and s (1 - s) exactly 0: clamping
        # there changes no value and keeps x^3 from overflowing (inf * 0 would be NaN).
        xc = x.clamp(-100.0, 100.0)
        x2 = xc * xc
        slope = x2 * (3 * _K * _C) + _K  # u'
        s = torch.sigmoid(x2.mul_(_K * _C).add_(_K).mul_(xc))  # sigmoid(u)
        ctx.save_for_backward(torch.sub(1, s).mul_(s).mul_(xc).mul_(slope).add_(s))
        return x * s

    @staticmethod
    @once_differentiable  # the saved derivative is a constant: a second derivative must not pass through
    def backward(ctx, grad: Tensor) -> Tensor:
        (derivative,) = ctx.saved_tensors
        return grad * derivative


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    Training in float32 on a CPU takes ``_TanhGeluWithSlope`` (the same values within float32
    rounding); elsewhere the built-in kernel, which also keeps bfloat16 inputs' arithmetic in
    float32.
    """
    if x.requires_grad and torch.is_grad_enabled() and x.dtype == torch.float32 and x.device.type == "cpu":
        return _TanhGeluWithSlope.apply(x)
    return F.gelu(x, approximate="tanh")


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
