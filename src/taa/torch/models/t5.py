"""T5, the "Text-to-Text Transfer Transformer" (Raffel et al. 2020), built from taa's blocks.

    input ids  -> shared embedding -> dropout -> Encoder (pre-norm, RMSNorm, relative bias) -> dropout -> memory
    target ids -> shared embedding -> dropout -> Decoder(memory)                             -> dropout
               -> (* d_model**-0.5 when tied, v1.0) -> lm_head -> logits

What differs from "Attention Is All You Need" (T5 paper §2.1 "Model"):
- Layer norm without mean or bias (RMSNorm), placed at each sub-layer's input (pre-norm),
  one more after each stack; no biases in any projection.
- No absolute positions and no sqrt(d_model) embedding scale. Instead a learned scalar per
  head and per bucket of relative distance (key - query) is added to the attention logits;
  the first layer of each stack owns the table and every layer of the stack reuses the
  bias (Hugging Face: ``block.0...relative_attention_bias``). The decoder's buckets are
  one-directional. Cross-attention has no position bias.
- No 1/sqrt(d_k) scaling in attention (the initialisation of W^Q absorbs it).
- One embedding matrix shared by encoder and decoder. v1.0 also uses it as the output
  layer, on the decoder output times d_model**-0.5; v1.1 has its own output layer and
  no rescaling, and a gated-GELU feed-forward (Shazeer 2020) instead of ReLU.

The decoding functions of :mod:`taa.torch.generate` (greedy, beam search) run on this
model unchanged: it has the same ``encode``, ``decode``, ``new_cache`` and
``source_padding`` as :class:`taa.torch.models.transformer.Transformer`.

Notation: ``b`` batch, ``m`` source length, ``n`` target length, ``d`` d_model, ``v`` vocabulary.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from taa.config import T5Config
from taa.torch.attention import MultiHeadAttention, key_padding_to_attention_mask
from taa.torch.blocks import Decoder, DecoderCache, Encoder
from taa.torch.dropout import Dropout
from taa.torch.feedforward import PositionwiseFeedForward
from taa.torch.models.transformer import Transformer
from taa.torch.positional import RelativePositionBias


def shift_right(labels: Tensor, decoder_start_id: int, pad_id: int, ignore_index: int = -100) -> Tensor:
    """Teacher forcing's decoder input: (b, n) labels -> (b, n) = [start, labels[:-1]].

    Label positions set to ``ignore_index`` (left out of the loss) become ``pad_id``.
    """
    shifted = labels.new_full(labels.shape, decoder_start_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == ignore_index, pad_id)


class T5ForConditionalGeneration(nn.Module):
    """T5 encoder-decoder with a language-modelling head.

    ``model(input_ids, decoder_input_ids, attention_mask=None)`` -> logits (b, n, v).
    As in Hugging Face, ``attention_mask`` (b, m) is 1 at real input tokens and None
    means "all real"; the pad id is not read from the ids here (T5's decoder starts
    with the pad id). The decoding helpers use :meth:`source_padding` (ids != pad_id).
    """

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.shared = nn.Embedding(config.vocab_size, d)  # one table for encoder, decoder (and v1.0's head)
        # §2.1: the relative bias is computed in the first layer and shared by the stack's layers.
        encoder_bias = RelativePositionBias(
            config.n_heads, config.relative_buckets, config.relative_max_distance, bidirectional=True
        )
        decoder_bias = RelativePositionBias(
            config.n_heads, config.relative_buckets, config.relative_max_distance, bidirectional=False
        )
        # T5 does not scale the logits by 1/sqrt(d_k): attention_scale=1.0.
        self.encoder = Encoder(
            config, config.n_encoder_layers, final_norm=True, relative_bias=encoder_bias, attention_scale=1.0
        )
        self.decoder = Decoder(
            config, config.n_decoder_layers, final_norm=True, relative_bias=decoder_bias, attention_scale=1.0
        )
        self.dropout = Dropout(config.dropout)  # on the embeddings and on each stack's output
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.reset_parameters()
        if config.tie_word_embeddings:
            self.lm_head.weight = self.shared.weight

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """T5's initialisation (Mesh TensorFlow, as Hugging Face does it with factor 1):
        normal with std 1 for the embedding, fan-in scaled for every projection, with the
        1/sqrt(d_k) that attention leaves out folded into W^Q; norms start at 1."""
        config = self.config
        d, inner = config.d_model, config.n_heads * config.d_kv
        nn.init.normal_(self.shared.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=1.0)
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                nn.init.normal_(module.q_proj.weight, std=(d * config.d_kv) ** -0.5)
                nn.init.normal_(module.k_proj.weight, std=d**-0.5)
                nn.init.normal_(module.v_proj.weight, std=d**-0.5)
                nn.init.normal_(module.out_proj.weight, std=inner**-0.5)
            elif isinstance(module, PositionwiseFeedForward):
                nn.init.normal_(module.w1.weight, std=d**-0.5)
                if module.gate is not None:
                    nn.init.normal_(module.gate.weight, std=d**-0.5)
                nn.init.normal_(module.w2.weight, std=config.d_ff**-0.5)
            elif isinstance(module, RelativePositionBias):
                nn.init.normal_(module.embedding.weight, std=d**-0.5)
        for name, parameter in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(parameter)

    # ----------------------------------------------------------------------------------
    # The interface of taa.torch.generate: encode, decode, new_cache, source_padding
    # ----------------------------------------------------------------------------------

    def source_padding(self, source: Tensor) -> Tensor:
        """(b, m) True at real input tokens (ids != pad_id)."""
        return source != self.config.pad_id

    def encode(self, source: Tensor, source_padding: Optional[Tensor] = None) -> Tensor:
        """input ids (b, m) -> memory (b, m, d); ``source_padding`` (b, m) True at real tokens."""
        x = self.dropout(self.shared(source))  # (b, m, d): no sqrt(d) scale, no positions
        mask = key_padding_to_attention_mask(source_padding) if source_padding is not None else None
        return self.dropout(self.encoder(x, mask))  # final RMSNorm inside the stack, then dropout

    def decode(
        self,
        target: Tensor,
        memory: Tensor,
        source_padding: Optional[Tensor] = None,
        target_padding: Optional[Tensor] = None,
        cache: Optional[DecoderCache] = None,
    ) -> Tensor:
        """decoder ids (b, n) and memory (b, m, d) -> logits (b, n, v).

        With a ``cache`` only the new tokens are given; their self-attention sees the cached
        keys, and the cross-attention keys and values of ``memory`` are computed once, at
        the first step. Causality is always applied; ``target_padding`` (b, n) masks keys.
        """
        x = self.dropout(self.shared(target))  # (b, n, d)
        self_mask = key_padding_to_attention_mask(target_padding) if target_padding is not None else None
        memory_mask = key_padding_to_attention_mask(source_padding) if source_padding is not None else None
        x = self.dropout(self.decoder(x, memory, self_mask, memory_mask, cache))  # (b, n, d)
        if self.config.scale_output:
            x = x * self.config.d_model**-0.5  # v1.0: rescale before the tied output layer
        return self.lm_head(x)  # (b, n, v)

    def forward(
        self,
        input_ids: Tensor,
        decoder_input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        decoder_attention_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """Teacher forcing: input ids (b, m), decoder input ids (b, n) -> logits (b, n, v).

        ``attention_mask`` (b, m) and ``decoder_attention_mask`` (b, n): 1 (or True) at
        real tokens; None: every token is real.
        """
        source_padding = attention_mask.bool() if attention_mask is not None else None
        target_padding = decoder_attention_mask.bool() if decoder_attention_mask is not None else None
        memory = self.encode(input_ids, source_padding)
        return self.decode(decoder_input_ids, memory, source_padding, target_padding)

    def new_cache(self) -> DecoderCache:
        return DecoderCache.empty(len(self.decoder.layers))

    def shift_right(self, labels: Tensor) -> Tensor:
        """Decoder input ids for training on ``labels`` (b, n): the start id, then labels[:-1]."""
        return shift_right(labels, self.config.decoder_start_id, self.config.pad_id)

    # ----------------------------------------------------------------------------------
    # Sizes
    # ----------------------------------------------------------------------------------

    # Distinct parameters (the tied output layer counts once), and per top-level component.
    num_parameters = Transformer.num_parameters
    parameter_breakdown = Transformer.parameter_breakdown
