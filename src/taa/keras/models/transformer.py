"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017),
the Keras twin of :mod:`taa.torch.models.transformer`.

    source ids -> embedding * sqrt(d_model) + positions -> Encoder -> memory
    target ids -> embedding * sqrt(d_model) + positions -> Decoder(memory) -> linear -> logits

§3.4: the embeddings are multiplied by sqrt(d_model); the source embedding, target
embedding and pre-softmax projection may share one matrix (configurable).
§5.4: dropout on the sums of embeddings and positional encodings.

Also here, for every taa Keras model: :class:`ConfigModel` (built from a config
dataclass, saved and loaded by Keras, sized by :meth:`~ConfigModel.num_parameters`) and
:class:`TiedLinear` (§3.4's pre-softmax projection that reuses an embedding matrix).

Notation: ``b`` batch, ``m`` source length, ``n`` target length, ``d`` d_model, ``v`` vocabulary.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Optional

import keras
import numpy as np
from keras import ops

from taa.config import TransformerConfig
from taa.config.recipe import model_config_from_dict, model_config_to_dict
from taa.keras.attention import key_padding_to_attention_mask
from taa.keras.base import build_sublayers
from taa.keras.blocks import Decoder, DecoderCache, Encoder
from taa.keras.dropout import Dropout
from taa.keras.positional import (
    LearnedPositionalEmbedding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)
from taa.keras.weights import ensure_built, named_layers, variables

# --------------------------------------------------------------------------------------
# What every taa Keras model shares
# --------------------------------------------------------------------------------------


class ConfigModel(keras.Model):
    """A taa model built from its config dataclass (``self.config``).

    ``get_config`` stores the config as :func:`~taa.config.recipe.model_config_to_dict`
    writes it, plus :attr:`build_options`; ``build`` creates every weight (a subclass
    builds its sublayers there), so ``model.save`` / ``keras.models.load_model`` and
    :mod:`taa.keras.weights` see them all after one call on :meth:`dummy_inputs`.

    Mixed precision: a subclass creates every sublayer with ``dtype=self.dtype_policy``, so
    ``Model(config, dtype="mixed_bfloat16")`` computes in bfloat16 throughout and keeps its
    variables in float32, as the global policy would.
    """

    config: Any

    @property
    def build_options(self) -> dict[str, Any]:
        """What the constructor takes beside the config, to build this model again."""
        return {}

    def dummy_inputs(self) -> tuple:
        """The positional arguments of a tiny call that builds the model: token ids (1, 2) for
        each argument ``call`` requires (the ids of GPT and BERT; source and target of the
        encoder-decoders)."""
        required = [
            parameter for parameter in inspect.signature(self.call).parameters.values()
            if parameter.default is parameter.empty and parameter.kind is parameter.POSITIONAL_OR_KEYWORD
        ]
        return tuple(np.zeros((1, 2), dtype="int32") for _ in required)

    def get_config(self) -> dict:
        return {**super().get_config(), "config": model_config_to_dict(self.config), **self.build_options}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(model_config_from_dict(config.pop("config")), **config)

    def get_build_config(self) -> Optional[dict]:
        return {"dummy_inputs": True} if self.built else None

    def build_from_config(self, config: dict) -> None:
        ensure_built(self)  # one tiny call creates every weight

    def num_parameters(self) -> int:
        """Distinct parameters (a shared embedding counts once), as torch counts them; builds the
        model first if need be."""
        return sum(self.parameter_breakdown().values())

    def parameter_breakdown(self) -> dict[str, int]:
        """Parameters per top-level component; shared weights count once, where first seen."""
        counts: dict[str, int] = {}
        for name, (variable, _) in variables(ensure_built(self)).items():
            component = name.split(".")[0]
            counts[component] = counts.get(component, 0) + int(np.prod(variable.shape))
        return counts


@keras.saving.register_keras_serializable(package="taa")
class TiedLinear(keras.layers.Layer):
    """x E^T (+ b): a linear map whose weight is the matrix E of an embedding elsewhere in
    the model (§3.4: "we share the same weight matrix between the two embedding layers and
    the pre-softmax linear transformation").

    The embedding stays where it lives (Keras does not track it here, so it is saved once);
    the model declares the alias in its ``tied_weights``, so the state dict carries it under
    this layer's name too, as torch's does. ``bias=True`` gives the layer a bias of its own
    (BERT's masked-LM decoder). ``get_config`` cannot hold the embedding: the model that
    owns both builds this layer again.
    """

    def __init__(self, embedding: keras.layers.Embedding, bias: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        object.__setattr__(self, "_embedding", embedding)  # untracked: its weight belongs to its owner
        self.use_bias = bias

    def build(self, input_shape=None) -> None:
        build_sublayers(None, self._embedding)
        vocabulary = self._embedding.input_dim
        self.bias = self.add_weight(name="bias", shape=(vocabulary,), initializer="zeros") if self.use_bias else None
        self.built = True

    def call(self, x):  # (.., d) -> (.., v)
        logits = ops.matmul(x, ops.transpose(ops.cast(self._embedding.embeddings, x.dtype)))
        return logits + ops.cast(self.bias, x.dtype) if self.bias is not None else logits

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self._embedding.input_dim)

    def get_config(self) -> dict:
        return {**super().get_config(), "bias": self.use_bias}


_VARIABLE_OF = {"kernel_initializer": "kernel", "bias_initializer": "bias", "embeddings_initializer": "embeddings"}


def set_initializer(layer: keras.layers.Layer, attribute: str, initializer) -> None:
    """Give a Dense (``kernel_initializer``, ``bias_initializer``) or an Embedding
    (``embeddings_initializer``) a new initializer; a layer already built is drawn again now."""
    setattr(layer, attribute, initializer)
    variable = getattr(layer, _VARIABLE_OF[attribute], None) if layer.built else None
    if variable is not None:
        variable.assign(initializer(tuple(variable.shape), variable.dtype))


# --------------------------------------------------------------------------------------
# The Transformer
# --------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="taa")
class Transformer(ConfigModel):
    """Encoder-decoder Transformer; ``model(source, target)`` gives next-token logits.

    >>> model = Transformer(taa.config.preset("vaswani-tiny"))
    >>> logits = model(np.array([[5, 6, 7]]), np.array([[1, 8]]))  # (1, 2, 50)
    """

    def __init__(self, config: TransformerConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        d, dtype = config.d_model, self.dtype_policy
        self.source_embedding = keras.layers.Embedding(
            config.source_vocab_size, d, name="source_embedding", dtype=dtype
        )
        self.target_embedding = (
            self.source_embedding
            if config.share_embeddings
            else keras.layers.Embedding(config.target_vocab_size, d, name="target_embedding", dtype=dtype)
        )
        # Absolute positions are added to the embeddings; rotary and relative ones live in attention.
        self.source_positions = self.target_positions = None
        rotary = encoder_bias = decoder_bias = None
        if config.positional == "sinusoidal":
            self.source_positions = self.target_positions = SinusoidalPositionalEncoding(
                d, config.max_length, dtype=dtype
            )
        elif config.positional == "learned":
            self.source_positions = LearnedPositionalEmbedding(
                config.max_length, d, name="source_positions", dtype=dtype
            )
            self.target_positions = LearnedPositionalEmbedding(
                config.max_length, d, name="target_positions", dtype=dtype
            )
        elif config.positional == "rotary":
            rotary = RotaryEmbedding(config.head_dim, config.max_length, dtype=dtype)
        elif config.positional == "relative":
            encoder_bias = RelativePositionBias(
                config.n_heads, config.relative_buckets, config.relative_max_distance, bidirectional=True, dtype=dtype
            )
            decoder_bias = RelativePositionBias(
                config.n_heads, config.relative_buckets, config.relative_max_distance, bidirectional=False, dtype=dtype
            )
        self.embedding_dropout = Dropout(config.dropout, name="embedding_dropout", dtype=dtype)
        final_norm = config.use_final_norm
        self.encoder = Encoder(
            config, config.n_encoder_layers, final_norm, rotary, encoder_bias, name="encoder", dtype=dtype
        )
        self.decoder = Decoder(
            config, config.n_decoder_layers, final_norm, rotary, decoder_bias, name="decoder", dtype=dtype
        )
        if config.tie_output:
            self.output_projection = TiedLinear(self.target_embedding, name="output_projection", dtype=dtype)
        else:
            self.output_projection = keras.layers.Dense(
                config.target_vocab_size, use_bias=False, name="output_projection", dtype=dtype
            )
        # The names torch's state dict gives a shared matrix beside its first: alias -> that first name.
        root = "source_embedding.weight" if config.share_embeddings else "target_embedding.weight"
        shared = {"target_embedding.weight": config.share_embeddings, "output_projection.weight": config.tie_output}
        self.tied_weights = {alias: root for alias, is_shared in shared.items() if is_shared}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform matrices (as torch.nn.Transformer); embeddings N(0, d^-1/2), biases zero.

        The embedding scale makes embedding * sqrt(d_model) unit-variance, the same
        size as the sinusoids it is added to. (Initializers take effect when the model is
        built; a built model is drawn again.)
        """
        for _, layer in named_layers(self):
            if isinstance(layer, keras.layers.Embedding):
                std = self.config.d_model**-0.5
                set_initializer(layer, "embeddings_initializer", keras.initializers.RandomNormal(stddev=std))
            elif isinstance(layer, keras.layers.Dense):
                set_initializer(layer, "kernel_initializer", keras.initializers.GlorotUniform())
                if layer.use_bias:
                    set_initializer(layer, "bias_initializer", keras.initializers.Zeros())

    def build(self, input_shape=None) -> None:
        build_sublayers(
            (None, None, self.config.d_model),  # (b, n, d)
            self.source_embedding, self.target_embedding, self.source_positions, self.target_positions,
            self.encoder, self.decoder, self.output_projection,
        )
        self.built = True

    def _embed(self, embedding, positions, ids, offset: int = 0, training=None):
        x = embedding(ids) * math.sqrt(self.config.d_model)  # (b, n, d), §3.4
        if positions is not None:
            x = positions(x, offset=offset)  # §3.5
        return self.embedding_dropout(x, training=training)

    def source_padding(self, source):
        """(b, m) True at real source tokens."""
        return ops.not_equal(source, self.config.pad_id)

    def encode(self, source, source_padding=None, training=None):
        """source ids (b, m) -> memory (b, m, d)."""
        source_padding = self.source_padding(source) if source_padding is None else source_padding
        x = self._embed(self.source_embedding, self.source_positions, source, training=training)
        return self.encoder(x, key_padding_to_attention_mask(source_padding), training=training)

    def decode(
        self,
        target,
        memory,
        source_padding,
        target_padding=None,
        cache: Optional[DecoderCache] = None,
        training=None,
    ):
        """target ids (b, n) and memory (b, m, d) -> logits (b, n, v).

        With a ``cache``, ``target`` holds only the new tokens; the decoder attends to
        the cached ones too. ``target_padding`` (b, n) marks real target tokens
        (None: all real); causality is always applied.
        """
        offset = cache.length if cache is not None else 0
        x = self._embed(self.target_embedding, self.target_positions, target, offset, training=training)
        self_mask = key_padding_to_attention_mask(target_padding) if target_padding is not None else None
        memory_mask = key_padding_to_attention_mask(source_padding)
        x = self.decoder(x, memory, self_mask, memory_mask, cache=cache, training=training)
        return self.output_projection(x)

    def call(self, source, target, training=None):
        """Teacher forcing: source (b, m), target input (b, n) -> logits (b, n, v)."""
        source_padding = self.source_padding(source)
        memory = self.encode(source, source_padding, training=training)
        return self.decode(target, memory, source_padding, ops.not_equal(target, self.config.pad_id), training=training)

    def new_cache(self) -> DecoderCache:
        return DecoderCache.empty(len(self.decoder.layers))
