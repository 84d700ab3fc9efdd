"""T5, the "Text-to-Text Transfer Transformer" (Raffel et al. 2020), built from taa's
blocks; the Keras twin of :mod:`taa.torch.models.t5`.

    input ids  -> shared embedding -> dropout -> Encoder (pre-norm, RMSNorm, relative bias) -> dropout -> memory
    target ids -> shared embedding -> dropout -> Decoder(memory)                             -> dropout
               -> (* d_model**-0.5 when tied, v1.0) -> lm_head -> logits

What differs from "Attention Is All You Need" (T5 paper §2.1 "Model"):
- Layer norm without mean or bias (RMSNorm), placed at each sub-layer's input (pre-norm),
  one more after each stack; no biases in any projection.
- No absolute positions and no sqrt(d_model) embedding scale. Instead a learned scalar per
  head and per bucket of relative distance (key - query) is added to the attention logits;
  the first layer of each stack owns the table and every layer of the stack reuses the
  bias. The decoder's buckets are one-directional. Cross-attention has no position bias.
- No 1/sqrt(d_k) scaling in attention (the initialisation of W^Q absorbs it).
- One embedding matrix shared by encoder and decoder. v1.0 also uses it as the output
  layer, on the decoder output times d_model**-0.5; v1.1 has its own output layer and
  no rescaling, and a gated-GELU feed-forward (Shazeer 2020) instead of ReLU.

It has the same ``encode``, ``decode``, ``new_cache`` and ``source_padding`` as
:class:`taa.keras.models.transformer.Transformer`, so the same decoding functions run on it.

Notation: ``b`` batch, ``m`` source length, ``n`` target length, ``d`` d_model, ``v`` vocabulary.
"""

from __future__ import annotations

from typing import Optional

import keras
from keras import ops

from taa.config import T5Config
from taa.keras.attention import MultiHeadAttention, key_padding_to_attention_mask
from taa.keras.base import build_sublayers
from taa.keras.blocks import Decoder, DecoderCache, Encoder
from taa.keras.dropout import Dropout
from taa.keras.feedforward import PositionwiseFeedForward
from taa.keras.models.transformer import ConfigModel, TiedLinear, set_initializer
from taa.keras.norm import LayerNorm, RMSNorm
from taa.keras.positional import RelativePositionBias
from taa.keras.weights import named_layers


def shift_right(labels, decoder_start_id: int, pad_id: int, ignore_index: int = -100):
    """Teacher forcing's decoder input: (b, n) labels -> (b, n) = [start, labels[:-1]].

    Label positions set to ``ignore_index`` (left out of the loss) become ``pad_id``.
    """
    labels = ops.convert_to_tensor(labels)
    start = ops.full_like(labels[:, :1], decoder_start_id)  # (b, 1)
    shifted = ops.concatenate([start, labels[:, :-1]], axis=1)  # (b, n)
    return ops.where(ops.equal(shifted, ignore_index), ops.full_like(shifted, pad_id), shifted)


def _normal(std: float) -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(stddev=std)


@keras.saving.register_keras_serializable(package="taa")
class T5ForConditionalGeneration(ConfigModel):
    """T5 encoder-decoder with a language-modelling head.

    ``model(input_ids, decoder_input_ids, attention_mask=None)`` -> logits (b, n, v).
    As in Hugging Face, ``attention_mask`` (b, m) is 1 at real input tokens and None
    means "all real"; the pad id is not read from the ids here (T5's decoder starts
    with the pad id). The decoding helpers use :meth:`source_padding` (ids != pad_id).
    """

    def __init__(self, config: T5Config, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        d, dtype = config.d_model, self.dtype_policy
        # one table for encoder, decoder (and v1.0's head)
        self.shared = keras.layers.Embedding(config.vocab_size, d, name="shared", dtype=dtype)
        # §2.1: the relative bias is computed in the first layer and shared by the stack's layers.
        encoder_bias = RelativePositionBias(
            config.n_heads, config.relative_buckets, config.relative_max_distance, bidirectional=True, dtype=dtype
        )
        decoder_bias = RelativePositionBias(
            config.n_heads, config.relative_buckets, config.relative_max_distance, bidirectional=False, dtype=dtype
        )
        # T5 does not scale the logits by 1/sqrt(d_k): attention_scale=1.0.
        self.encoder = Encoder(
            config, config.n_encoder_layers, final_norm=True, relative_bias=encoder_bias, attention_scale=1.0,
            name="encoder", dtype=dtype,
        )
        self.decoder = Decoder(
            config, config.n_decoder_layers, final_norm=True, relative_bias=decoder_bias, attention_scale=1.0,
            name="decoder", dtype=dtype,
        )
        # on the embeddings and on each stack's output
        self.dropout = Dropout(config.dropout, name="dropout", dtype=dtype)
        if config.tie_word_embeddings:
            self.lm_head = TiedLinear(self.shared, name="lm_head", dtype=dtype)
            self.tied_weights = {"lm_head.weight": "shared.weight"}
        else:
            self.lm_head = keras.layers.Dense(config.vocab_size, use_bias=False, name="lm_head", dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """T5's initialisation (Mesh TensorFlow, as Hugging Face does it with factor 1):
        normal with std 1 for the embedding, fan-in scaled for every projection, with the
        1/sqrt(d_k) that attention leaves out folded into W^Q; norms start at 1."""
        config = self.config
        d, inner = config.d_model, config.n_heads * config.d_kv
        set_initializer(self.shared, "embeddings_initializer", _normal(1.0))
        if isinstance(self.lm_head, keras.layers.Dense):
            set_initializer(self.lm_head, "kernel_initializer", _normal(1.0))
        for _, layer in named_layers(self):
            if isinstance(layer, MultiHeadAttention):
                set_initializer(layer.q_proj, "kernel_initializer", _normal((d * config.d_kv) ** -0.5))
                set_initializer(layer.k_proj, "kernel_initializer", _normal(d**-0.5))
                set_initializer(layer.v_proj, "kernel_initializer", _normal(d**-0.5))
                set_initializer(layer.out_proj, "kernel_initializer", _normal(inner**-0.5))
            elif isinstance(layer, PositionwiseFeedForward):
                set_initializer(layer.w1, "kernel_initializer", _normal(d**-0.5))
                if layer.gate is not None:
                    set_initializer(layer.gate, "kernel_initializer", _normal(d**-0.5))
                set_initializer(layer.w2, "kernel_initializer", _normal(config.d_ff**-0.5))
            elif isinstance(layer, RelativePositionBias):
                set_initializer(layer.embedding, "embeddings_initializer", _normal(d**-0.5))
            elif isinstance(layer, (LayerNorm, RMSNorm)) and layer.built:
                layer.weight.assign(ops.ones_like(layer.weight))  # (built or not, norms start at 1)

    def build(self, input_shape=None) -> None:
        build_sublayers((None, None, self.config.d_model), self.shared, self.encoder, self.decoder, self.lm_head)
        self.built = True

    # ----------------------------------------------------------------------------------
    # The interface of the decoding functions: encode, decode, new_cache, source_padding
    # ----------------------------------------------------------------------------------

    def source_padding(self, source):
        """(b, m) True at real input tokens (ids != pad_id)."""
        return ops.not_equal(source, self.config.pad_id)

    def encode(self, source, source_padding=None, training=None):
        """input ids (b, m) -> memory (b, m, d); ``source_padding`` (b, m) True at real tokens."""
        x = self.dropout(self.shared(source), training=training)  # (b, m, d): no sqrt(d) scale, no positions
        mask = key_padding_to_attention_mask(source_padding) if source_padding is not None else None
        return self.dropout(self.encoder(x, mask, training=training), training=training)  # final RMSNorm, dropout

    def decode(
        self,
        target,
        memory,
        source_padding=None,
        target_padding=None,
        cache: Optional[DecoderCache] = None,
        training=None,
    ):
        """decoder ids (b, n) and memory (b, m, d) -> logits (b, n, v).

        With a ``cache`` only the new tokens are given; their self-attention sees the cached
        keys, and the cross-attention keys and values of ``memory`` are computed once, at
        the first step. Causality is always applied; ``target_padding`` (b, n) masks keys.
        """
        x = self.dropout(self.shared(target), training=training)  # (b, n, d)
        self_mask = key_padding_to_attention_mask(target_padding) if target_padding is not None else None
        memory_mask = key_padding_to_attention_mask(source_padding) if source_padding is not None else None
        x = self.decoder(x, memory, self_mask, memory_mask, cache=cache, training=training)
        x = self.dropout(x, training=training)  # (b, n, d)
        if self.config.scale_output:
            x = x * self.config.d_model**-0.5  # v1.0: rescale before the tied output layer
        return self.lm_head(x)  # (b, n, v)

    def call(self, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None, training=None):
        """Teacher forcing: input ids (b, m), decoder input ids (b, n) -> logits (b, n, v).

        ``attention_mask`` (b, m) and ``decoder_attention_mask`` (b, n): 1 (or True) at
        real tokens; None: every token is real.
        """
        source_padding = ops.cast(attention_mask, "bool") if attention_mask is not None else None
        target_padding = ops.cast(decoder_attention_mask, "bool") if decoder_attention_mask is not None else None
        memory = self.encode(input_ids, source_padding, training=training)
        return self.decode(decoder_input_ids, memory, source_padding, target_padding, training=training)

    def new_cache(self) -> DecoderCache:
        return DecoderCache.empty(len(self.decoder.layers))

    def shift_right(self, labels):
        """Decoder input ids for training on ``labels`` (b, n): the start id, then labels[:-1]."""
        return shift_right(labels, self.config.decoder_start_id, self.config.pad_id)
