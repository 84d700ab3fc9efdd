"""GPT: a decoder-only Transformer language model, in GPT-2's layout.

GPT (Radford et al. 2018, "Improving Language Understanding by Generative
Pre-Training", §3.1) models text left to right with a stack of Transformer decoder
blocks that have no cross-attention:

    h_0 = U W_e + W_p                  token embeddings plus learned position embeddings
    h_l = block(h_{l-1}),  l = 1..N    masked (causal) self-attention, then a feed-forward
    P(u) = softmax(h_N W_e^T)          the output head reuses the token embedding W_e

GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners",
§2.3) moves layer normalisation to the input of each sub-block (pre-norm), adds a
final layer norm after the last block, scales the initial weights of the residual
projections by 1/sqrt(N) for N residual layers, and uses a context of 1024 tokens and
the tanh approximation of GELU.

Relative positions. ``positional="rotary"`` replaces the learned positions with rotary
embeddings of the queries and keys (Su et al. 2021, "RoFormer"; as in GPT-NeoX);
``positional="alibi"`` with a fixed per-head penalty on the logits that grows with the
distance to the key (Press et al. 2022). Attention then depends on the distance between
tokens only, which a small model knows from the first step instead of learning a table.
ALiBi costs nothing per step (it joins the causal mask's addition); the rotations of
queries and keys cost 5-10% of a small model's training step on a CPU. Neither has a
GPT-2 counterpart to convert to.

Built from the shared blocks: a GPT layer is an :class:`~taa.torch.blocks.EncoderLayer`
whose self-attention is causal, and the stack is an :class:`~taa.torch.blocks.Encoder`
with a final norm. Module names map one to one onto Hugging Face's ``GPT2LMHeadModel``
(``taa.convert.hf_gpt2``).

Padding. Prompts of different lengths are batched left-padded, with an
``attention_mask`` (b, k) that is 1 at real tokens. Positions then count from each
row's first real token (``position_ids = cumsum(mask) - 1``, as transformers'
``generate`` does), so a padded prompt gives the logits of the prompt alone.

KV cache. ``forward(new_ids, cache=cache)`` feeds only the new tokens; every layer
appends their keys and values to ``cache`` (a :class:`~taa.torch.blocks.DecoderCache`
from :meth:`GPT.new_cache`) and attends to the cached ones. ``attention_mask`` then
covers the cached tokens too: (b, cached + new).

Notation: ``b`` batch, ``n`` new tokens, ``k`` all tokens so far (cached + new),
``d`` d_model, ``v`` vocabulary.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from taa.config import GPTConfig
from taa.torch.attention import key_padding_to_attention_mask
from taa.torch.blocks import DecoderCache, Encoder
from taa.torch.dropout import Dropout
from taa.torch.models.transformer import Transformer
from taa.torch.positional import AlibiBias, LearnedPositionalEmbedding, RotaryEmbedding


def normal_init_(model: nn.Module, std: float) -> None:
    """GPT's initialisation, which BERT kept: "a simple weight initialization of N(0, 0.02)
    was sufficient" (Radford et al. 2018, §4.1) for every linear map and embedding, biases
    zero; norms keep their ones and zeros. An embedding's padding row starts at zero."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """(b, k) 1/True at real tokens -> (b, k) positions counted from each row's first real token.

    Padding gets position 0 (it is never attended to), as in transformers' ``generate``.
    """
    mask = attention_mask.long()
    return (mask.cumsum(dim=-1) - 1).masked_fill(mask == 0, 0)


class GPT(nn.Module):
    """GPT-2: ``model(input_ids)`` -> next-token logits (b, n, v)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.token_embedding = nn.Embedding(config.vocab_size, d)  # W_e
        self.position_embedding: Optional[LearnedPositionalEmbedding] = None
        rotary = alibi = None
        if config.positional == "learned":
            self.position_embedding = LearnedPositionalEmbedding(config.max_length, d)  # W_p
        elif config.positional == "rotary":
            rotary = RotaryEmbedding(config.head_dim, config.max_length)
        else:
            alibi = AlibiBias(config.n_heads)
        self.embedding_dropout = Dropout(config.dropout)
        # Pre-norm layers need a norm after the last one (GPT-2 §2.3); post-norm ones (GPT-1) do not.
        self.blocks = Encoder(config, config.n_layers, final_norm=config.norm_first, rotary=rotary, relative_bias=alibi)
        self.output_projection = nn.Linear(d, config.vocab_size, bias=False)
        self.reset_parameters()
        if config.tie_output:
            self.output_projection.weight = self.token_embedding.weight

    def reset_parameters(self) -> None:
        """N(0, 0.02) everywhere; the projections that write into the residual stream (attention
        output, feed-forward W2) N(0, 0.02 / sqrt(2 N)): two residual additions per layer (GPT-2 §2.3)."""
        normal_init_(self, self.config.init_std)
        residual_std = self.config.init_std / math.sqrt(2 * max(self.config.n_layers, 1))
        for layer in self.blocks.layers:
            nn.init.normal_(layer.self_attention.out_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(layer.feed_forward.w2.weight, mean=0.0, std=residual_std)

    def new_cache(self) -> DecoderCache:
        """An empty KV cache for step-by-step decoding."""
        return DecoderCache.empty(len(self.blocks.layers))

    def hidden_states(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        *,
        position_ids: Optional[Tensor] = None,
        cache: Optional[DecoderCache] = None,
    ) -> Tensor:
        """input_ids (b, n) -> the final norm's output (b, n, d).

        ``attention_mask`` (b, k), 1 at real tokens, covers cached and new tokens; without
        ``position_ids`` the positions follow from it. Without a mask every token is real
        and positions continue from the cache.
        """
        offset = cache.length if cache is not None else 0
        length = input_ids.shape[1]
        if offset + length > self.config.max_length:  # every kind of position stops at the context
            raise ValueError(f"position {offset + length} exceeds max_length={self.config.max_length}")
        mask = None
        if attention_mask is not None:
            if attention_mask.shape != (input_ids.shape[0], offset + length):
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                    f"(batch, cached + new tokens) = {(input_ids.shape[0], offset + length)}"
                )
            key_padding = attention_mask.bool()  # (b, k)
            if position_ids is None:
                position_ids = positions_from_mask(key_padding)[:, offset:]  # (b, n)
            if not bool(key_padding.all()):  # nothing padded: the causal mask alone (fast path)
                mask = key_padding_to_attention_mask(key_padding)  # (b, 1, 1, k)
        x = self.token_embedding(input_ids)  # (b, n, d): U W_e
        if self.position_embedding is not None:
            x = self.position_embedding(x, offset, position_ids)  # + W_p
        # Rotary and ALiBi positions count from the cache's start in every row; a left-padded
        # row is shifted by its padding, which changes no distance between its real tokens.
        x = self.embedding_dropout(x)
        return self.blocks(x, mask, causal=True, cache=cache)  # (b, n, d)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        *,
        position_ids: Optional[Tensor] = None,
        cache: Optional[DecoderCache] = None,
    ) -> Tensor:
        """input_ids (b, n) -> logits (b, n, v); see :meth:`hidden_states` for the options."""
        hidden = self.hidden_states(input_ids, attention_mask, position_ids=position_ids, cache=cache)
        return self.output_projection(hidden)  # h_N W_e^T

    # Distinct parameters (the tied head counts once), in total and per top-level component.
    num_parameters = Transformer.num_parameters
    parameter_breakdown = Transformer.parameter_breakdown
