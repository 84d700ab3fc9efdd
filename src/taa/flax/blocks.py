"""Encoder and decoder layers and stacks ("Attention Is All You Need" §3.1, Figure 1), the
Flax NNX twin of :mod:`taa.torch.blocks`.

Each sub-layer (attention or feed-forward) sits in a residual connection with dropout
on its output (§5.4) and a norm. Post-norm, the paper's arrangement:

    x = Norm(x + Dropout(Sublayer(x)))

Pre-norm (Xiong et al. 2020; GPT-2, T5), which trains more stably when deep:

    x = x + Dropout(Sublayer(Norm(x)))     and one more Norm after the last layer.

The encoder layer has self-attention and a feed-forward; the decoder layer adds
cross-attention over the encoder output ("memory") between the two, and its
self-attention is causal so position i only sees positions <= i (§3.2.3).

Blocks read their sizes from a config with the fields of :class:`taa.config.BlockConfig`.
Attribute names are torch's, so a block's parameter paths are its torch twin's state-dict
keys (:mod:`taa.flax.weights`).

KV caches. :class:`DecoderCache` holds one :class:`LayerCache` per layer, each two
:class:`~taa.flax.attention.KVCache` (self- and cross-attention). All three are NNX
pytrees: passed to a function under ``nnx.jit``, what the layers append inside comes back
out. Built with a ``capacity`` (:meth:`DecoderCache.empty`), the self-attention caches
are fixed-size, so every decoding step has the same shapes and compiles once; their
``length`` is then an int32 scalar, which may be traced.

Notation: ``b`` batch, ``n`` target length, ``m`` source length, ``d`` d_model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional, Union

import jax
from flax import nnx

from taa.flax.attention import KVCache, MultiHeadAttention
from taa.flax.dropout import Dropout
from taa.flax.feedforward import PositionwiseFeedForward
from taa.flax.norm import make_norm
from taa.flax.positional import AlibiBias, Offset, RelativePositionBias, RotaryEmbedding


def attention_from_config(
    config, rotary: Optional[RotaryEmbedding] = None, scale=None, *, rngs: nnx.Rngs
) -> MultiHeadAttention:
    return MultiHeadAttention(
        config.d_model,
        config.n_heads,
        config.n_kv_heads,
        head_dim=getattr(config, "head_dim", None),  # T5: heads of d_kv, n_heads * d_kv may differ from d_model
        bias=config.bias,
        dropout=config.attention_dropout,
        scale=scale,
        implementation=config.attention,
        rotary=rotary,
        rngs=rngs,
    )


def norm_from_config(config, *, rngs: nnx.Rngs) -> nnx.Module:
    return make_norm(
        config.norm, config.d_model, config.norm_eps, bias=config.bias, fused=config.attention == "fused", rngs=rngs
    )


def feed_forward_from_config(config, *, rngs: nnx.Rngs) -> PositionwiseFeedForward:
    """The FFN of a layer. Dropout on its hidden layer is ``config.feed_forward_dropout``
    where the config has that field (GPT-2 and BERT have none there), else ``config.dropout``."""
    inner_dropout = getattr(config, "feed_forward_dropout", None)
    return PositionwiseFeedForward(
        config.d_model,
        config.d_ff,
        config.activation,
        config.dropout if inner_dropout is None else inner_dropout,
        config.bias,
        rngs=rngs,
    )


class Residual(nnx.Module):
    """One sub-layer's residual connection, dropout and norm, in post- or pre-norm order."""

    def __init__(self, config, *, rngs: nnx.Rngs) -> None:
        self.norm_first = config.norm_first
        self.norm = norm_from_config(config, rngs=rngs)
        self.dropout = Dropout(config.dropout, rngs=rngs)

    def __call__(self, x: jax.Array, sublayer: Callable[[jax.Array], jax.Array]) -> jax.Array:
        if self.norm_first:
            return x + self.dropout(sublayer(self.norm(x)))
        return self.norm(x + self.dropout(sublayer(x)))


class EncoderLayer(nnx.Module):
    """Self-attention then feed-forward, each in a residual connection (§3.1, "Encoder")."""

    def __init__(
        self, config, rotary: Optional[RotaryEmbedding] = None, attention_scale=None, *, rngs: nnx.Rngs
    ) -> None:
        self.self_attention = attention_from_config(config, rotary, attention_scale, rngs=rngs)
        self.self_attention_residual = Residual(config, rngs=rngs)
        self.feed_forward = feed_forward_from_config(config, rngs=rngs)
        self.feed_forward_residual = Residual(config, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        mask: Optional[jax.Array] = None,
        *,
        causal: bool = False,
        position_bias: Optional[jax.Array] = None,
        cache: Optional[KVCache] = None,
    ) -> jax.Array:  # (b, m, d) -> (b, m, d)
        # causal=True with a cache: a decoder-only layer (GPT) decoding step by step
        x = self.self_attention_residual(
            x,
            lambda h: self.self_attention(h, mask=mask, causal=causal, position_bias=position_bias, cache=cache)[0],
        )
        return self.feed_forward_residual(x, self.feed_forward)


class LayerCache(nnx.Pytree):
    """What one decoder layer keeps between decoding steps."""

    def __init__(self, self_attention: Optional[KVCache] = None, cross_attention: Optional[KVCache] = None) -> None:
        self.self_attention = self_attention if self_attention is not None else KVCache()
        self.cross_attention = cross_attention if cross_attention is not None else KVCache()


class DecoderCache(nnx.Pytree):
    """The KV cache of a whole decoder stack; ``length`` tokens decoded so far."""

    def __init__(self, layers: list[LayerCache]) -> None:
        self.layers = nnx.List(layers)

    @classmethod
    def empty(cls, n_layers: int, capacity: Optional[int] = None) -> DecoderCache:
        """No layer has seen a token yet. With ``capacity``, each self-attention cache holds
        that many positions from its first append on (fixed shapes: decoding under ``nnx.jit``
        compiles once); without, caches grow by concatenation, as torch's do."""
        return cls([LayerCache(KVCache(capacity=capacity)) for _ in range(n_layers)])

    @property
    def length(self) -> Offset:
        """Tokens decoded so far: an int, or an int32 scalar for a fixed-size cache (traced under jit)."""
        return self.layers[0].self_attention.length if self.layers else 0

    def key_length(self, new: int) -> int:
        """How many keys each layer's self-attention sees once ``new`` more tokens join the
        cache: the cached and the new tokens, or the capacity of a fixed-size cache (whose
        slots not written yet are masked)."""
        if not self.layers:
            return new
        keys = self.layers[0].self_attention
        if keys.capacity is not None and (keys.preallocated or keys.keys is None):
            return keys.capacity
        return keys.length + new

    def reorder(self, indices: jax.Array, cross_attention: bool = True) -> None:
        """Keep batch rows ``indices`` in every layer (beam search).

        ``cross_attention=False`` leaves the cross-attention cache as it is: right when
        rows only trade places with rows of the same source (the beams of one sentence).
        """
        for layer in self.layers:
            layer.self_attention.reorder(indices)
            if cross_attention:
                layer.cross_attention.reorder(indices)


class DecoderLayer(nnx.Module):
    """Masked self-attention, cross-attention over the memory, feed-forward (§3.1, "Decoder")."""

    def __init__(
        self, config, rotary: Optional[RotaryEmbedding] = None, attention_scale=None, *, rngs: nnx.Rngs
    ) -> None:
        self.self_attention = attention_from_config(config, rotary, attention_scale, rngs=rngs)
        self.self_attention_residual = Residual(config, rngs=rngs)
        self.cross_attention = attention_from_config(config, None, attention_scale, rngs=rngs)
        self.cross_attention_residual = Residual(config, rngs=rngs)
        # as torch's: the decoder's FFN keeps config.dropout inside (no feed_forward_dropout)
        self.feed_forward = PositionwiseFeedForward(
            config.d_model, config.d_ff, config.activation, config.dropout, config.bias, rngs=rngs
        )
        self.feed_forward_residual = Residual(config, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        memory: jax.Array,
        self_mask: Optional[jax.Array] = None,
        memory_mask: Optional[jax.Array] = None,
        *,
        cache: Optional[LayerCache] = None,
        self_position_bias: Optional[jax.Array] = None,
        cross_position_bias: Optional[jax.Array] = None,
    ) -> jax.Array:  # x (b, n, d), memory (b, m, d) -> (b, n, d)
        x = self.self_attention_residual(
            x,
            lambda h: self.self_attention(
                h,
                mask=self_mask,
                causal=True,
                position_bias=self_position_bias,
                cache=cache.self_attention if cache is not None else None,
            )[0],
        )
        x = self.cross_attention_residual(
            x,
            lambda h: self.cross_attention(
                h,
                memory,
                mask=memory_mask,
                position_bias=cross_position_bias,
                cache=cache.cross_attention if cache is not None else None,
            )[0],
        )
        return self.feed_forward_residual(x, self.feed_forward)


def _position_bias(
    relative_bias: Optional[nnx.Module], cache: Optional[DecoderCache], length: int
) -> Optional[jax.Array]:
    """A stack's shared position bias (T5, ALiBi) for ``length`` new queries after the cached
    tokens: (1, h, n, k) over every key the layers' attention will see, None without one."""
    if relative_bias is None:
        return None
    if cache is None:
        return relative_bias(length, length, 0)
    return relative_bias(length, cache.key_length(length), cache.length)


class Encoder(nnx.Module):
    """N encoder layers; an optional final norm (needed with pre-norm, and by torch.nn)."""

    def __init__(
        self,
        config,
        n_layers: int,
        final_norm: bool,
        rotary: Optional[RotaryEmbedding] = None,
        relative_bias: Optional[Union[RelativePositionBias, AlibiBias]] = None,
        attention_scale=None,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.layers = nnx.List([EncoderLayer(config, rotary, attention_scale, rngs=rngs) for _ in range(n_layers)])
        self.final_norm = norm_from_config(config, rngs=rngs) if final_norm else None
        self.relative_bias = relative_bias

    def __call__(
        self,
        x: jax.Array,
        mask: Optional[jax.Array] = None,
        *,
        causal: bool = False,
        cache: Optional[DecoderCache] = None,
    ) -> jax.Array:  # (b, m, d) -> (b, m, d)
        """``causal`` and ``cache`` make the stack a decoder-only one (GPT): x holds the new
        tokens, ``mask`` covers the cached keys too, and each layer appends to its cache."""
        # T5 computes the relative bias once and shares it across the layers
        bias = _position_bias(self.relative_bias, cache, x.shape[1])
        for i, layer in enumerate(self.layers):
            layer_cache = cache.layers[i].self_attention if cache is not None else None
            x = layer(x, mask, causal=causal, position_bias=bias, cache=layer_cache)
        return self.final_norm(x) if self.final_norm is not None else x


class Decoder(nnx.Module):
    """N decoder layers attending to the encoder memory; an optional final norm."""

    def __init__(
        self,
        config,
        n_layers: int,
        final_norm: bool,
        rotary: Optional[RotaryEmbedding] = None,
        relative_bias: Optional[Union[RelativePositionBias, AlibiBias]] = None,
        attention_scale=None,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.layers = nnx.List([DecoderLayer(config, rotary, attention_scale, rngs=rngs) for _ in range(n_layers)])
        self.final_norm = norm_from_config(config, rngs=rngs) if final_norm else None
        self.relative_bias = relative_bias

    def __call__(
        self,
        x: jax.Array,
        memory: jax.Array,
        self_mask: Optional[jax.Array] = None,
        memory_mask: Optional[jax.Array] = None,
        cache: Optional[DecoderCache] = None,
    ) -> jax.Array:  # x (b, n, d), memory (b, m, d) -> (b, n, d)
        bias = _position_bias(self.relative_bias, cache, x.shape[1])
        for i, layer in enumerate(self.layers):
            x = layer(
                x, memory, self_mask, memory_mask,
                cache=cache.layers[i] if cache is not None else None,
                self_position_bias=bias,
            )
        return self.final_norm(x) if self.final_norm is not None else x
