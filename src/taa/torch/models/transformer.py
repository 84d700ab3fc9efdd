"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017).

    source ids -> embedding * sqrt(d_model) + positions -> Encoder -> memory
    target ids -> embedding * sqrt(d_model) + positions -> Decoder(memory) -> linear -> logits

§3.4: the embeddings are multiplied by sqrt(d_model); the source embedding, target
embedding and pre-softmax projection may share one matrix (configurable).
§5.4: dropout on the sums of embeddings and positional encodings.

Notation: ``b`` batch, ``m`` source length, ``n`` target length, ``d`` d_model, ``v`` vocabulary.
"""

from __future__ import annotations

import math
from typing import Optional

from torch import Tensor, nn

from taa.config import TransformerConfig
from taa.torch.attention import key_padding_to_attention_mask
from taa.torch.blocks import Decoder, DecoderCache, Encoder
from taa.torch.dropout import Dropout
from taa.torch.positional import (
    LearnedPositionalEmbedding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)


class Transformer(nn.Module):
    """Encoder-decoder Transformer; ``forward(source, target)`` gives next-token logits."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.source_embedding = nn.Embedding(config.source_vocab_size, d)
        self.target_embedding = (
            self.source_embedding if config.share_embeddings else nn.Embedding(config.target_vocab_size, d)
        )
        # Absolute positions are added to the embeddings; rotary and relative ones live in attention.
        self.source_positions = self.target_positions = None
        rotary = encoder_bias = decoder_bias = None
        if config.positional == "sinusoidal":
            self.source_positions = self.target_positions = SinusoidalPositionalEncoding(d, config.max_length)
        elif config.positional == "learned":
            self.source_positions = LearnedPositionalEmbedding(config.max_length, d)
            self.target_positions = LearnedPositionalEmbedding(config.max_length, d)
        elif config.positional == "rotary":
            rotary = RotaryEmbedding(config.head_dim, config.max_length)
        elif config.positional == "relative":
            encoder_bias = RelativePositionBias(
                config.n_heads, config.relative_buckets, config.relative_max_distance, bidirectional=True
            )
            decoder_bias = RelativePositionBias(
                config.n_heads, config.relative_buckets, config.relative_max_distance, bidirectional=False
            )
        self.embedding_dropout = Dropout(config.dropout)
        final_norm = config.use_final_norm
        self.encoder = Encoder(config, config.n_encoder_layers, final_norm, rotary, encoder_bias)
        self.decoder = Decoder(config, config.n_decoder_layers, final_norm, rotary, decoder_bias)
        self.output_projection = nn.Linear(d, config.target_vocab_size, bias=False)
        self.reset_parameters()
        if config.tie_output:
            self.output_projection.weight = self.target_embedding.weight

    def reset_parameters(self) -> None:
        """Glorot-uniform matrices (as torch.nn.Transformer); embeddings N(0, d^-1/2).

        The embedding scale makes embedding * sqrt(d_model) unit-variance, the same
        size as the sinusoids it is added to.
        """
        for name, parameter in self.named_parameters():
            if "embedding" in name and parameter.dim() == 2:
                nn.init.normal_(parameter, mean=0.0, std=self.config.d_model**-0.5)
            elif parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
            elif name.endswith("bias"):
                nn.init.zeros_(parameter)

    def _embed(self, embedding: nn.Embedding, positions: Optional[nn.Module], ids: Tensor, offset: int = 0) -> Tensor:
        x = embedding(ids) * math.sqrt(self.config.d_model)  # (b, n, d), §3.4
        if positions is not None:
            x = positions(x, offset)  # §3.5
        return self.embedding_dropout(x)

    def source_padding(self, source: Tensor) -> Tensor:
        """(b, m) True at real source tokens."""
        return source != self.config.pad_id

    def encode(self, source: Tensor, source_padding: Optional[Tensor] = None) -> Tensor:
        """source ids (b, m) -> memory (b, m, d)."""
        source_padding = self.source_padding(source) if source_padding is None else source_padding
        x = self._embed(self.source_embedding, self.source_positions, source)
        return self.encoder(x, key_padding_to_attention_mask(source_padding))

    def decode(
        self,
        target: Tensor,
        memory: Tensor,
        source_padding: Tensor,
        target_padding: Optional[Tensor] = None,
        cache: Optional[DecoderCache] = None,
    ) -> Tensor:
        """target ids (b, n) and memory (b, m, d) -> logits (b, n, v).

        With a ``cache``, ``target`` holds only the new tokens; the decoder attends to
        the cached ones too. ``target_padding`` (b, n) marks real target tokens
        (None: all real); causality is always applied.
        """
        offset = cache.length if cache is not None else 0
        x = self._embed(self.target_embedding, self.target_positions, target, offset)
        self_mask = key_padding_to_attention_mask(target_padding) if target_padding is not None else None
        memory_mask = key_padding_to_attention_mask(source_padding)
        x = self.decoder(x, memory, self_mask, memory_mask, cache)
        return self.output_projection(x)

    def forward(self, source: Tensor, target: Tensor) -> Tensor:
        """Teacher forcing: source (b, m), target input (b, n) -> logits (b, n, v)."""
        source_padding = self.source_padding(source)
        memory = self.encode(source, source_padding)
        return self.decode(target, memory, source_padding, target != self.config.pad_id)

    def new_cache(self) -> DecoderCache:
        return DecoderCache.empty(len(self.decoder.layers))

    def num_parameters(self) -> int:
        """Distinct parameters (a shared embedding counts once)."""
        return sum(p.numel() for p in self.parameters())

    def parameter_breakdown(self) -> dict[str, int]:
        """Parameters per top-level component; shared tensors count once, where first seen."""
        seen: set[int] = set()
        counts: dict[str, int] = {}
        for name, parameter in self.named_parameters(remove_duplicate=False):
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            component = name.split(".")[0]
            counts[component] = counts.get(component, 0) + parameter.numel()
        return counts

