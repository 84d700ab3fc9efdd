"""Positional information, the Flax NNX twin of :mod:`taa.torch.positional`: the model has no
recurrence, so order must be injected.

- Sinusoidal encoding, "Attention Is All You Need" §3.5, added to the embeddings:
  PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).
- Learned absolute positions (BERT, GPT-2): one trained vector per position.
- Rotary position embedding, RoPE (Su et al. 2021, "RoFormer"): rotates query and key
  feature pairs by an angle proportional to the position, so q.k depends on the offset.
- T5's relative position bias (Raffel et al. 2020 §2.1): a learned scalar per head and
  per bucket of (key position - query position), added to the attention logits.
- ALiBi (Press et al. 2022, "Train Short, Test Long"): a fixed penalty -m_h (i - j) on
  the logit of query i for key j, a different slope m_h per head; nothing is learned.

Fixed tables (torch's non-persistent buffers) are :class:`~taa.flax.base.Buffer` variables:
no weights, so never in a state dict and never given a gradient.

Lengths are static (array shapes); every ``offset`` may be a Python int or an int32 scalar,
traced under ``jax.jit`` (a KV cache's length). Positions past ``max_length`` raise a
ValueError wherever the offset's value is known: eagerly, or a Python int under a trace.
A traced offset cannot be checked; rows past the table then read NaN (a gather filled
with NaN), which shows in every output instead of a silently clamped position.

Notation: ``b`` batch, ``h`` heads, ``n`` length, ``d`` d_model, ``e`` head dim.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from taa.flax.base import Buffer, Embedding

Offset = Union[int, jax.Array]  # a Python int, or an int32 scalar that may be traced


def known_value(value: Offset) -> Optional[int]:
    """The int a Python int or a concrete scalar array holds; None when it is traced."""
    try:
        return int(value)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
        return None


def check_positions(offset: Offset, length: int, max_length: int) -> None:
    """Refuse positions offset..offset+length-1 past ``max_length``, where the offset is known."""
    start = known_value(offset)
    if start is not None and start + length > max_length:
        raise ValueError(f"position {start + length} exceeds max_length={max_length}")


def position_rows(table: jax.Array, offset: Offset, length: int) -> jax.Array:
    """Rows offset..offset+length-1 of a (max_length, ..) table, NaN past its end (a traced
    offset cannot be checked)."""
    positions = offset + jnp.arange(length, dtype=jnp.int32)  # (n,)
    return jnp.take(table, positions, axis=0, mode="fill", fill_value=jnp.nan)


def sinusoidal_table(max_length: int, d_model: int) -> jax.Array:
    """The (max_length, d_model) float32 table of §3.5: sines on even features, cosines on odd ones."""
    positions = np.arange(max_length, dtype=np.float32)[:, None]  # (n, 1)
    even = np.arange(0, d_model, 2, dtype=np.float32)  # the "2i" of the paper
    exponents = np.float32(-math.log(10000.0)) * even / np.float32(d_model)
    # 1 / 10000^(2i/d_model), rounded once from float64: within float32 rounding of torch's, which
    # matters as the angles grow (one ulp of the frequency is 5e-4 rad at position 5000).
    frequencies = np.exp(exponents.astype(np.float64)).astype(np.float32)
    angles = positions * frequencies  # (n, d/2)
    table = np.zeros((max_length, d_model), dtype=np.float32)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return jnp.asarray(table)


class SinusoidalPositionalEncoding(nnx.Module):
    """Adds the fixed sinusoid of each position to the embeddings (no parameters)."""

    def __init__(self, d_model: int, max_length: int = 5000, *, rngs: Optional[nnx.Rngs] = None) -> None:
        self.table = Buffer(sinusoidal_table(max_length, d_model))

    def __call__(self, x: jax.Array, offset: Offset = 0) -> jax.Array:  # (b, n, d) -> (b, n, d)
        length = x.shape[1]
        check_positions(offset, length, self.table.shape[0])
        return x + position_rows(self.table[...], offset, length).astype(x.dtype)


class LearnedPositionalEmbedding(nnx.Module):
    """Adds a trained vector per absolute position (BERT, GPT-2).

    ``position_ids`` past ``max_length`` raise a ValueError where their values can be read
    (eagerly); traced, an id past the table reads NaN.
    """

    def __init__(self, max_length: int, d_model: int, *, rngs: nnx.Rngs) -> None:
        self.embedding = Embedding(max_length, d_model, rngs=rngs)

    def __call__(self, x: jax.Array, offset: Offset = 0, position_ids: Optional[jax.Array] = None) -> jax.Array:
        """(b, n, d) -> (b, n, d): positions offset..offset+n-1, or ``position_ids`` (b, n) per row
        (a left-padded batch counts each row's positions from its first real token)."""
        table = self.embedding.weight[...]
        max_length = table.shape[0]
        if position_ids is not None:
            position_ids = jnp.asarray(position_ids)
            largest = known_value(position_ids.max()) if position_ids.size else None
            if largest is not None and largest >= max_length:
                raise ValueError(f"position {largest + 1} exceeds max_length={max_length}")
            rows = jnp.take(table, position_ids, axis=0, mode="fill", fill_value=jnp.nan)  # (b, n, d)
            return x + rows.astype(x.dtype)
        length = x.shape[1]
        check_positions(offset, length, max_length)
        return x + position_rows(table, offset, length).astype(x.dtype)  # (n, d): rows offset..offset+n-1


class RotaryEmbedding(nnx.Module):
    """RoPE: rotate each pair (x_j, x_{j+e/2}) of queries and keys by position * theta_j.

    theta_j = base^(-2j/e). This is the "rotate half" layout (GPT-NeoX, LLaMA in
    Hugging Face), which pairs feature j with feature j + e/2.
    """

    def __init__(self, head_dim: int, max_length: int = 2048, base: float = 10000.0, *,
                 rngs: Optional[nnx.Rngs] = None) -> None:
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        inverse_frequency = np.float32(base) ** (-np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))
        angles = np.arange(max_length, dtype=np.float32)[:, None] * inverse_frequency  # (n, e/2)
        angles = np.concatenate([angles, angles], axis=-1)  # (n, e)
        self.cos = Buffer(jnp.asarray(np.cos(angles)))
        self.sin = Buffer(jnp.asarray(np.sin(angles)))
        # rotate_half(x) is x with its halves swapped, the first half negated: the sign joins sin.
        sign = np.concatenate([-np.ones(head_dim // 2), np.ones(head_dim // 2)]).astype(np.float32)
        self.signed_sin = Buffer(jnp.asarray(np.sin(angles) * sign))

    @staticmethod
    def rotate_half(x: jax.Array) -> jax.Array:
        first, second = jnp.split(x, 2, axis=-1)
        return jnp.concatenate([-second, first], axis=-1)

    def __call__(self, x: jax.Array, offset: Offset = 0) -> jax.Array:  # (b, h, n, e) -> (b, h, n, e)
        length = x.shape[-2]
        check_positions(offset, length, self.cos.shape[0])
        cos = position_rows(self.cos[...], offset, length).astype(x.dtype)  # (n, e)
        signed_sin = position_rows(self.signed_sin[...], offset, length).astype(x.dtype)
        # x cos + rotate_half(x) sin, with rotate_half as a roll whose sign sits in signed_sin
        return x * cos + jnp.roll(x, x.shape[-1] // 2, axis=-1) * signed_sin


def relative_position_bucket(
    relative_position: jax.Array, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
    """T5's bucketing of (key - query) offsets: exact for small ones, logarithmic beyond.

    Half the buckets (of each direction when bidirectional) hold offsets 0..k-1 exactly;
    the rest cover k..max_distance on a log scale; farther offsets share the last bucket.
    Decoders (``bidirectional=False``) only see the past, so only offsets <= 0 count.
    """
    relative_position = jnp.asarray(relative_position).astype(jnp.int32)
    bucket = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0).astype(jnp.int32) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = jnp.maximum(-relative_position, 0)
    exact = num_buckets // 2
    is_small = distance < exact
    # log(distance / exact) / log(max_distance / exact) in [0, 1) maps onto the remaining buckets
    scaled = jnp.log(jnp.maximum(distance.astype(jnp.float32), 1.0) / exact) / math.log(max_distance / exact)
    large = exact + (scaled * (num_buckets - exact)).astype(jnp.int32)  # truncation, as torch's .long()
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(is_small, distance, large)


class RelativePositionBias(nnx.Module):
    """A learned bias per head and bucket, added to the attention logits (T5)."""

    def __init__(self, n_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True,
                 *, rngs: nnx.Rngs) -> None:
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.embedding = Embedding(num_buckets, n_heads, rngs=rngs)

    def __call__(self, query_length: int, key_length: int, offset: Offset = 0) -> jax.Array:  # -> (1, h, q, k)
        query_positions = (offset + jnp.arange(query_length, dtype=jnp.int32))[:, None]
        key_positions = jnp.arange(key_length, dtype=jnp.int32)[None, :]
        buckets = relative_position_bucket(
            key_positions - query_positions, self.bidirectional, self.num_buckets, self.max_distance
        )  # (q, k)
        return jnp.transpose(self.embedding(buckets), (2, 0, 1))[None]


def alibi_slopes(n_heads: int) -> jax.Array:
    """The heads' slopes (ALiBi §3): for 2^k heads the geometric sequence 2^(-8/2^k),
    2^(-16/2^k), ..., 2^(-8); otherwise the slopes of the power of two below, then every
    other slope of the power of two above, as far as needed. A float32 array (h,)."""
    if n_heads <= 0:
        raise ValueError(f"ALiBi needs at least one head, got {n_heads}")

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    below = 2 ** math.floor(math.log2(n_heads))
    slopes = geometric(below) + geometric(2 * below)[0::2][: n_heads - below]
    return jnp.asarray(slopes, dtype=jnp.float32)


class AlibiBias(nnx.Module):
    """ALiBi: -m_h * (query position - key position), added to the attention logits.

    Called as T5's :class:`RelativePositionBias` is (the stack computes it once for all
    layers): ``(query_length, key_length, offset)`` -> (1, h, q, k), the queries sitting
    at positions offset..offset+q-1. Keys after a query get a positive value, which the
    causal mask removes: ALiBi is for causal attention.
    """

    def __init__(self, n_heads: int, *, rngs: Optional[nnx.Rngs] = None) -> None:
        self.slopes = Buffer(alibi_slopes(n_heads))

    def __call__(self, query_length: int, key_length: int, offset: Offset = 0) -> jax.Array:  # -> (1, h, q, k)
        query_positions = (offset + jnp.arange(query_length, dtype=jnp.int32))[:, None]
        key_positions = jnp.arange(key_length, dtype=jnp.int32)[None, :]
        distance = (query_positions - key_positions).astype(jnp.float32)  # (q, k): how far back each key is
        return -(self.slopes[...][:, None, None] * distance)[None]
