"""Encoder and decoder layers and stacks ("Attention Is All You Need" §3.1, Figure 1).

Each sub-layer (attention or feed-forward) sits in a residual connection with dropout
on its output (§5.4) and a norm. Post-norm, the paper's arrangement:

    x = Norm(x + Dropout(Sublayer(x)))

Pre-norm (Xiong et al. 2020; GPT-2, T5), which trains more stably when deep:

    x = x + Dropout(Sublayer(Norm(x)))     and one more Norm after the last layer.

The encoder layer has self-attention and a feed-forward; the decoder layer adds
cross-attention over the encoder output ("memory") between the two, and its
self-attention is causal so position i only sees positions <= i (§3.2.3).

Blocks read their sizes from a config with the fields of :class:`taa.config.BlockConfig`.
Notation: ``b`` batch, ``n`` target length, ``m`` source length, ``d`` d_model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from torch import Tensor, nn

from taa.torch.attention import KVCache, MultiHeadAttention
from taa.torch.dropout import Dropout
from taa.torch.feedforward import PositionwiseFeedForward
from taa.torch.norm import make_norm
from taa.torch.positional import RelativePositionBias, RotaryEmbedding


def attention_from_config(config, rotary: Optional[RotaryEmbedding] = None, scale=None) -> MultiHeadAttention:
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
    )


def norm_from_config(config) -> nn.Module:
    return make_norm(config.norm, config.d_model, config.norm_eps, bias=config.bias, fused=config.attention == "fused")


def feed_forward_from_config(config) -> PositionwiseFeedForward:
    """The FFN of a layer. Dropout on its hidden layer is ``config.feed_forward_dropout``
    where the config has that field (GPT-2 and BERT have none there), else ``config.dropout``."""
    inner_dropout = getattr(config, "feed_forward_dropout", None)
    return PositionwiseFeedForward(
        config.d_model,
        config.d_ff,
        config.activation,
        config.dropout if inner_dropout is None else inner_dropout,
        config.bias,
    )


class Residual(nn.Module):
    """One sub-layer's residual connection, dropout and norm, in post- or pre-norm order."""

    def __init__(self, config) -> None:
        super().__init__()
        self.norm_first = config.norm_first
        self.norm = norm_from_config(config)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        if self.norm_first:
            return x + self.dropout(sublayer(self.norm(x)))
        return self.norm(x + self.dropout(sublayer(x)))


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each in a residual connection (§3.1, "Encoder")."""

    def __init__(self, config, rotary: Optional[RotaryEmbedding] = None, attention_scale=None) -> None:
        super().__init__()
        self.self_attention = attention_from_config(config, rotary, attention_scale)
        self.self_attention_residual = Residual(config)
        self.feed_forward = feed_forward_from_config(config)
        self.feed_forward_residual = Residual(config)

    def forward(
        self,
        x: Tensor,
        mask: Optional[Tensor] = None,
        *,
        causal: bool = False,
        position_bias: Optional[Tensor] = None,
        cache: Optional[KVCache] = None,
    ) -> Tensor:  # (b, m, d) -> (b, m, d)
        # causal=True with a cache: a decoder-only layer (GPT) decoding step by step
        x = self.self_attention_residual(
            x,
            lambda h: self.self_attention(h, mask=mask, causal=causal, position_bias=position_bias, cache=cache)[0],
        )
        return self.feed_forward_residual(x, self.feed_forward)


@dataclass
class LayerCache:
    """What one decoder layer keeps between decoding steps."""

    self_attention: KVCache = field(default_factory=KVCache)
    cross_attention: KVCache = field(default_factory=KVCache)


@dataclass
class DecoderCache:
    """The KV cache of a whole decoder stack; ``length`` tokens decoded so far."""

    layers: list[LayerCache]

    @classmethod
    def empty(cls, n_layers: int) -> DecoderCache:
        return cls([LayerCache() for _ in range(n_layers)])

    @property
    def length(self) -> int:
        return self.layers[0].self_attention.length if self.layers else 0

    def reorder(self, indices: Tensor, cross_attention: bool = True) -> None:
        """Keep batch rows ``indices`` in every layer (beam search).

        ``cross_attention=False`` leaves the cross-attention cache as it is: right when
        rows only trade places with rows of the same source (the beams of one sentence).
        """
        for layer in self.layers:
            layer.self_attention.reorder(indices)
            if cross_attention:
                layer.cross_attention.reorder(indices)


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the memory, feed-forward (§3.1, "Decoder")."""

    def __init__(self, config, rotary: Optional[RotaryEmbedding] = None, attention_scale=None) -> None:
        super().__init__()
        self.self_attention = attention_from_config(config, rotary, attention_scale)
        self.self_attention_residual = Residual(config)
        self.cross_attention = attention_from_config(config, None, attention_scale)
        self.cross_attention_residual = Residual(config)
        self.feed_forward = PositionwiseFeedForward(
            config.d_model, config.d_ff, config.activation, config.dropout, config.bias
        )
        self.feed_forward_residual = Residual(config)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
        *,
        cache: Optional[LayerCache] = None,
        self_position_bias: Optional[Tensor] = None,
        cross_position_bias: Optional[Tensor] = None,
    ) -> Tensor:  # x (b, n, d), memory (b, m, d) -> (b, n, d)
        x = self.self_attention_residual(
            x,
            lambda h: self.self_attention(
                h,
                mask=self_mask,
                causal=True,
                position_bias=self_position_bias,
                cache=cache.self_attention if cache else None,
            )[0],
        )
        x = self.cross_attention_residual(
            x,
            lambda h: self.cross_attention(
                h,
                memory,
                mask=memory_mask,
                position_bias=cross_position_bias,
                cache=cache.cross_attention if cache else None,
            )[0],
        )
        return self.feed_forward_residual(x, self.feed_forward)


class Encoder(nn.Module):
    """N encoder layers; an optional final norm (needed with pre-norm, and by torch.nn)."""

    def __init__(
        self,
        config,
        n_layers: int,
        final_norm: bool,
        rotary: Optional[RotaryEmbedding] = None,
        relative_bias: Optional[RelativePositionBias] = None,
        attention_scale=None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config, rotary, attention_scale) for _ in range(n_layers))
        self.final_norm = norm_from_config(config) if final_norm else None
        self.relative_bias = relative_bias

    def forward(
        self, x: Tensor, mask: Optional[Tensor] = None, *, causal: bool = False, cache: Optional[DecoderCache] = None
    ) -> Tensor:  # (b, m, d) -> (b, m, d)
        """``causal`` and ``cache`` make the stack a decoder-only one (GPT): x holds the new
        tokens, ``mask`` covers the cached keys too, and each layer appends to its cache."""
        length = x.shape[1]
        offset = cache.length if cache is not None else 0
        # T5 computes the relative bias once and shares it across the layers
        bias = self.relative_bias(length, offset + length, offset) if self.relative_bias is not None else None
        for i, layer in enumerate(self.layers):
            layer_cache = cache.layers[i].self_attention if cache is not None else None
            x = layer(x, mask, causal=causal, position_bias=bias, cache=layer_cache)
        return self.final_norm(x) if self.final_norm is not None else x


class Decoder(nn.Module):
    """N decoder layers attending to the encoder memory; an optional final norm."""

    def __init__(
        self,
        config,
        n_layers: int,
        final_norm: bool,
        rotary: Optional[RotaryEmbedding] = None,
        relative_bias: Optional[RelativePositionBias] = None,
        attention_scale=None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(config, rotary, attention_scale) for _ in range(n_layers))
        self.final_norm = norm_from_config(config) if final_norm else None
        self.relative_bias = relative_bias

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
        cache: Optional[DecoderCache] = None,
    ) -> Tensor:  # x (b, n, d), memory (b, m, d) -> (b, n, d)
        bias = None
        if self.relative_bias is not None:
            offset = cache.length if cache is not None else 0
            bias = self.relative_bias(x.shape[1], offset + x.shape[1], offset)
        for i, layer in enumerate(self.layers):
            x = layer(
                x, memory, self_mask, memory_mask,
                cache=cache.layers[i] if cache is not None else None,
                self_position_bias=bias,
            )
        return self.final_norm(x) if self.final_norm is not None else x
