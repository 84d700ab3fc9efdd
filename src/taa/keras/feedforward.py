"""Position-wise feed-forward network ("Attention Is All You Need" §3.3): the Keras twin
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

import keras
from keras import ops

from taa.keras.base import build_sublayers
from taa.keras.dropout import Dropout


def gelu_tanh(x):
    """GELU's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return ops.gelu(x, approximate=True)


def gelu(x):
    """The exact GELU: x Phi(x), Phi the standard normal CDF."""
    return ops.gelu(x, approximate=False)


ACTIVATIONS = {"relu": ops.relu, "gelu": gelu, "gelu_tanh": gelu_tanh}
GATED = {"swiglu": ops.silu, "geglu": gelu_tanh}  # gated variants: activation of the W1 branch


@keras.saving.register_keras_serializable(package="taa")
class PositionwiseFeedForward(keras.layers.Layer):
    """Two linear maps with a non-linearity between them; ``swiglu`` and ``geglu`` add a gate."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: str = "relu",
        dropout: float = 0.0,
        bias: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if activation not in (*ACTIVATIONS, *GATED):
            raise ValueError(f"activation={activation!r} is not one of {', '.join([*ACTIVATIONS, *GATED])}")
        self.d_model, self.d_ff, self.activation, self.use_bias = d_model, d_ff, activation, bias
        dtype = self.dtype_policy  # the sublayers compute as this layer does (mixed precision)
        self.w1 = keras.layers.Dense(d_ff, use_bias=bias, name="w1", dtype=dtype)  # paper: W1, b1
        gated = activation in GATED
        self.gate = keras.layers.Dense(d_ff, use_bias=bias, name="gate", dtype=dtype) if gated else None  # gated: V
        self.w2 = keras.layers.Dense(d_model, use_bias=bias, name="w2", dtype=dtype)  # paper: W2, b2
        self.dropout = Dropout(dropout, name="dropout", dtype=dtype)

    def build(self, input_shape=None) -> None:
        build_sublayers((None, self.d_model), self.w1, self.gate)
        build_sublayers((None, self.d_ff), self.w2)
        self.built = True

    def call(self, x, training=None):  # (b, n, d) -> (b, n, d)
        if self.gate is not None:
            hidden = GATED[self.activation](self.w1(x)) * self.gate(x)  # (b, n, f)
        else:
            hidden = ACTIVATIONS[self.activation](self.w1(x))  # (b, n, f)
        return self.w2(self.dropout(hidden, training=training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "d_model": self.d_model, "d_ff": self.d_ff, "activation": self.activation,
                "dropout": self.dropout.p, "bias": self.use_bias}
