"""Normalisation layers, written out: the Keras twin of :mod:`taa.torch.norm`.

LayerNorm (Ba et al. 2016) is the norm of "Attention Is All You Need" §3.1:
every sub-layer's output is ``LayerNorm(x + Sublayer(x))``. RMSNorm (Zhang &
Sennrich 2019) drops the mean subtraction and the bias; T5 and LLaMA use it.

Both compute the formula as the papers give it (``reference_forward``), the statistics in
float32 whatever the compute dtype, and return the compute dtype. ``fused`` is kept for
the torch signature (and configs): Keras has one path, so it changes nothing here.

Weights: ``weight`` (d,) and, for LayerNorm with ``bias``, ``bias`` (d,), as torch names them.

Notation: ``b`` batch, ``n`` length, ``d`` features (normalised over ``d``).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="taa")
class LayerNorm(keras.layers.Layer):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias, over the last dimension."""

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True, fused: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.d_model, self.eps, self.use_bias, self.fused = d_model, eps, bias, fused

    def build(self, input_shape=None) -> None:
        self.weight = self.add_weight(name="weight", shape=(self.d_model,), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(self.d_model,), initializer="zeros") if self.use_bias else None
        self.built = True

    def call(self, x):  # (b, n, d) -> (b, n, d)
        return self.reference_forward(x)

    def reference_forward(self, x):  # (b, n, d) -> (b, n, d)
        # The statistics in float32 even under bfloat16, as torch's layer_norm under autocast:
        # a bfloat16 mean of values near 100 is off by a quarter of a unit.
        x32 = ops.cast(x, "float32")
        centered = x32 - ops.mean(x32, axis=-1, keepdims=True)
        variance = ops.mean(ops.square(centered), axis=-1, keepdims=True)  # biased, as in the paper
        normalized = ops.cast(centered * ops.rsqrt(variance + self.eps), x.dtype)
        out = normalized * ops.cast(self.weight, x.dtype)
        return out + ops.cast(self.bias, x.dtype) if self.bias is not None else out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "d_model": self.d_model, "eps": self.eps, "bias": self.use_bias,
                "fused": self.fused}


@keras.saving.register_keras_serializable(package="taa")
class RMSNorm(keras.layers.Layer):
    """y = x / sqrt(mean(x^2) + eps) * weight: scale only, no centring, no bias (T5's norm)."""

    def __init__(self, d_model: int, eps: float = 1e-6, fused: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.d_model, self.eps, self.fused = d_model, eps, fused

    def build(self, input_shape=None) -> None:
        self.weight = self.add_weight(name="weight", shape=(self.d_model,), initializer="ones")
        self.built = True

    def call(self, x):  # (b, n, d) -> (b, n, d)
        return self.reference_forward(x)

    def reference_forward(self, x):  # (b, n, d) -> (b, n, d)
        # Accumulate the mean square in float32 even under bfloat16, as T5 does.
        x32 = ops.cast(x, "float32")
        mean_square = ops.mean(ops.square(x32), axis=-1, keepdims=True)
        return ops.cast(x32 * ops.rsqrt(mean_square + self.eps), x.dtype) * ops.cast(self.weight, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "d_model": self.d_model, "eps": self.eps, "fused": self.fused}


def make_norm(
    kind: str, d_model: int, eps: float, bias: bool = True, fused: bool = True, **kwargs
) -> keras.layers.Layer:
    """The norm a config names: ``"layer"`` or ``"rms"``; ``kwargs`` go to the layer (``dtype``)."""
    if kind == "layer":
        return LayerNorm(d_model, eps=eps, bias=bias, fused=fused, **kwargs)
    if kind == "rms":
        return RMSNorm(d_model, eps=eps, fused=fused, **kwargs)
    raise ValueError(f"norm={kind!r} is not 'layer' or 'rms'")
