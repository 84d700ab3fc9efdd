"""Attention: the one module every taa Flax model uses ("Attention Is All You Need" §3.2),
the Flax NNX twin of :mod:`taa.torch.attention`.

Scaled dot-product attention (§3.2.1, equation 1):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

Multi-head attention (§3.2.2) projects queries, keys and values h times, attends in
each head in parallel, concatenates the heads and projects back:

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

Masks are boolean with True = "may attend", broadcastable to (b, h, q, k). A query
with nothing to attend to (a fully masked row) gets all-zero weights and a zero
output, never NaN.

Equation 1 runs on ``jax.nn.dot_product_attention`` ("fused") or on the readable
function written out here; both give the same numbers, and tests pin them to each other
and to torch. Heads sit on axis 1, (b, h, n, e), as in torch; JAX's function takes
(b, n, h, e) and is given it.

Generation under ``jax.jit`` needs arrays of fixed shapes: a :class:`KVCache` with a
``capacity`` keeps its keys in buffers of that many positions, written at a traced
length, and attention masks the positions not written yet.

Notation: ``b`` batch, ``h`` query heads, ``g`` key/value heads, ``q`` query length,
``k`` key length, ``e`` head dim, ``d`` d_model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Optional, Union

import jax
import jax.numpy as jnp
from flax import nnx

from taa.flax.base import Linear
from taa.flax.dropout import Key, dropout
from taa.flax.positional import Offset, RotaryEmbedding, known_value
from taa.flax.weights import named_modules

# --------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------


def padding_mask(
    tokens: Optional[jax.Array] = None,
    pad_id: Optional[int] = None,
    *,
    lengths: Optional[jax.Array] = None,
    max_length: Optional[int] = None,
) -> jax.Array:
    """(b, n) bool, True at real tokens: from token ids and a pad id, or from lengths.

    From lengths the mask is ``max_length`` wide, by default the longest length. Under
    ``jax.jit`` a width cannot follow the lengths' values: give ``max_length`` there.
    """
    if tokens is not None:
        if pad_id is None:
            raise ValueError("padding_mask(tokens) needs pad_id")
        return jnp.asarray(tokens) != pad_id
    if lengths is None:
        raise ValueError("padding_mask needs tokens and pad_id, or lengths")
    lengths = jnp.asarray(lengths)
    if max_length is None:
        max_length = known_value(lengths.max())
        if max_length is None:
            raise ValueError("padding_mask(lengths=...) under jax.jit needs max_length")
    return jnp.arange(max_length)[None, :] < lengths[:, None]


def causal_mask(
    query_length: int, key_length: Optional[int] = None, device=None, *, offset: Optional[Offset] = None
) -> jax.Array:
    """(q, k) bool: query i may attend key j when j <= i (aligned at the end when k > q).

    With a KV cache the q new queries sit at positions k-q..k-1, so key j is visible
    to query i when j <= i + (k - q). ``offset`` places the queries at offset..offset+q-1
    instead (a fixed-size cache's length, possibly traced). ``device`` is accepted for the
    torch signature; arrays go where JAX puts them.
    """
    key_length = query_length if key_length is None else key_length
    offset = key_length - query_length if offset is None else offset
    query_positions = jnp.arange(query_length)[:, None] + offset  # (q, 1)
    return jnp.arange(key_length)[None, :] <= query_positions


def key_padding_to_attention_mask(key_padding: jax.Array) -> jax.Array:
    """(b, k) padding mask -> (b, 1, 1, k), broadcastable over heads and queries."""
    return jnp.asarray(key_padding, dtype=bool)[:, None, None, :]


def combine_masks(*masks: Optional[jax.Array]) -> Optional[jax.Array]:
    """Logical AND of broadcastable boolean masks; None entries are ignored."""
    combined = None
    for mask in masks:
        if mask is not None:
            combined = mask if combined is None else combined & mask
    return combined


def attention_mask(
    key_padding: Optional[jax.Array] = None,
    causal: bool = False,
    query_length: Optional[int] = None,
    device=None,
) -> Optional[jax.Array]:
    """Padding and causal masks combined into one (b, 1, q, k) or (q, k) boolean mask
    (``device`` accepted for the torch signature)."""
    mask = key_padding_to_attention_mask(key_padding) if key_padding is not None else None
    if causal:
        if query_length is None and key_padding is None:
            raise ValueError("attention_mask(causal=True) needs query_length or key_padding")
        key_length = key_padding.shape[-1] if key_padding is not None else query_length
        query_length = key_length if query_length is None else query_length
        mask = combine_masks(mask, causal_mask(query_length, key_length))
    return mask


# --------------------------------------------------------------------------------------
# Scaled dot-product attention: the readable reference and the fused kernel
# --------------------------------------------------------------------------------------


def _check_kv_heads(query: jax.Array, key: jax.Array) -> int:
    """h / g: how many query heads share each of the g key/value heads."""
    heads, kv_heads = query.shape[-3], key.shape[-3]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} key/value heads")
    return heads // kv_heads


def _repeat_kv_heads(query: jax.Array, key: jax.Array, value: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Grouped-query attention: each of the g key/value heads serves h/g query heads."""
    groups = _check_kv_heads(query, key)
    if groups == 1:
        return key, value
    return jnp.repeat(key, groups, axis=-3), jnp.repeat(value, groups, axis=-3)  # torch's repeat_interleave


def _empty_query_rows(mask: jax.Array) -> jax.Array:
    """(.., q, 1) bool, True at queries that may attend to no key."""
    return ~jnp.any(mask, axis=-1, keepdims=True)


def scaled_dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: Optional[jax.Array] = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    *,
    bias: Optional[jax.Array] = None,
    scale: Optional[float] = None,
    dropout_rng: Optional[Key] = None,
) -> Union[jax.Array, tuple[jax.Array, jax.Array]]:
    """The readable reference of equation 1: softmax(Q K^T / sqrt(d_k) + bias, masked) V.

    query (b, h, q, e), key and value (b, g, k, e) with g dividing h; ``mask`` bool,
    True = may attend, broadcastable to (b, h, q, k); ``bias`` added to the logits
    (T5's relative positions, ALiBi); ``scale`` defaults to 1/sqrt(e); ``dropout_rng`` the
    key for the dropout on the weights (with ``dropout_p`` > 0). Returns the output
    (b, h, q, e) and, with ``return_weights``, the weights (b, h, q, k).
    """
    key, value = _repeat_kv_heads(query, key, value)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    # Scaling the queries equals scaling the scores, on k/e times fewer numbers.
    scores = jnp.matmul(query * scale, jnp.swapaxes(key, -2, -1))  # (b, h, q, k)
    if bias is not None:
        bias = jnp.asarray(bias).astype(scores.dtype)  # scores keep their dtype
    if mask is not None:
        # The mask as an additive bias of its own small shape: 0 where a key may be seen,
        # a large finite negative where not, so masked keys get exactly zero weight. Half
        # the dtype's minimum leaves room for the scores (no overflow to -inf, no NaN).
        mask = jnp.asarray(mask, dtype=bool)
        blocked = jnp.where(mask, 0.0, jnp.finfo(scores.dtype).min / 2).astype(scores.dtype)
        bias = blocked if bias is None else bias + blocked  # still the small shape
    if bias is not None:
        scores = scores + bias  # one pass over the (b, h, q, k) scores
    weights = jax.nn.softmax(scores, axis=-1)
    if mask is not None:
        weights = jnp.where(_empty_query_rows(mask), jnp.zeros((), weights.dtype), weights)  # zero, not uniform
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p, rng=dropout_rng)
    output = jnp.matmul(weights, value)  # (b, h, q, e)
    return (output, weights) if return_weights else output


def _four_dimensional(x: jax.Array) -> jax.Array:
    """(.., q, k) -> (b or 1, h or 1, q, k), as JAX's function takes masks and biases."""
    return x.reshape((1,) * (4 - x.ndim) + x.shape)


def fused_scaled_dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: Optional[jax.Array] = None,
    dropout_p: float = 0.0,
    *,
    bias: Optional[jax.Array] = None,
    scale: Optional[float] = None,
    is_causal: bool = False,
    dropout_rng: Optional[Key] = None,
) -> jax.Array:
    """Same numbers as :func:`scaled_dot_product_attention`, on ``jax.nn.dot_product_attention``.

    query (b, h, q, e), key and value (b, g, k, e), as the readable function takes them
    (JAX's function serves the g key/value heads to h/g query heads each itself).
    ``is_causal`` needs equal query and key lengths (JAX aligns its causal mask at the
    start). Where JAX's function cannot give the readable numbers, this runs the readable
    one: with ``dropout_p`` > 0 (it has no dropout). In bfloat16 it keeps the scores and
    the softmax in float32, so the two paths agree within bfloat16's rounding there, as
    torch's kernels do; in float32 they agree to float32's.
    """
    if is_causal and query.shape[-2] != key.shape[-2]:
        raise ValueError(f"is_causal needs as many queries as keys, got {query.shape[-2]} and {key.shape[-2]}")
    if dropout_p > 0.0:
        if is_causal:
            mask = combine_masks(mask, causal_mask(query.shape[-2]))
        return scaled_dot_product_attention(
            query, key, value, mask, dropout_p, bias=bias, scale=scale, dropout_rng=dropout_rng
        )
    _check_kv_heads(query, key)
    empty_rows = None
    if mask is not None:
        # Let a query with no visible key attend everywhere, then zero its output:
        # the softmax never sees a row of only blocked keys.
        mask = _four_dimensional(jnp.asarray(mask, dtype=bool))
        empty_rows = _empty_query_rows(mask)  # (.., q, 1)
        mask = mask | empty_rows
    if bias is not None:
        bias = _four_dimensional(jnp.asarray(bias).astype(query.dtype))
    to_jax = (0, 2, 1, 3)  # (b, h, n, e) <-> (b, n, h, e)
    output = jax.nn.dot_product_attention(
        query.transpose(to_jax),
        key.transpose(to_jax),
        value.transpose(to_jax),
        bias=bias,
        mask=mask,
        scale=scale,
        is_causal=is_causal,
    ).transpose(to_jax)  # (b, h, q, e)
    if empty_rows is not None:
        output = jnp.where(empty_rows, jnp.zeros((), output.dtype), output)
    return output


def attend(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: Optional[jax.Array] = None,
    *,
    causal: bool = False,
    bias: Optional[jax.Array] = None,
    scale: Optional[float] = None,
    dropout_p: float = 0.0,
    implementation: str = "fused",
    return_weights: bool = False,
    dropout_rng: Optional[Key] = None,
) -> tuple[jax.Array, Optional[jax.Array]]:
    """Equation 1 on JAX's fused function, or on the readable one on request and whenever
    weights are wanted.

    ``causal`` adds the causal mask (aligned at the end when keys outnumber queries, as
    with a KV cache). Returns (output, weights or None): the fused path gives None, with
    dropout too (as torch's), the readable one its weights.
    """
    query_length, key_length = query.shape[-2], key.shape[-2]
    if implementation not in ("fused", "readable"):
        raise ValueError(f"attention implementation {implementation!r} is not 'fused' or 'readable'")
    fused = implementation == "fused" and not return_weights
    is_causal = False
    if causal and query_length > 1:  # one query at the end of the keys sees them all
        if fused and mask is None and bias is None and query_length == key_length:
            is_causal = True  # the fused function's own causal path: no mask array at all
        else:
            mask = combine_masks(mask, causal_mask(query_length, key_length))
    if fused:
        output = fused_scaled_dot_product_attention(
            query, key, value, mask, dropout_p, bias=bias, scale=scale, is_causal=is_causal, dropout_rng=dropout_rng
        )
        return output, None
    output, weights = scaled_dot_product_attention(
        query, key, value, mask, dropout_p, return_weights=True, bias=bias, scale=scale, dropout_rng=dropout_rng
    )
    return output, weights


# --------------------------------------------------------------------------------------
# Multi-head attention with a KV cache
# --------------------------------------------------------------------------------------


class KVCache(nnx.Module):
    """Keys and values already computed, for incremental decoding.

    Self-attention appends one step's keys and values at a time; cross-attention
    stores the encoder memory's projections once (:meth:`store`) and reuses them.

    Two ways to keep them:

    - ``capacity`` None: each append concatenates, as torch's cache does; ``length`` is a
      Python int and every step has new shapes (eager decoding).
    - ``capacity`` set (generation knows its longest sequence up front): the first append
      allocates (b, g, capacity, e) buffers, and every append writes into them at the
      current length with ``jax.lax.dynamic_update_slice``. ``length`` is then an int32
      scalar, traced under ``jax.jit``, and :meth:`append` returns the whole buffers:
      attention sees ``capacity`` keys and masks those not written yet, so a jitted
      decoding step has the same shapes at every step and compiles once.

    The cache is an NNX module: its buffers and length are ``nnx.Cache`` variables, so
    what an ``nnx.jit``-ed function appends (even the first allocation) comes back out.
    Positions past the capacity raise a ValueError where the length is known (eagerly);
    under a trace they cannot be checked.

    ``keys`` and ``values`` are the keys and values kept so far, (b, g, length, e); under
    a trace a fixed-capacity cache gives its whole buffers (b, g, capacity, e) instead, as
    its length is not known there.
    """

    def __init__(
        self, keys: Optional[jax.Array] = None, values: Optional[jax.Array] = None, capacity: Optional[int] = None
    ) -> None:
        self.capacity = capacity  # positions to allocate at the first append; None: concatenate
        self.key_buffer = nnx.data(None)  # (b, g, t, e), or (b, g, capacity, e) when preallocated
        self.value_buffer = nnx.data(None)
        self.filled = nnx.data(None)  # int32 scalar when preallocated: positions written so far
        if keys is not None:
            self.append(keys, values)

    @property
    def preallocated(self) -> bool:
        """Whether the keys sit in fixed buffers of ``capacity`` positions."""
        return self.filled is not None

    @property
    def length(self) -> Union[int, jax.Array]:
        """Positions kept: an int, or an int32 scalar (traced under jit) when preallocated."""
        if self.filled is not None:
            return self.filled[...]
        return 0 if self.key_buffer is None else self.key_buffer.shape[-2]

    def _filled_part(self, buffer: Optional[nnx.Cache]) -> Optional[jax.Array]:
        if buffer is None:
            return None
        if self.filled is None:
            return buffer[...]
        length = known_value(self.filled[...])
        return buffer[...] if length is None else buffer[...][..., :length, :]

    @property
    def keys(self) -> Optional[jax.Array]:  # (b, g, length, e)
        return self._filled_part(self.key_buffer)

    @property
    def values(self) -> Optional[jax.Array]:  # (b, g, length, e)
        return self._filled_part(self.value_buffer)

    def append(self, keys: jax.Array, values: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Add (b, g, n, e) keys and values after the ones kept; returns every key and value:
        (b, g, length, e), or the whole (b, g, capacity, e) buffers when preallocated."""
        new = keys.shape[-2]
        if self.capacity is not None and self.key_buffer is None:
            if new > self.capacity:
                raise ValueError(f"{new} positions exceed the cache's capacity={self.capacity}")
            shape = (*keys.shape[:-2], self.capacity, keys.shape[-1])
            self.key_buffer = nnx.Cache(jnp.zeros(shape, keys.dtype))
            self.value_buffer = nnx.Cache(jnp.zeros(shape, values.dtype))
            self.filled = nnx.Cache(jnp.zeros((), jnp.int32))
        if self.filled is not None:
            start = self.filled[...]
            known = known_value(start)
            width = self.key_buffer.shape[-2]
            if known is not None and known + new > width:
                raise ValueError(f"position {known + new} exceeds the cache's capacity={width}")
            at = (0,) * (keys.ndim - 2) + (start, 0)  # write positions start..start+n-1
            self.key_buffer[...] = jax.lax.dynamic_update_slice(
                self.key_buffer[...], keys.astype(self.key_buffer.dtype), at
            )
            self.value_buffer[...] = jax.lax.dynamic_update_slice(
                self.value_buffer[...], values.astype(self.value_buffer.dtype), at
            )
            self.filled[...] = start + new
            return self.key_buffer[...], self.value_buffer[...]
        if self.key_buffer is None:
            self.key_buffer, self.value_buffer = nnx.Cache(keys), nnx.Cache(values)
        else:
            self.key_buffer.set_value(jnp.concatenate([self.key_buffer[...], keys], axis=-2))
            self.value_buffer.set_value(jnp.concatenate([self.value_buffer[...], values], axis=-2))
        return self.key_buffer[...], self.value_buffer[...]

    def store(self, keys: jax.Array, values: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keep ``keys`` and ``values`` (b, g, k, e) as they are, whatever the capacity:
        cross-attention's projections of the context, made once."""
        self.key_buffer, self.value_buffer = nnx.Cache(keys), nnx.Cache(values)
        self.filled = None
        return keys, values

    def reorder(self, indices: jax.Array) -> None:
        """Keep batch rows ``indices`` (beam search reorders hypotheses each step)."""
        for buffer in (self.key_buffer, self.value_buffer):
            if buffer is not None:
                buffer.set_value(jnp.take(buffer[...], jnp.asarray(indices), axis=0))


def _widen(x: Optional[jax.Array], width: int, fill) -> Optional[jax.Array]:
    """A mask or bias over the first keys, padded with ``fill`` to ``width`` keys (a key axis
    of 1 broadcasts and stays)."""
    if x is None:
        return None
    x = jnp.asarray(x)
    keys = x.shape[-1]
    if keys in (1, width):
        return x
    if keys > width:
        raise ValueError(f"a mask or bias over {keys} keys does not fit a cache of {width}")
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - keys)], constant_values=fill)


class MultiHeadAttention(nnx.Module):
    """Multi-head attention (§3.2.2): self-attention, or cross-attention given a context.

    ``n_kv_heads`` < ``n_heads`` gives grouped-query attention (Ainslie et al. 2023);
    ``rotary`` rotates queries and keys by position (self-attention only); ``scale``
    overrides 1/sqrt(head_dim) (T5 uses 1). Dropout on the attention weights (``dropout``)
    acts while ``deterministic`` is False (training mode, as built; ``eval()`` sets it).

    >>> attention = MultiHeadAttention(d_model=16, n_heads=4, rngs=nnx.Rngs(0))
    >>> output, _ = attention(jnp.ones((2, 5, 16)), causal=True)  # (2, 5, 16)
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
        rngs: nnx.Rngs,
    ) -> None:
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
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.dropout, self.scale, self.implementation = dropout, scale, implementation
        self.q_proj = Linear(d_model, n_heads * head_dim, bias=bias, rngs=rngs)  # W^Q for all heads
        self.k_proj = Linear(context_dim, n_kv_heads * head_dim, bias=bias, rngs=rngs)  # W^K
        self.v_proj = Linear(context_dim, n_kv_heads * head_dim, bias=bias, rngs=rngs)  # W^V
        self.out_proj = Linear(n_heads * head_dim, d_model, bias=bias, rngs=rngs)  # W^O
        self.rotary = rotary
        self.deterministic = False  # training mode, as a torch module is built
        self.rngs = rngs["dropout"].fork()  # the dropout masks on the weights
        self.recorded: Optional[list[jax.Array]] = None  # set by capture_attention()

    def _split_heads(self, x: jax.Array, heads: int) -> jax.Array:  # (b, n, heads*e) -> (b, heads, n, e)
        batch, length, _ = x.shape
        return x.reshape(batch, length, heads, self.head_dim).transpose(0, 2, 1, 3)

    def __call__(
        self,
        x: jax.Array,
        context: Optional[jax.Array] = None,
        mask: Optional[jax.Array] = None,
        *,
        causal: bool = False,
        position_bias: Optional[jax.Array] = None,
        cache: Optional[KVCache] = None,
        return_weights: bool = False,
    ) -> tuple[jax.Array, Optional[jax.Array]]:
        """x (b, q, d); context (b, k, d_context) for cross-attention, else x itself.

        ``mask`` is over all keys, cached ones included. Returns (output (b, q, d),
        weights (b, h, q, k) or None).

        With a preallocated cache (:class:`KVCache` with a ``capacity``) the keys are the
        cache's ``capacity`` slots: the queries sit at positions length..length+q-1 (the
        cache's length before this call), slots not yet written are masked, and with
        ``causal`` so is every key after its query. ``mask`` and ``position_bias`` may
        then cover the first keys only (length + q of them, as with torch's cache): they
        are widened to the capacity, and the weights are (b, h, q, capacity).
        """
        batch, query_length, _ = x.shape
        queries = self._split_heads(self.q_proj(x), self.n_heads)  # (b, h, q, e)
        if context is not None:  # cross-attention: the context's keys never change
            if cache is not None and cache.keys is not None:
                keys, values = cache.keys, cache.values
            else:
                keys = self._split_heads(self.k_proj(context), self.n_kv_heads)  # (b, g, k, e)
                values = self._split_heads(self.v_proj(context), self.n_kv_heads)
                if cache is not None:
                    cache.store(keys, values)
        else:  # self-attention: new keys join the cached ones
            keys = self._split_heads(self.k_proj(x), self.n_kv_heads)  # (b, g, q, e)
            values = self._split_heads(self.v_proj(x), self.n_kv_heads)
            offset = cache.length if cache is not None else 0  # position of the first query
            if self.rotary is not None:
                queries, keys = self.rotary(queries, offset), self.rotary(keys, offset)
            if cache is not None:
                keys, values = cache.append(keys, values)
                if cache.preallocated:  # (b, g, capacity, e): mask what is not written, or is ahead
                    capacity = keys.shape[-2]
                    if causal:
                        written = causal_mask(query_length, capacity, offset=offset)  # (q, capacity)
                    else:
                        written = jnp.arange(capacity)[None, :] < offset + query_length  # (1, capacity)
                    mask = combine_masks(_widen(mask, capacity, True), written)
                    position_bias = _widen(position_bias, capacity, 0.0)
                    causal = False  # in the mask already
        training = not self.deterministic and self.dropout > 0.0
        want_weights = return_weights or self.recorded is not None
        output, weights = attend(
            queries, keys, values, mask,
            causal=causal,
            bias=position_bias,
            scale=self.scale,
            dropout_p=self.dropout if training else 0.0,
            implementation=self.implementation,
            return_weights=want_weights,
            dropout_rng=self.rngs() if training else None,
        )  # (b, h, q, e)
        if self.recorded is not None:
            self.recorded.append(jax.lax.stop_gradient(weights))
        output = output.transpose(0, 2, 1, 3).reshape(batch, query_length, self.n_heads * self.head_dim)
        return self.out_proj(output), (weights if return_weights else None)


@contextlib.contextmanager
def capture_attention(model: nnx.Module) -> Iterator[dict[str, list[jax.Array]]]:
    """Record every attention module's weights while the block runs.

    >>> with capture_attention(model) as weights:
    ...     model(source, target)
    >>> weights["encoder.layers.0.self_attention"][0].shape  # (b, h, q, k)

    Recording switches those modules to the readable function, which returns weights.
    Runs eagerly only (the weights are collected in a Python list).
    """
    modules = {name: m for name, m in named_modules(model) if isinstance(m, MultiHeadAttention)}
    recorded: dict[str, list[jax.Array]] = {name: [] for name in modules}
    for name, module in modules.items():
        module.recorded = recorded[name]
    try:
        yield recorded
    finally:
        for module in modules.values():
            module.recorded = None
