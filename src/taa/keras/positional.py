"""Positional information, the Keras twin of :mod:`taa.torch.positional`: the model has no
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

Fixed tables (torch's non-persistent buffers) are NumPy arrays made at construction: they
are no weights, so they are neither saved nor in the state dict.

Lengths past ``max_length`` raise a ValueError wherever the length is known: eagerly, and
in every call compiled for fixed shapes. A call traced with the length left open
(``keras.Input((None,))``, a ``(None, None)`` signature) cannot check it; a position past
the table then reads what the backend's gather gives for an index out of range (TensorFlow
raises on the CPU and gives zeros on a GPU). Models that take such inputs keep them within
``max_length`` themselves.

Notation: ``b`` batch, ``h`` heads, ``n`` length, ``d`` d_model, ``e`` head dim.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from taa.keras.base import PositionalCallLayer, build_sublayers, sequence_length


def sinusoidal_table(max_length: int, d_model: int) -> np.ndarray:
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
    return table


def check_positions(offset: int, length, max_length: int) -> None:
    """Refuse positions offset..offset+length-1 past ``max_length``, where the length is known."""
    if isinstance(length, int) and offset + length > max_length:
        raise ValueError(f"position {offset + length} exceeds max_length={max_length}")


def position_rows(table, offset: int, length):
    """Rows offset..offset+length-1 of a (max_length, ..) table; ``length`` an int or, traced,
    a scalar tensor."""
    if isinstance(length, int):
        return table[offset : offset + length]
    return ops.take(table, ops.arange(offset, offset + length), axis=0)


@keras.saving.register_keras_serializable(package="taa")
class SinusoidalPositionalEncoding(PositionalCallLayer):
    """Adds the fixed sinusoid of each position to the embeddings (no parameters)."""

    def __init__(self, d_model: int, max_length: int = 5000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.d_model, self.max_length = d_model, max_length
        self.table = sinusoidal_table(max_length, d_model)

    def call(self, x, offset: int = 0):  # (b, n, d) -> (b, n, d)
        length = sequence_length(x)
        check_positions(offset, length, self.max_length)
        return x + ops.cast(position_rows(self.table, offset, length), x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "d_model": self.d_model, "max_length": self.max_length}


def _largest_value(ids) -> int | None:
    """The largest of ``ids`` where its values are known (eagerly); None when empty or traced."""
    if isinstance(ids, keras.KerasTensor):
        return None
    try:
        values = ops.convert_to_numpy(ids)
    except Exception:  # a traced tensor inside a compiled function has no values to read
        return None
    return int(values.max()) if values.size else None


@keras.saving.register_keras_serializable(package="taa")
class LearnedPositionalEmbedding(PositionalCallLayer):
    """Adds a trained vector per absolute position (BERT, GPT-2).

    ``position_ids`` past ``max_length`` raise a ValueError where their values can be read
    (eagerly). Inside a compiled function they cannot be, and clipping them would hide the
    error in wrong numbers: an id past the table gives what the backend's gather gives (JAX
    NaN; TensorFlow an error on the CPU, zeros on a GPU). GPT's positions come from its
    mask and stay below its static length, which GPT checks against ``max_length``.
    """

    def __init__(self, max_length: int, d_model: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_length, self.d_model = max_length, d_model
        self.embedding = keras.layers.Embedding(max_length, d_model, name="embedding", dtype=self.dtype_policy)

    def build(self, input_shape=None) -> None:
        build_sublayers(None, self.embedding)
        self.built = True

    def call(self, x, offset: int = 0, position_ids=None):
        """(b, n, d) -> (b, n, d): positions offset..offset+n-1, or ``position_ids`` (b, n) per row
        (a left-padded batch counts each row's positions from its first real token)."""
        if position_ids is not None:
            largest = _largest_value(position_ids)
            if largest is not None and largest >= self.max_length:
                raise ValueError(f"position {largest + 1} exceeds max_length={self.max_length}")
            return x + ops.cast(self.embedding(position_ids), x.dtype)
        length = sequence_length(x)
        check_positions(offset, length, self.max_length)
        return x + ops.cast(position_rows(self.embedding.embeddings, offset, length), x.dtype)  # (n, d)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "max_length": self.max_length, "d_model": self.d_model}


@keras.saving.register_keras_serializable(package="taa")
class RotaryEmbedding(PositionalCallLayer):
    """RoPE: rotate each pair (x_j, x_{j+e/2}) of queries and keys by position * theta_j.

    theta_j = base^(-2j/e). This is the "rotate half" layout (GPT-NeoX, LLaMA in
    Hugging Face), which pairs feature j with feature j + e/2.
    """

    def __init__(self, head_dim: int, max_length: int = 2048, base: float = 10000.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        self.head_dim, self.max_length, self.base = head_dim, max_length, base
        inverse_frequency = np.float32(base) ** (-np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))
        angles = np.arange(max_length, dtype=np.float32)[:, None] * inverse_frequency  # (n, e/2)
        angles = np.concatenate([angles, angles], axis=-1)  # (n, e)
        self.cos = np.cos(angles)
        self.sin = np.sin(angles)
        # rotate_half(x) is x with its halves swapped, the first half negated: the sign joins sin.
        sign = np.concatenate([-np.ones(head_dim // 2), np.ones(head_dim // 2)]).astype(np.float32)
        self.signed_sin = self.sin * sign

    @staticmethod
    def rotate_half(x):
        first, second = ops.split(x, 2, axis=-1)
        return ops.concatenate([-second, first], axis=-1)

    def call(self, x, offset: int = 0):  # (b, h, n, e) -> (b, h, n, e)
        length = sequence_length(x, -2)
        check_positions(offset, length, self.max_length)
        cos = ops.cast(position_rows(self.cos, offset, length), x.dtype)
        signed_sin = ops.cast(position_rows(self.signed_sin, offset, length), x.dtype)
        # x cos + rotate_half(x) sin, with rotate_half as a roll whose sign sits in signed_sin
        return x * cos + ops.roll(x, self.head_dim // 2, axis=-1) * signed_sin

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "head_dim": self.head_dim, "max_length": self.max_length, "base": self.base}


def relative_position_bucket(relative_position, bidirectional: bool, num_buckets: int, max_distance: int):
    """T5's bucketing of (key - query) offsets: exact for small ones, logarithmic beyond.

    Half the buckets (of each direction when bidirectional) hold offsets 0..k-1 exactly;
    the rest cover k..max_distance on a log scale; farther offsets share the last bucket.
    Decoders (``bidirectional=False``) only see the past, so only offsets <= 0 count.
    """
    relative_position = ops.cast(relative_position, "int32")
    bucket = ops.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + ops.cast(relative_position > 0, "int32") * num_buckets
        distance = ops.abs(relative_position)
    else:
        distance = ops.maximum(-relative_position, 0)
    exact = num_buckets // 2
    is_small = distance < exact
    # log(distance / exact) / log(max_distance / exact) in [0, 1) maps onto the remaining buckets
    scaled = ops.log(ops.maximum(ops.cast(distance, "float32"), 1.0) / exact) / math.log(max_distance / exact)
    large = exact + ops.cast(scaled * (num_buckets - exact), "int32")  # truncation, as torch's .long()
    large = ops.minimum(large, num_buckets - 1)
    return bucket + ops.where(is_small, distance, large)


@keras.saving.register_keras_serializable(package="taa")
class RelativePositionBias(keras.layers.Layer):
    """A learned bias per head and bucket, added to the attention logits (T5)."""

    def __init__(
        self, n_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.n_heads = n_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.embedding = keras.layers.Embedding(num_buckets, n_heads, name="embedding", dtype=self.dtype_policy)

    def build(self, input_shape=None) -> None:
        build_sublayers(None, self.embedding)
        self.built = True

    def __call__(self, query_length: int, key_length: int, offset: int = 0):
        # Called with lengths, not tensors: Keras takes those by keyword only, and cannot
        # build from their shapes.
        if not self.built:
            self.build()
        return super().__call__(query_length=query_length, key_length=key_length, offset=offset)

    def call(self, query_length: int, key_length: int, offset: int = 0):  # -> (1, h, q, k)
        query_positions = ops.arange(offset, offset + query_length)[:, None]
        key_positions = ops.arange(key_length)[None, :]
        buckets = relative_position_bucket(
            key_positions - query_positions, self.bidirectional, self.num_buckets, self.max_distance
        )  # (q, k)
        return ops.transpose(self.embedding(buckets), (2, 0, 1))[None]

    def get_config(self) -> dict:
        return {**super().get_config(), "n_heads": self.n_heads, "num_buckets": self.num_buckets,
                "max_distance": self.max_distance, "bidirectional": self.bidirectional}


def alibi_slopes(n_heads: int) -> np.ndarray:
    """The heads' slopes (ALiBi §3): for 2^k heads the geometric sequence 2^(-8/2^k),
    2^(-16/2^k), ..., 2^(-8); otherwise the slopes of the power of two below, then every
    other slope of the power of two above, as far as needed. A float32 array (h,)."""
    if n_heads <= 0:
        raise ValueError(f"ALiBi needs at least one head, got {n_heads}")

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    below = 2 ** math.floor(math.log2(n_heads))
    slopes = geometric(below) + geometric(2 * below)[0::2][: n_heads - below]
    return np.asarray(slopes, dtype=np.float32)


@keras.saving.register_keras_serializable(package="taa")
class AlibiBias(keras.layers.Layer):
    """ALiBi: -m_h * (query position - key position), added to the attention logits.

    Called as T5's :class:`RelativePositionBias` is (the stack computes it once for all
    layers): ``(query_length, key_length, offset)`` -> (1, h, q, k), the queries sitting
    at positions offset..offset+q-1. Keys after a query get a positive value, which the
    causal mask removes: ALiBi is for causal attention.
    """

    def __init__(self, n_heads: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_heads = n_heads
        self.slopes = alibi_slopes(n_heads)
        self.built = True  # no weights

    def __call__(self, query_length: int, key_length: int, offset: int = 0):  # lengths by keyword, as above
        return super().__call__(query_length=query_length, key_length=key_length, offset=offset)

    def call(self, query_length: int, key_length: int, offset: int = 0):  # -> (1, h, q, k)
        query_positions = ops.arange(offset, offset + query_length)[:, None]
        key_positions = ops.arange(key_length)[None, :]
        distance = ops.cast(query_positions - key_positions, "float32")  # (q, k): how far back each key is
        return -(ops.convert_to_tensor(self.slopes)[:, None, None] * distance)[None]

    def get_config(self) -> dict:
        return {**super().get_config(), "n_heads": self.n_heads}
