"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017),
the Flax NNX twin of :mod:`taa.torch.models.transformer`.

    source ids -> embedding * sqrt(d_model) + positions -> Encoder -> memory
    target ids -> embedding * sqrt(d_model) + positions -> Decoder(memory) -> linear -> logits

§3.4: the embeddings are multiplied by sqrt(d_model); the source embedding, target
embedding and pre-softmax projection may share one matrix (configurable).
§5.4: dropout on the sums of embeddings and positional encodings.

Also here, for every taa Flax model: :class:`ConfigModel` (built from a config dataclass,
sized as torch sizes it), :func:`tie` and :func:`every_name` (the names of a matrix several
layers share).

Notation: ``b`` batch, ``m`` source length, ``n`` target length, ``d`` d_model, ``v`` vocabulary.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from taa.config import TransformerConfig
from taa.flax.attention import key_padding_to_attention_mask
from taa.flax.base import Embedding, Linear
from taa.flax.blocks import Decoder, DecoderCache, Encoder
from taa.flax.dropout import Dropout
from taa.flax.positional import (
    LearnedPositionalEmbedding,
    Offset,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)
from taa.flax.weights import parameters, tied_weights

# --------------------------------------------------------------------------------------
# What every taa Flax model shares
# --------------------------------------------------------------------------------------


def tie(*names: str) -> dict[str, str]:
    """``tied_weights`` for one parameter reached under several torch names: {alias: source}.

    The first name is the source, as torch's first registration of the parameter is (a
    file stores a tied matrix once, under that name); the others are its aliases. The state
    dict carries every name, as torch's does, and loading accepts any of them
    (:mod:`taa.flax.weights`).
    """
    source = names[0]
    return {name: source for name in names[1:]}


def every_name(model: nnx.Module) -> dict[str, list[str]]:
    """Each parameter's name (as :func:`taa.flax.weights.parameters` gives it) -> all its torch
    names: that one, then its tied aliases."""
    names: dict[str, list[str]] = {name: [name] for name in parameters(model)}
    for alias, source in tied_weights(model).items():
        names[source].append(alias)
    return names


def default_rngs(rngs: Optional[nnx.Rngs]) -> nnx.Rngs:
    """The random streams a model is built with: seed 0 where none are given."""
    return nnx.Rngs(0) if rngs is None else rngs


class ConfigModel(nnx.Module):
    """A taa model built from its config dataclass (``self.config``), sized as torch sizes it.

    Its parameters are made as it is built; :meth:`dummy_inputs` are the arguments of a tiny
    call (for ``nnx.eval_shape``, or a first compilation).
    """

    config: Any

    @property
    def build_options(self) -> dict[str, Any]:
        """What the constructor takes beside the config, to build this model again (``model.yaml``)."""
        return {}

    def dummy_inputs(self) -> tuple:
        """The positional arguments of a tiny call: token ids (1, 2) for each argument
        ``__call__`` requires (the ids of GPT and BERT; source and target of the encoder-decoders)."""
        required = [
            parameter for parameter in inspect.signature(self.__call__).parameters.values()
            if parameter.default is parameter.empty and parameter.kind is parameter.POSITIONAL_OR_KEYWORD
        ]
        return tuple(jnp.zeros((1, 2), dtype=jnp.int32) for _ in required)

    def num_parameters(self) -> int:
        """Distinct parameters (a shared embedding counts once)."""
        return sum(int(np.prod(param[...].shape)) for param in parameters(self).values())

    def parameter_breakdown(self) -> dict[str, int]:
        """Parameters per top-level component; shared parameters count once, under the component
        torch meets them in first (the one assigned first, as torch registers its modules)."""
        order = {name: index for index, name in enumerate(vars(self))}
        names = every_name(self)
        counts: dict[str, int] = {}
        for name, param in parameters(self).items():
            component = min((every.split(".")[0] for every in names[name]), key=lambda c: order.get(c, len(order)))
            counts[component] = counts.get(component, 0) + int(np.prod(param[...].shape))
        return dict(sorted(counts.items(), key=lambda item: order.get(item[0], len(order))))


# --------------------------------------------------------------------------------------
# The Transformer
# --------------------------------------------------------------------------------------


def _xavier_uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Glorot & Bengio 2010: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), as ``nn.init.xavier_uniform_``."""
    fan_out, fan_in = shape[0], int(np.prod(shape[1:]))
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


class Transformer(ConfigModel):
    """Encoder-decoder Transformer; ``model(source, target)`` gives next-token logits.

    >>> model = Transformer(taa.config.preset("vaswani-tiny"), rngs=nnx.Rngs(0))
    >>> logits = model(jnp.array([[5, 6, 7]]), jnp.array([[1, 8]]))  # (1, 2, 50)
    """

    def __init__(self, config: TransformerConfig, *, rngs: Optional[nnx.Rngs] = None) -> None:
        rngs = default_rngs(rngs)
        self.config = config
        self.tied_weights: dict[str, str] = {}
        d = config.d_model
        self.source_embedding = Embedding(config.source_vocab_size, d, rngs=rngs)
        self.target_embedding = (
            self.source_embedding if config.share_embeddings else Embedding(config.target_vocab_size, d, rngs=rngs)
        )
        # Absolute positions are added to the embeddings; rotary and relative ones live in attention.
        source_positions = target_positions = rotary = encoder_bias = decoder_bias = None
        if config.positional == "sinusoidal":
            source_positions = target_positions = SinusoidalPositionalEncoding(d, config.max_length)
        elif config.positional == "learned":
            source_positions = LearnedPositionalEmbedding(config.max_length, d, rngs=rngs)
            target_positions = LearnedPositionalEmbedding(config.max_length, d, rngs=rngs)
        elif config.positional == "rotary":
            rotary = RotaryEmbedding(config.head_dim, config.max_length)
        elif config.positional == "relative":
            encoder_bias = RelativePositionBias(
                config.n_heads, config.relative_buckets, config.relative_max_distance, bidirectional=True, rngs=rngs
            )
            decoder_bias = RelativePositionBias(
                config.n_heads, config.relative_buckets, config.relative_max_distance, bidirectional=False, rngs=rngs
            )
        self.source_positions, self.target_positions = source_positions, target_positions
        self.embedding_dropout = Dropout(config.dropout, rngs=rngs)
        final_norm = config.use_final_norm
        self.encoder = Encoder(config, config.n_encoder_layers, final_norm, rotary, encoder_bias, rngs=rngs)
        self.decoder = Decoder(config, config.n_decoder_layers, final_norm, rotary, decoder_bias, rngs=rngs)
        self.output_projection = Linear(d, config.target_vocab_size, bias=False, rngs=rngs)
        self.reset_parameters(rngs=rngs)
        # The names torch's state dict gives one shared matrix.
        if config.share_embeddings:
            shared = ["source_embedding.weight", "target_embedding.weight"]
        else:
            shared = ["target_embedding.weight"]
        if config.tie_output:
            self.output_projection.weight = self.target_embedding.weight
            shared.append("output_projection.weight")
        self.tied_weights = tie(*shared)

    def reset_parameters(self, *, rngs: nnx.Rngs) -> None:
        """Glorot-uniform matrices (as torch.nn.Transformer); embeddings N(0, d^-1/2); biases zero.

        The embedding scale makes embedding * sqrt(d_model) unit-variance, the same
        size as the sinusoids it is added to. A shared matrix is an embedding by any of its names.
        """
        names = every_name(self)
        for name, param in parameters(self).items():
            shape = param[...].shape
            if len(shape) == 2 and any("embedding" in every for every in names[name]):
                param[...] = jax.random.normal(rngs.params(), shape, jnp.float32) * self.config.d_model**-0.5
            elif len(shape) > 1:
                param[...] = _xavier_uniform(rngs.params(), shape)
            elif name.endswith("bias"):
                param[...] = jnp.zeros(shape, jnp.float32)

    def _embed(self, embedding: Embedding, positions: Optional[nnx.Module], ids: jax.Array,
               offset: Offset = 0) -> jax.Array:
        x = embedding(ids) * math.sqrt(self.config.d_model)  # (b, n, d), §3.4
        if positions is not None:
            x = positions(x, offset)  # §3.5
        return self.embedding_dropout(x)

    def source_padding(self, source: jax.Array) -> jax.Array:
        """(b, m) True at real source tokens."""
        return jnp.asarray(source) != self.config.pad_id

    def encode(self, source: jax.Array, source_padding: Optional[jax.Array] = None) -> jax.Array:
        """source ids (b, m) -> memory (b, m, d)."""
        source_padding = self.source_padding(source) if source_padding is None else jnp.asarray(source_padding)
        x = self._embed(self.source_embedding, self.source_positions, jnp.asarray(source))
        return self.encoder(x, key_padding_to_attention_mask(source_padding))

    def decode(
        self,
        target: jax.Array,
        memory: jax.Array,
        source_padding: jax.Array,
        target_padding: Optional[jax.Array] = None,
        cache: Optional[DecoderCache] = None,
    ) -> jax.Array:
        """target ids (b, n) and memory (b, m, d) -> logits (b, n, v).

        With a ``cache``, ``target`` holds only the new tokens; the decoder attends to
        the cached ones too. ``target_padding`` (b, n) marks real target tokens
        (None: all real); causality is always applied.
        """
        offset = cache.length if cache is not None else 0
        x = self._embed(self.target_embedding, self.target_positions, jnp.asarray(target), offset)
        self_mask = key_padding_to_attention_mask(jnp.asarray(target_padding)) if target_padding is not None else None
        memory_mask = key_padding_to_attention_mask(jnp.asarray(source_padding))
        x = self.decoder(x, memory, self_mask, memory_mask, cache)
        return self.output_projection(x)

    def __call__(self, source: jax.Array, target: jax.Array) -> jax.Array:
        """Teacher forcing: source (b, m), target input (b, n) -> logits (b, n, v)."""
        source, target = jnp.asarray(source), jnp.asarray(target)
        source_padding = self.source_padding(source)
        memory = self.encode(source, source_padding)
        return self.decode(target, memory, source_padding, target != self.config.pad_id)

    def new_cache(self, capacity: Optional[int] = None) -> DecoderCache:
        """An empty KV cache; with ``capacity`` (the most target tokens to decode), a fixed-size
        one that decoding under ``nnx.jit`` compiles once for (:meth:`DecoderCache.empty`)."""
        return DecoderCache.empty(len(self.decoder.layers), capacity)
