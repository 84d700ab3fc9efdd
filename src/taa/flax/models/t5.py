"""T5, the "Text-to-Text Transfer Transformer" (Raffel et al. 2020), built from taa's
blocks; the Flax NNX twin of :mod:`taa.torch.models.t5`.

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
:class:`taa.flax.models.transformer.Transformer`, so the same decoding functions run on it.

Notation: ``b`` batch, ``m`` source length, ``n`` target length, ``d`` d_model, ``v`` vocabulary.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from taa.config import T5Config
from taa.flax.attention import MultiHeadAttention, key_padding_to_attention_mask
from taa.flax.base import Embedding, Linear
from taa.flax.blocks import Decoder, DecoderCache, Encoder
from taa.flax.dropout import Dropout
from taa.flax.feedforward import PositionwiseFeedForward
from taa.flax.models.transformer import ConfigModel, default_rngs, tie
from taa.flax.positional import RelativePositionBias
from taa.flax.weights import named_modules, parameters


def shift_right(labels: jax.Array, decoder_start_id: int, pad_id: int, ignore_index: int = -100) -> jax.Array:
    """Teacher forcing's decoder input: (b, n) labels -> (b, n) = [start, labels[:-1]].

    Label positions set to ``ignore_index`` (left out of the loss) become ``pad_id``.
    """
    labels = jnp.asarray(labels)
    start = jnp.full_like(labels[:, :1], decoder_start_id)  # (b, 1)
    shifted = jnp.concatenate([start, labels[:, :-1]], axis=1)  # (b, n)
    return jnp.where(shifted == ignore_index, pad_id, shifted)


def _normal(param: nnx.Param, std: float, rngs: nnx.Rngs) -> None:
    param[...] = jax.random.normal(rngs.params(), param[...].shape, jnp.float32) * std


class T5ForConditionalGeneration(ConfigModel):
    """T5 encoder-decoder with a language-modelling head.

    ``model(input_ids, decoder_input_ids, attention_mask=None)`` -> logits (b, n, v).
    As in Hugging Face, ``attention_mask`` (b, m) is 1 at real input tokens and None
    means "all real"; the pad id is not read from the ids here (T5's decoder starts
    with the pad id). The decoding helpers use :meth:`source_padding` (ids != pad_id).
    """

    def __init__(self, config: T5Config, *, rngs: Optional[nnx.Rngs] = None) -> None:
        rngs = default_rngs(rngs)
        self.config = config
        d = config.d_model
        self.shared = Embedding(config.vocab_size, d, rngs=rngs)  # one table for encoder, decoder (and v1.0's head)
        # §2.1: the relative bias is computed in the first layer and shared by the stack's layers.
        encoder_bias = RelativePositionBias(
            config.n_heads, config.relative_buckets, config.relative_max_distance, bidirectional=True, rngs=rngs
        )
        decoder_bias = RelativePositionBias(
            config.n_heads, config.relative_buckets, config.relative_max_distance, bidirectional=False, rngs=rngs
        )
        # T5 does not scale the logits by 1/sqrt(d_k): attention_scale=1.0.
        self.encoder = Encoder(
            config, config.n_encoder_layers, final_norm=True, relative_bias=encoder_bias, attention_scale=1.0,
            rngs=rngs,
        )
        self.decoder = Decoder(
            config, config.n_decoder_layers, final_norm=True, relative_bias=decoder_bias, attention_scale=1.0,
            rngs=rngs,
        )
        self.dropout = Dropout(config.dropout, rngs=rngs)  # on the embeddings and on each stack's output
        self.lm_head = Linear(d, config.vocab_size, bias=False, rngs=rngs)
        self.reset_parameters(rngs=rngs)
        self.tied_weights: dict[str, str] = {}
        if config.tie_word_embeddings:
            self.lm_head.weight = self.shared.weight
            self.tied_weights = tie("shared.weight", "lm_head.weight")

    def reset_parameters(self, *, rngs: nnx.Rngs) -> None:
        """T5's initialisation (Mesh TensorFlow, as Hugging Face does it with factor 1):
        normal with std 1 for the embedding, fan-in scaled for every projection, with the
        1/sqrt(d_k) that attention leaves out folded into W^Q; norms start at 1."""
        config = self.config
        d, inner = config.d_model, config.n_heads * config.d_kv
        _normal(self.shared.weight, 1.0, rngs)
        _normal(self.lm_head.weight, 1.0, rngs)
        for _, module in named_modules(self):
            if isinstance(module, MultiHeadAttention):
                _normal(module.q_proj.weight, (d * config.d_kv) ** -0.5, rngs)
                _normal(module.k_proj.weight, d**-0.5, rngs)
                _normal(module.v_proj.weight, d**-0.5, rngs)
                _normal(module.out_proj.weight, inner**-0.5, rngs)
            elif isinstance(module, PositionwiseFeedForward):
                _normal(module.w1.weight, d**-0.5, rngs)
                if module.gate is not None:
                    _normal(module.gate.weight, d**-0.5, rngs)
                _normal(module.w2.weight, config.d_ff**-0.5, rngs)
            elif isinstance(module, RelativePositionBias):
                _normal(module.embedding.weight, d**-0.5, rngs)
        for name, param in parameters(self).items():
            if name.endswith("norm.weight"):
                param[...] = jnp.ones_like(param[...])

    # ----------------------------------------------------------------------------------
    # The interface of the decoding functions: encode, decode, new_cache, source_padding
    # ----------------------------------------------------------------------------------

    def source_padding(self, source: jax.Array) -> jax.Array:
        """(b, m) True at real input tokens (ids != pad_id)."""
        return jnp.asarray(source) != self.config.pad_id

    def encode(self, source: jax.Array, source_padding: Optional[jax.Array] = None) -> jax.Array:
        """input ids (b, m) -> memory (b, m, d); ``source_padding`` (b, m) True at real tokens."""
        x = self.dropout(self.shared(jnp.asarray(source)))  # (b, m, d): no sqrt(d) scale, no positions
        mask = key_padding_to_attention_mask(jnp.asarray(source_padding)) if source_padding is not None else None
        return self.dropout(self.encoder(x, mask))  # final RMSNorm inside the stack, then dropout

    def decode(
        self,
        target: jax.Array,
        memory: jax.Array,
        source_padding: Optional[jax.Array] = None,
        target_padding: Optional[jax.Array] = None,
        cache: Optional[DecoderCache] = None,
    ) -> jax.Array:
        """decoder ids (b, n) and memory (b, m, d) -> logits (b, n, v).

        With a ``cache`` only the new tokens are given; their self-attention sees the cached
        keys, and the cross-attention keys and values of ``memory`` are computed once, at
        the first step. Causality is always applied; ``target_padding`` (b, n) masks keys.
        """
        x = self.dropout(self.shared(jnp.asarray(target)))  # (b, n, d)
        self_mask = key_padding_to_attention_mask(jnp.asarray(target_padding)) if target_padding is not None else None
        memory_mask = key_padding_to_attention_mask(jnp.asarray(source_padding)) if source_padding is not None else None
        x = self.dropout(self.decoder(x, memory, self_mask, memory_mask, cache))  # (b, n, d)
        if self.config.scale_output:
            x = x * self.config.d_model**-0.5  # v1.0: rescale before the tied output layer
        return self.lm_head(x)  # (b, n, v)

    def __call__(
        self,
        input_ids: jax.Array,
        decoder_input_ids: jax.Array,
        attention_mask: Optional[jax.Array] = None,
        decoder_attention_mask: Optional[jax.Array] = None,
    ) -> jax.Array:
        """Teacher forcing: input ids (b, m), decoder input ids (b, n) -> logits (b, n, v).

        ``attention_mask`` (b, m) and ``decoder_attention_mask`` (b, n): 1 (or True) at
        real tokens; None: every token is real.
        """
        source_padding = jnp.asarray(attention_mask).astype(bool) if attention_mask is not None else None
        target_padding = (
            jnp.asarray(decoder_attention_mask).astype(bool) if decoder_attention_mask is not None else None
        )
        memory = self.encode(input_ids, source_padding)
        return self.decode(decoder_input_ids, memory, source_padding, target_padding)

    def new_cache(self, capacity: Optional[int] = None) -> DecoderCache:
        """An empty KV cache; with ``capacity`` (the most decoder tokens), a fixed-size one that
        decoding under ``nnx.jit`` compiles once for (:meth:`DecoderCache.empty`)."""
        return DecoderCache.empty(len(self.decoder.layers), capacity)

    def shift_right(self, labels: jax.Array) -> jax.Array:
        """Decoder input ids for training on ``labels`` (b, n): the start id, then labels[:-1]."""
        return shift_right(labels, self.config.decoder_start_id, self.config.pad_id)
