"""Normalisation layers, written out: the Flax NNX twin of :mod:`taa.torch.norm`.

LayerNorm (Ba et al. 2016) is the norm of "Attention Is All You Need" §3.1:
every sub-layer's output is ``LayerNorm(x + Sublayer(x))``. RMSNorm (Zhang &
Sennrich 2019) drops the mean subtraction and the bias; T5 and LLaMA use it.

Both compute the formula as the papers give it (``reference_forward``), the statistics in
float32 whatever the input's dtype (as torch's kernels accumulate them), and return the
input's dtype. ``fused`` is accepted for the torch signature (and configs) and ignored:
JAX has no separate fused kernel to pick, XLA fuses the written-out formula itself.

Weights: ``weight`` (d,) and, for LayerNorm with ``bias``, ``bias`` (d,), as torch names them.

Notation: ``b`` batch, ``n`` length, ``d`` features (normalised over ``d``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class LayerNorm(nnx.Module):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias, over the last dimension."""

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True, fused: bool = True, *,
                 rngs: nnx.Rngs) -> None:
        self.eps, self.fused = eps, fused
        self.weight = nnx.Param(jnp.ones((d_model,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((d_model,), jnp.float32)) if bias else None

    def __call__(self, x: jax.Array) -> jax.Array:  # (b, n, d) -> (b, n, d)
        return self.reference_forward(x)

    def reference_forward(self, x: jax.Array) -> jax.Array:  # (b, n, d) -> (b, n, d)
        # The statistics in float32 even under bfloat16, as torch's layer_norm under autocast:
        # a bfloat16 mean of values near 100 is off by a quarter of a unit.
        x32 = x.astype(jnp.float32)
        centered = x32 - x32.mean(axis=-1, keepdims=True)
        variance = jnp.square(centered).mean(axis=-1, keepdims=True)  # biased, as in the paper
        normalized = (centered * jax.lax.rsqrt(variance + self.eps)).astype(x.dtype)
        out = normalized * self.weight[...].astype(x.dtype)
        return out + self.bias[...].astype(x.dtype) if self.bias is not None else out


class RMSNorm(nnx.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight: scale only, no centring, no bias (T5's norm)."""

    def __init__(self, d_model: int, eps: float = 1e-6, fused: bool = True, *, rngs: nnx.Rngs) -> None:
        self.eps, self.fused = eps, fused
        self.weight = nnx.Param(jnp.ones((d_model,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:  # (b, n, d) -> (b, n, d)
        return self.reference_forward(x)

    def reference_forward(self, x: jax.Array) -> jax.Array:  # (b, n, d) -> (b, n, d)
        # Accumulate the mean square in float32 even under bfloat16, as T5 does.
        x32 = x.astype(jnp.float32)
        mean_square = jnp.square(x32).mean(axis=-1, keepdims=True)
        return (x32 * jax.lax.rsqrt(mean_square + self.eps)).astype(x.dtype) * self.weight[...].astype(x.dtype)


def make_norm(kind: str, d_model: int, eps: float, bias: bool = True, fused: bool = True, *,
              rngs: nnx.Rngs) -> nnx.Module:
    """The norm a config names: ``"layer"`` or ``"rms"``."""
    if kind == "layer":
        return LayerNorm(d_model, eps=eps, bias=bias, fused=fused, rngs=rngs)
    if kind == "rms":
        return RMSNorm(d_model, eps=eps, fused=fused, rngs=rngs)
    raise ValueError(f"norm={kind!r} is not 'layer' or 'rms'")
