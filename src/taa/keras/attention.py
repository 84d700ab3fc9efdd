"""Attention: the one module every taa Keras model uses ("Attention Is All You Need" §3.2),
the Keras twin of :mod:`taa.torch.attention`.

Scaled dot-product attention (§3.2.1, equation 1):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

Multi-head attention (§3.2.2) projects queries, keys and values h times, attends in
each head in parallel, concatenates the heads and projects back:

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

Masks are boolean with True = "may attend", broadcastable to (b, h, q, k). A query
with nothing to attend to (a fully masked row) gets all-zero weights and a zero
output, never NaN.

Equation 1 runs on ``keras.ops.dot_product_attention`` ("fused") or on the readable
function written out here; both give the same numbers, and tests pin them to each other
and to torch. Heads sit on axis 1, (b, h, n, e), as in torch; the fused function of
Keras takes (b, n, h, e) and is given it.

Notation: ``b`` batch, ``h`` query heads, ``g`` key/value heads, ``q`` query length,
``k`` key length, ``e`` head dim, ``d`` d_model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np
from keras import ops

from taa.keras.base import PositionalCallLayer, build_sublayers, sequence_length
from taa.keras.dropout import dropout
from taa.keras.positional import RotaryEmbedding
from taa.keras.weights import named_layers

# --------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------


def padding_mask(tokens=None, pad_id: Optional[int] = None, *, lengths=None, max_length: Optional[int] = None):
    """(b, n) bool, True at real tokens: from token ids and a pad id, or from lengths.

    From lengths the mask is ``max_length`` wide, by default the longest length. Under
    ``jax.jit`` a width cannot follow the lengths' values: give ``max_length`` there.
    """
    if tokens is not None:
        if pad_id is None:
            raise ValueError("padding_mask(tokens) needs pad_id")
        return ops.not_equal(tokens, pad_id)
    if lengths is None:
        raise ValueError("padding_mask needs tokens and pad_id, or lengths")
    lengths = ops.cast(ops.convert_to_tensor(lengths), "int32")
    if max_length is not None:
        positions = ops.arange(max_length)  # (n,)
    else:
        try:
            positions = ops.arange(ops.max(lengths))  # a width read from the values (no numpy: graphs trace it)
        except TypeError:  # JAX's error for a shape read from traced values
            raise ValueError("padding_mask(lengths=...) in a compiled function needs max_length") from None
    return positions[None, :] < lengths[:, None]


def causal_mask(query_length, key_length=None):
    """(q, k) bool: query i may attend key j when j <= i (aligned at the end when k > q).

    With a KV cache the q new queries sit at positions k-q..k-1, so key j is visible
    to query i when j <= i + (k - q). The lengths are ints, or scalar tensors where a
    trace leaves them open (:func:`~taa.keras.base.sequence_length`).
    """
    key_length = query_length if key_length is None else key_length
    offset = key_length - query_length
    query_positions = ops.arange(query_length)[:, None] + offset
    return ops.arange(key_length)[None, :] <= query_positions


def key_padding_to_attention_mask(key_padding):
    """(b, k) padding mask -> (b, 1, 1, k), broadcastable over heads and queries."""
    return ops.cast(key_padding, "bool")[:, None, None, :]


def combine_masks(*masks):
    """Logical AND of broadcastable boolean masks; None entries are ignored."""
    combined = None
    for mask in masks:
        if mask is not None:
            combined = mask if combined is None else ops.logical_and(combined, mask)
    return combined


def attention_mask(key_padding=None, causal: bool = False, query_length: Optional[int] = None):
    """Padding and causal masks combined into one (b, 1, q, k) or (q, k) boolean mask."""
    mask = key_padding_to_attention_mask(key_padding) if key_padding is not None else None
    if causal:
        if query_length is None and key_padding is None:
            raise ValueError("attention_mask(causal=True) needs query_length or key_padding")
        key_length = sequence_length(key_padding, -1) if key_padding is not None else query_length
        query_length = key_length if query_length is None else query_length
        mask = combine_masks(mask, causal_mask(query_length, key_length))
    return mask


# --------------------------------------------------------------------------------------
# Scaled dot-product attention: the readable reference and the fused kernel
# --------------------------------------------------------------------------------------


def _repeat_kv_heads(query, key, value):
    """Grouped-query attention: each of the g key/value heads serves h/g query heads."""
    heads, kv_heads = query.shape[-3], key.shape[-3]
    if heads == kv_heads:
        return key, value
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} key/value heads")
    groups = heads // kv_heads
    return ops.repeat(key, groups, axis=-3), ops.repeat(value, groups, axis=-3)  # repeat_interleave


def _empty_query_rows(mask):
    """(.., q, 1) bool, True at queries that may attend to no key."""
    return ops.logical_not(ops.any(mask, axis=-1, keepdims=True))


def scaled_dot_product_attention(
    query,
    key,
    value,
    mask=None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    *,
    bias=None,
    scale: Optional[float] = None,
    seed=None,
):
    """The readable reference of equation 1: softmax(Q K^T / sqrt(d_k) + bias, masked) V.

    query (b, h, q, e), key and value (b, g, k, e) with g dividing h; ``mask`` bool,
    True = may attend, broadcastable to (b, h, q, k); ``bias`` added to the logits
    (T5's relative positions); ``scale`` defaults to 1/sqrt(e); ``seed`` a
    ``keras.random.SeedGenerator`` for the dropout on the weights. Returns the output
    (b, h, q, e) and, with ``return_weights``, the weights (b, h, q, k).
    """
    key, value = _repeat_kv_heads(query, key, value)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    # Scaling the queries equals scaling the scores, on k/e times fewer numbers.
    scores = ops.matmul(query * ops.cast(scale, query.dtype), ops.swapaxes(key, -2, -1))  # (b, h, q, k)
    if bias is not None:
        bias = ops.cast(bias, scores.dtype)
    if mask is not None:
        # The mask as an additive bias of its own small shape: 0 where a key may be seen,
        # a large finite negative where not, so masked keys get exactly zero weight. Half
        # the dtype's minimum leaves room for the scores (no overflow to -inf, no NaN).
        blocked = ops.where(mask, 0.0, float(np.finfo(keras.backend.standardize_dtype(scores.dtype)).min) / 2)
        blocked = ops.cast(blocked, scores.dtype)
        bias = blocked if bias is None else bias + blocked  # still the small shape
    if bias is not None:
        scores = scores + bias
    # softmax over the keys, written out (subtracting the row's maximum changes nothing but overflow)
    exponentials = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True))
    weights = exponentials / ops.sum(exponentials, axis=-1, keepdims=True)
    if mask is not None:
        weights = ops.where(_empty_query_rows(mask), ops.zeros_like(weights), weights)  # zero, not uniform
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p, seed=seed)
    output = ops.matmul(weights, value)  # (b, h, q, e)
    return (output, weights) if return_weights else output


def fused_scaled_dot_product_attention(
    query,
    key,
    value,
    mask=None,
    dropout_p: float = 0.0,
    *,
    bias=None,
    scale: Optional[float] = None,
    is_causal: bool = False,
    seed=None,
):
    """Same numbers as :func:`scaled_dot_product_attention`, on ``keras.ops.dot_product_attention``.

    query (b, h, q, e), key and value (b, g, k, e), as the readable function takes them.
    ``is_causal`` needs equal query and key lengths (Keras aligns its causal mask at the
    start). Keras's function has no dropout: with ``dropout_p`` > 0 this runs the readable one.
    """
    if is_causal and query.shape[-2] != key.shape[-2]:
        raise ValueError(f"is_causal needs as many queries as keys, got {query.shape[-2]} and {key.shape[-2]}")
    if dropout_p > 0.0:
        if is_causal:
            mask = combine_masks(mask, causal_mask(sequence_length(query, -2)))
        return scaled_dot_product_attention(query, key, value, mask, dropout_p, bias=bias, scale=scale, seed=seed)
    key, value = _repeat_kv_heads(query, key, value)
    empty_rows = None
    if mask is not None:
        # Let a query with no visible key attend everywhere, then zero its output:
        # the softmax never sees a row of only blocked keys.
        mask = ops.cast(mask, "bool")
        while len(mask.shape) < 4:
            mask = mask[None]
        empty_rows = _empty_query_rows(mask)  # (.., q, 1)
        mask = ops.logical_or(mask, empty_rows)
    if bias is not None:
        bias = ops.cast(bias, query.dtype)
        while len(bias.shape) < 4:
            bias = bias[None]
    to_keras = (0, 2, 1, 3)  # (b, h, n, e) <-> (b, n, h, e)
    output = ops.dot_product_attention(
        ops.transpose(query, to_keras),
        ops.transpose(key, to_keras),
        ops.transpose(value, to_keras),
        bias=bias,
        mask=mask,
        scale=scale,
        is_causal=is_causal,
    )
    output = ops.transpose(output, to_keras)  # (b, h, q, e)
    if empty_rows is not None:
        output = ops.where(empty_rows, ops.zeros_like(output), output)
    return output


def attend(
    query,
    key,
    value,
    mask=None,
    *,
    causal: bool = False,
    bias=None,
    scale: Optional[float] = None,
    dropout_p: float = 0.0,
    implementation: str = "fused",
    return_weights: bool = False,
    seed=None,
):
    """Equation 1 on Keras's fused function, or on the readable one on request and whenever
    weights are wanted.

    ``causal`` adds the causal mask (aligned at the end when keys outnumber queries, as
    with a KV cache). Returns (output, weights or None): the fused path gives None, with
    dropout too (as torch's), the readable one its weights.
    """
    query_length, key_length = sequence_length(query, -2), sequence_length(key, -2)
    static = isinstance(query_length, int) and isinstance(key_length, int)
    if implementation not in ("fused", "readable"):
        raise ValueError(f"attention implementation {implementation!r} is not 'fused' or 'readable'")
    fused = implementation == "fused" and not return_weights
    is_causal = False
    if causal and not (static and query_length == 1):  # one query at the end of the keys sees them all
        if fused and mask is None and bias is None and static and query_length == key_length:
            is_causal = True  # the fused function's own causal path: no mask tensor at all
        else:
            mask = combine_masks(mask, causal_mask(query_length, key_length))
    if fused:
        output = fused_scaled_dot_product_attention(
            query, key, value, mask, dropout_p, bias=bias, scale=scale, is_causal=is_causal, seed=seed
        )
        return output, None
    output, weights = scaled_dot_product_attention(
        query, key, value, mask, dropout_p, return_weights=True, bias=bias, scale=scale, seed=seed
    )
    return output, weights


# --------------------------------------------------------------------------------------
# Multi-head attention with a KV cache
# --------------------------------------------------------------------------------------


@dataclass
class KVCache:
    """Keys and values already computed, for incremental decoding.

    Self-attention appends one step's keys and values at a time; cross-attention
    stores the encoder memory's projections once and reuses them.

    Keras tensors are immutable, so appending concatenates. ``capacity`` is kept for the
    torch signature and changes nothing here.
    """

    keys: Optional[object] = None  # (b, g, t, e)
    values: Optional[object] = None  # (b, g, t, e)
    capacity: Optional[int] = None

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def append(self, keys, values):
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.keys = ops.concatenate([self.keys, keys], axis=-2)
            self.values = ops.concatenate([self.values, values], axis=-2)
        return self.keys, self.values

    def reorder(self, indices) -> None:
        """Keep batch rows ``indices`` (beam search reorders hypotheses each step)."""
        if self.keys is not None:
            self.keys = ops.take(self.keys, indices, axis=0)
            self.values = ops.take(self.values, indices, axis=0)


@keras.saving.register_keras_serializable(package="taa")
class MultiHeadAttention(PositionalCallLayer):
    """Multi-head attention (§3.2.2): self-attention, or cross-attention given a context.

    ``n_kv_heads`` < ``n_heads`` gives grouped-query attention (Ainslie et al. 2023);
    ``rotary`` rotates queries and keys by position (self-attention only); ``scale``
    overrides 1/sqrt(head_dim) (T5 uses 1).

    >>> attention = MultiHeadAttention(d_model=16, n_heads=4)
    >>> output, _ = attention(keras.random.normal((2, 5, 16)), causal=True)  # (2, 5, 16)
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: Optional[int] = None,
        *,
        head_dim: Optional[int] = None,
        context_dim: Optional[int] = None,
        bias: bool = True,
        dropout: float = 0.0,
        scale: Optional[float] = None,
        implementation: str = "fused",
        rotary: Optional[RotaryEmbedding] = None,
        seed=None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
            head_dim = d_model // n_heads
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}")
        if implementation not in ("fused", "readable"):
            raise ValueError(f"attention implementation {implementation!r} is not 'fused' or 'readable'")
        context_dim = d_model if context_dim is None else context_dim
        self.d_model, self.context_dim, self.use_bias, self.seed = d_model, context_dim, bias, seed
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.dropout, self.scale, self.implementation = dropout, scale, implementation
        dtype = self.dtype_policy  # the sublayers compute as this layer does (mixed precision)
        self.q_proj = keras.layers.Dense(n_heads * head_dim, use_bias=bias, name="q_proj", dtype=dtype)  # W^Q
        self.k_proj = keras.layers.Dense(n_kv_heads * head_dim, use_bias=bias, name="k_proj", dtype=dtype)  # W^K
        self.v_proj = keras.layers.Dense(n_kv_heads * head_dim, use_bias=bias, name="v_proj", dtype=dtype)  # W^V
        self.out_proj = keras.layers.Dense(d_model, use_bias=bias, name="out_proj", dtype=dtype)  # W^O
        self.rotary = rotary
        self.seed_generator = keras.random.SeedGenerator(seed) if dropout > 0.0 else None
        self._recorded: Optional[list] = None  # set by capture_attention()

    @property
    def recorded(self) -> Optional[list]:
        """The list capture_attention() collects this layer's weights in, or None."""
        return self._recorded

    def build(self, input_shape=None) -> None:
        widths = {"q_proj": self.d_model, "k_proj": self.context_dim, "v_proj": self.context_dim,
                  "out_proj": self.n_heads * self.head_dim}  # each projection's input width
        for name, width in widths.items():
            build_sublayers((None, width), getattr(self, name))
        self.built = True

    def _split_heads(self, x, heads: int):  # (b, n, heads*e) -> (b, heads, n, e)
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        return ops.transpose(ops.reshape(x, (batch, length, heads, self.head_dim)), (0, 2, 1, 3))

    def call(
        self,
        x,
        context=None,
        mask=None,
        *,
        causal: bool = False,
        position_bias=None,
        cache: Optional[KVCache] = None,
        return_weights: bool = False,
        training=None,
    ):
        """x (b, q, d); context (b, k, d_context) for cross-attention, else x itself.

        ``mask`` is over all keys, cached ones included. Returns (output (b, q, d),
        weights (b, h, q, k) or None).
        """
        batch, query_length = ops.shape(x)[0], ops.shape(x)[1]
        queries = self._split_heads(self.q_proj(x), self.n_heads)  # (b, h, q, e)
        if context is not None:  # cross-attention: the context's keys never change
            if cache is not None and cache.keys is not None:
                keys, values = cache.keys, cache.values
            else:
                keys = self._split_heads(self.k_proj(context), self.n_kv_heads)  # (b, g, k, e)
                values = self._split_heads(self.v_proj(context), self.n_kv_heads)
                if cache is not None:
                    cache.append(keys, values)
        else:  # self-attention: new keys join the cached ones
            keys = self._split_heads(self.k_proj(x), self.n_kv_heads)  # (b, g, q, e)
            values = self._split_heads(self.v_proj(x), self.n_kv_heads)
            if self.rotary is not None:
                offset = cache.length if cache is not None else 0
                queries, keys = self.rotary(queries, offset), self.rotary(keys, offset)
            if cache is not None:
                keys, values = cache.append(keys, values)
        want_weights = return_weights or self._recorded is not None
        output, weights = attend(
            queries, keys, values, mask,
            causal=causal,
            bias=position_bias,
            scale=self.scale,
            dropout_p=self.dropout if training else 0.0,
            implementation=self.implementation,
            return_weights=want_weights,
            seed=self.seed_generator,
        )  # (b, h, q, e)
        if self._recorded is not None:
            self._recorded.append(ops.stop_gradient(weights))
        output = ops.reshape(ops.transpose(output, (0, 2, 1, 3)), (batch, query_length, self.n_heads * self.head_dim))
        return self.out_proj(output), (weights if return_weights else None)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "context_dim": self.context_dim,
            "bias": self.use_bias,
            "dropout": self.dropout,
            "scale": self.scale,
            "implementation": self.implementation,
            "rotary": keras.saving.serialize_keras_object(self.rotary) if self.rotary is not None else None,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict) -> MultiHeadAttention:
        config = dict(config)
        if config.get("rotary") is not None:
            config["rotary"] = keras.saving.deserialize_keras_object(config["rotary"])
        return cls(**config)


@contextlib.contextmanager
def capture_attention(model: keras.layers.Layer) -> Iterator[dict[str, list]]:
    """Record every attention layer's weights while the block runs.

    >>> with capture_attention(model) as weights:
    ...     model(source, target)
    >>> weights["encoder.layers.0.self_attention"][0].shape  # (b, h, q, k)

    Recording switches those layers to the readable function, which returns weights.
    Runs eagerly only (the weights are collected in a Python list).
    """
    layers = {name: layer for name, layer in named_layers(model) if isinstance(layer, MultiHeadAttention)}
    recorded: dict[str, list] = {name: [] for name in layers}
    for name, layer in layers.items():
        object.__setattr__(layer, "_recorded", recorded[name])  # this very list: Keras would track a copy
    try:
        yield recorded
    finally:
        for layer in layers.values():
            object.__setattr__(layer, "_recorded", None)
