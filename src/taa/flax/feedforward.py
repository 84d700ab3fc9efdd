"""Position-wise feed-forward network ("Attention Is All You Need" §3.3): the Flax NNX twin
of :mod:`taa.torch.feedforward`.

FFN(x) = max(0, x W1 + b1) W2 + b2, applied to each position separately and
identically. GELU (Hendrycks & Gimpel 2016) is BERT's choice; GPT-2 uses its
tanh approximation (``gelu_tanh``). The gated variants of Shazeer 2020 ("GLU
Variants Improve Transformer") gate the hidden layer: SwiGLU is
FFN(x) = (Swish(x W1) * (x V)) W2, GEGLU (T5 v1.1's "gated-gelu") the same with
the tanh GELU in place of Swish.

Notation: ``b`` batch, ``n`` length, ``d`` d_model, ``f`` d_ff.
"""

from __future__ import annotations

import jax
from flax import nnx

from taa.flax.base import Linear
from taa.flax.dropout import Dropout


def gelu_tanh(x: jax.Array) -> jax.Array:
    """GELU's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return jax.nn.gelu(x, approximate=True)


def gelu(x: jax.Array) -> jax.Array:
    """The exact GELU: x Phi(x), Phi the standard normal CDF (torch's ``F.gelu``)."""
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS = {"relu": jax.nn.relu, "gelu": gelu, "gelu_tanh": gelu_tanh}
GATED = {"swiglu": jax.nn.silu, "geglu": gelu_tanh}  # gated variants: activation of the W1 branch


class PositionwiseFeedForward(nnx.Module):
    """Two linear maps with a non-linearity between them; ``swiglu`` and ``geglu`` add a gate."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: str = "relu",
        dropout: float = 0.0,
        bias: bool = True,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        if activation not in (*ACTIVATIONS, *GATED):
            raise ValueError(f"activation={activation!r} is not one of {', '.join([*ACTIVATIONS, *GATED])}")
        self.activation = activation
        self.w1 = Linear(d_model, d_ff, bias=bias, rngs=rngs)  # paper: W1, b1
        self.gate = Linear(d_model, d_ff, bias=bias, rngs=rngs) if activation in GATED else None  # gated: V
        self.w2 = Linear(d_ff, d_model, bias=bias, rngs=rngs)  # paper: W2, b2
        self.dropout = Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:  # (b, n, d) -> (b, n, d)
        if self.gate is not None:
            hidden = GATED[self.activation](self.w1(x)) * self.gate(x)  # (b, n, f)
        else:
            hidden = ACTIVATIONS[self.activation](self.w1(x))  # (b, n, f)
        return self.w2(self.dropout(hidden))
