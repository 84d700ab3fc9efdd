"""Encoder and decoder layers and stacks ("Attention Is All You Need" §3.1, Figure 1),
the Keras twin of :mod:`taa.torch.blocks`.

Each sub-layer (attention or feed-forward) sits in a residual connection with dropout
on its output (§5.4) and a norm. Post-norm, the paper's arrangement:

    x = Norm(x + Dropout(Sublayer(x)))

Pre-norm (Xiong et al. 2020; GPT-2, T5), which trains more stably when deep:

    x = x + Dropout(Sublayer(Norm(x)))     and one more Norm after the last layer.

The encoder layer has self-attention and a feed-forward; the decoder layer adds
cross-attention over the encoder output ("memory") between the two, and its
self-attention is causal so position i only sees positions <= i (§3.2.3).

Blocks read their sizes from a model config with the fields of
:class:`taa.config.BlockConfig` (TransformerConfig, GPTConfig, BertConfig, T5Config);
``get_config`` stores it as :func:`taa.config.recipe.model_config_to_dict` writes it.
Notation: ``b`` batch, ``n`` target length, ``m`` source length, ``d`` d_model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import keras

from taa.config import BlockConfig
from taa.config.coerce import from_dict, to_dict
from taa.config.recipe import model_config_from_dict, model_config_to_dict
from taa.keras.attention import KVCache, MultiHeadAttention
from taa.keras.base import PositionalCallLayer, build_sublayers, sequence_length
from taa.keras.dropout import Dropout
from taa.keras.feedforward import PositionwiseFeedForward
from taa.keras.norm import make_norm
from taa.keras.positional import RotaryEmbedding


# The sublayers a block makes from its config; ``dtype`` (the block's dtype policy) makes them
# compute as the block does under mixed precision.


def attention_from_config(
    config, rotary: Optional[RotaryEmbedding] = None, scale=None, dtype=None
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
        dtype=dtype,
    )


def norm_from_config(config, dtype=None) -> keras.layers.Layer:
    return make_norm(
        config.norm, config.d_model, config.norm_eps, bias=config.bias, fused=config.attention == "fused", dtype=dtype
    )


def feed_forward_from_config(config, dtype=None) -> PositionwiseFeedForward:
    """The FFN of a layer. Dropout on its hidden layer is ``config.feed_forward_dropout``
    where the config has that field (GPT-2 and BERT have none there), else ``config.dropout``."""
    inner_dropout = getattr(config, "feed_forward_dropout", None)
    return PositionwiseFeedForward(
        config.d_model,
        config.d_ff,
        config.activation,
        config.dropout if inner_dropout is None else inner_dropout,
        config.bias,
        dtype=dtype,
    )


# --------------------------------------------------------------------------------------
# Serialising a model config and the layers shared between blocks
# --------------------------------------------------------------------------------------


def config_to_dict(config) -> dict:
    """A model config as ``model_config_to_dict`` writes it; a bare BlockConfig as type ``block``."""
    if type(config) is BlockConfig:
        return {"type": "block", **to_dict(config)}
    return model_config_to_dict(config)


def config_from(config) -> Any:
    """A model config from itself or from the dict ``get_config`` stored."""
    if not isinstance(config, dict):
        return config
    if config.get("type") == "block":
        return from_dict(BlockConfig, {k: v for k, v in config.items() if k != "type"})
    return model_config_from_dict(config)


def _serialize(layer: Optional[keras.layers.Layer]) -> Optional[dict]:
    return keras.saving.serialize_keras_object(layer) if layer is not None else None


def _deserialize(data: Optional[dict]) -> Optional[keras.layers.Layer]:
    return keras.saving.deserialize_keras_object(data) if data is not None else None


class _ConfigBlock(PositionalCallLayer):
    """A block built from a model config: ``get_config`` round-trips the config, the shared
    rotary or relative-bias layers and ``attention_scale``."""

    _shared = ("rotary",)  # constructor arguments that are layers

    def _block_config(self) -> dict:
        return {"config": config_to_dict(self.config), "attention_scale": self.attention_scale,
                **{name: _serialize(getattr(self, f"_{name}_argument")) for name in self._shared}}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        for name in cls._shared:
            config[name] = _deserialize(config.get(name))
        return cls(**config)


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="taa")
class Residual(PositionalCallLayer):
    """One sub-layer's residual connection, dropout and norm, in post- or pre-norm order."""

    def __init__(self, config, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config_from(config)
        self.norm_first = self.config.norm_first
        self.norm = norm_from_config(self.config, self.dtype_policy)
        self.dropout = Dropout(self.config.dropout, dtype=self.dtype_policy)

    def build(self, input_shape=None) -> None:
        build_sublayers(input_shape, self.norm)
        self.built = True

    def call(self, x, sublayer: Callable, training=None):
        if self.norm_first:
            return x + self.dropout(sublayer(self.norm(x)), training=training)
        return self.norm(x + self.dropout(sublayer(x), training=training))

    def get_config(self) -> dict:
        return {**super().get_config(), "config": config_to_dict(self.config)}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)


@keras.saving.register_keras_serializable(package="taa")
class EncoderLayer(_ConfigBlock):
    """Self-attention then feed-forward, each in a residual connection (§3.1, "Encoder")."""

    def __init__(self, config, rotary: Optional[RotaryEmbedding] = None, attention_scale=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config = config_from(config)
        self.attention_scale = attention_scale
        self._rotary_argument = rotary
        dtype = self.dtype_policy
        self.self_attention = attention_from_config(config, rotary, attention_scale, dtype)
        self.self_attention_residual = Residual(config, dtype=dtype)
        self.feed_forward = feed_forward_from_config(config, dtype)
        self.feed_forward_residual = Residual(config, dtype=dtype)

    def build(self, input_shape=None) -> None:
        build_sublayers(
            (None, None, self.config.d_model),
            self.self_attention, self.self_attention_residual, self.feed_forward, self.feed_forward_residual,
        )
        self.built = True

    def call(
        self,
        x,
        mask=None,
        *,
        causal: bool = False,
        position_bias=None,
        cache: Optional[KVCache] = None,
        training=None,
    ):  # (b, m, d) -> (b, m, d)
        # causal=True with a cache: a decoder-only layer (GPT) decoding step by step
        x = self.self_attention_residual(
            x,
            lambda h: self.self_attention(
                h, mask=mask, causal=causal, position_bias=position_bias, cache=cache, training=training
            )[0],
            training=training,
        )
        return self.feed_forward_residual(x, lambda h: self.feed_forward(h, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), **self._block_config()}


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

    def reorder(self, indices, cross_attention: bool = True) -> None:
        """Keep batch rows ``indices`` in every layer (beam search).

        ``cross_attention=False`` leaves the cross-attention cache as it is: right when
        rows only trade places with rows of the same source (the beams of one sentence).
        """
        for layer in self.layers:
            layer.self_attention.reorder(indices)
            if cross_attention:
                layer.cross_attention.reorder(indices)


@keras.saving.register_keras_serializable(package="taa")
class DecoderLayer(_ConfigBlock):
    """Masked self-attention, cross-attention over the memory, feed-forward (§3.1, "Decoder")."""

    def __init__(self, config, rotary: Optional[RotaryEmbedding] = None, attention_scale=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config = config_from(config)
        self.attention_scale = attention_scale
        self._rotary_argument = rotary
        dtype = self.dtype_policy
        self.self_attention = attention_from_config(config, rotary, attention_scale, dtype)
        self.self_attention_residual = Residual(config, dtype=dtype)
        self.cross_attention = attention_from_config(config, None, attention_scale, dtype)
        self.cross_attention_residual = Residual(config, dtype=dtype)
        # as torch's: the decoder's FFN keeps config.dropout inside (no feed_forward_dropout)
        self.feed_forward = PositionwiseFeedForward(
            config.d_model, config.d_ff, config.activation, config.dropout, config.bias, dtype=dtype
        )
        self.feed_forward_residual = Residual(config, dtype=dtype)

    def build(self, input_shape=None) -> None:
        build_sublayers(
            (None, None, self.config.d_model),
            self.self_attention, self.self_attention_residual, self.cross_attention, self.cross_attention_residual,
            self.feed_forward, self.feed_forward_residual,
        )
        self.built = True

    def call(
        self,
        x,
        memory,
        self_mask=None,
        memory_mask=None,
        *,
        cache: Optional[LayerCache] = None,
        self_position_bias=None,
        cross_position_bias=None,
        training=None,
    ):  # x (b, n, d), memory (b, m, d) -> (b, n, d)
        x = self.self_attention_residual(
            x,
            lambda h: self.self_attention(
                h,
                mask=self_mask,
                causal=True,
                position_bias=self_position_bias,
                cache=cache.self_attention if cache else None,
                training=training,
            )[0],
            training=training,
        )
        x = self.cross_attention_residual(
            x,
            lambda h: self.cross_attention(
                h,
                memory,
                mask=memory_mask,
                position_bias=cross_position_bias,
                cache=cache.cross_attention if cache else None,
                training=training,
            )[0],
            training=training,
        )
        return self.feed_forward_residual(x, lambda h: self.feed_forward(h, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), **self._block_config()}


# --------------------------------------------------------------------------------------
# Stacks
# --------------------------------------------------------------------------------------


class _Stack(_ConfigBlock):
    """What Encoder and Decoder share: N layers, an optional final norm, a shared position bias."""

    _shared = ("rotary", "relative_bias")
    layer_class: type

    def __init__(
        self,
        config,
        n_layers: int,
        final_norm: bool,
        rotary: Optional[RotaryEmbedding] = None,
        relative_bias: Optional[keras.layers.Layer] = None,
        attention_scale=None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.config = config = config_from(config)
        self.n_layers, self.attention_scale = n_layers, attention_scale
        self._rotary_argument, self._relative_bias_argument = rotary, relative_bias
        dtype = self.dtype_policy
        self.layers = [self.layer_class(config, rotary, attention_scale, dtype=dtype) for _ in range(n_layers)]
        self.final_norm = norm_from_config(config, dtype) if final_norm else None
        self.relative_bias = relative_bias

    def build(self, input_shape=None) -> None:
        build_sublayers((None, None, self.config.d_model), *self.layers, self.final_norm, self.relative_bias)
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), **self._block_config(), "n_layers": self.n_layers,
                "final_norm": self.final_norm is not None}


@keras.saving.register_keras_serializable(package="taa")
class Encoder(_Stack):
    """N encoder layers; an optional final norm (needed with pre-norm, and by torch.nn)."""

    layer_class = EncoderLayer

    def call(self, x, mask=None, *, causal: bool = False, cache: Optional[DecoderCache] = None, training=None):
        """(b, m, d) -> (b, m, d). ``causal`` and ``cache`` make the stack a decoder-only one
        (GPT): x holds the new tokens, ``mask`` covers the cached keys too, and each layer
        appends to its cache."""
        length = sequence_length(x)  # an int, or a tensor where a trace leaves it open
        offset = cache.length if cache is not None else 0
        # T5 computes the relative bias once and shares it across the layers
        bias = self.relative_bias(length, offset + length, offset) if self.relative_bias is not None else None
        for i, layer in enumerate(self.layers):
            layer_cache = cache.layers[i].self_attention if cache is not None else None
            x = layer(x, mask, causal=causal, position_bias=bias, cache=layer_cache, training=training)
        return self.final_norm(x) if self.final_norm is not None else x


@keras.saving.register_keras_serializable(package="taa")
class Decoder(_Stack):
    """N decoder layers attending to the encoder memory; an optional final norm."""

    layer_class = DecoderLayer

    def call(self, x, memory, self_mask=None, memory_mask=None, cache: Optional[DecoderCache] = None, training=None):
        """x (b, n, d), memory (b, m, d) -> (b, n, d)."""
        bias = None
        if self.relative_bias is not None:
            offset, length = (cache.length if cache is not None else 0), sequence_length(x)
            bias = self.relative_bias(length, offset + length, offset)
        for i, layer in enumerate(self.layers):
            x = layer(
                x, memory, self_mask, memory_mask,
                cache=cache.layers[i] if cache is not None else None,
                self_position_bias=bias,
                training=training,
            )
        return self.final_norm(x) if self.final_norm is not None else x
