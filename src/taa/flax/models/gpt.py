"""GPT: a decoder-only Transformer language model, in GPT-2's layout; the Flax NNX twin of
:mod:`taa.torch.models.gpt`.

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
distance to the key (Press et al. 2022).

Built from the shared blocks: a GPT layer is an :class:`~taa.flax.blocks.EncoderLayer`
whose self-attention is causal, and the stack is an :class:`~taa.flax.blocks.Encoder`
with a final norm. Attribute names are torch's, so :mod:`taa.flax.weights` gives the
state dict of :class:`taa.torch.models.gpt.GPT`.

Padding. Prompts of different lengths are batched left-padded, with an
``attention_mask`` (b, k) that is 1 at real tokens. Positions then count from each
row's first real token (``position_ids = cumsum(mask) - 1``, as transformers'
``generate`` does), so a padded prompt gives the logits of the prompt alone. The mask
is always applied when given (torch skips an all-ones one, the same numbers): no
branch on array values, so the call traces under ``nnx.jit``.

KV cache. ``model(new_ids, cache=cache)`` feeds only the new tokens; every layer
appends their keys and values to ``cache`` (a :class:`~taa.flax.blocks.DecoderCache`
from :meth:`GPT.new_cache`) and attends to the cached ones. ``attention_mask`` then
covers every key the layers attend to: (b, cached + new), or (b, capacity) for a
fixed-size cache, whose unfilled positions the causal mask hides.

Notation: ``b`` batch, ``n`` new tokens, ``k`` all tokens so far (cached + new),
``d`` d_model, ``v`` vocabulary.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from taa.config import GPTConfig
from taa.flax.attention import key_padding_to_attention_mask
from taa.flax.base import Embedding, Linear
from taa.flax.blocks import DecoderCache, Encoder
from taa.flax.dropout import Dropout
from taa.flax.models.transformer import ConfigModel, default_rngs, tie
from taa.flax.positional import AlibiBias, LearnedPositionalEmbedding, RotaryEmbedding, known_value
from taa.flax.weights import named_modules


def normal_init_(model: nnx.Module, std: float, *, rngs: nnx.Rngs) -> None:
    """GPT's initialisation, which BERT kept: "a simple weight initialization of N(0, 0.02)
    was sufficient" (Radford et al. 2018, §4.1) for every linear map and embedding, biases
    zero; norms keep their ones and zeros. An embedding's padding row starts at zero."""
    for _, module in named_modules(model):
        if isinstance(module, (Linear, Embedding)):
            shape = module.weight[...].shape
            module.weight[...] = jax.random.normal(rngs.params(), shape, jnp.float32) * std
        if isinstance(module, Linear) and module.bias is not None:
            module.bias[...] = jnp.zeros_like(module.bias[...])
        if isinstance(module, Embedding) and module.padding_idx is not None:
            module.weight[...] = module.weight[...].at[module.padding_idx].set(0.0)


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
    """(b, k) 1/True at real tokens -> (b, k) positions counted from each row's first real token.

    Padding gets position 0 (it is never attended to), as in transformers' ``generate``.
    """
    mask = jnp.asarray(attention_mask).astype(jnp.int32)
    return jnp.where(mask == 0, 0, jnp.cumsum(mask, axis=-1) - 1)


class GPT(ConfigModel):
    """GPT-2: ``model(input_ids)`` -> next-token logits (b, n, v).

    >>> model = GPT(taa.config.preset("gpt-tiny"), rngs=nnx.Rngs(0))
    >>> logits = model(jnp.array([[5, 6, 7]]))  # (1, 3, 64)
    """

    def __init__(self, config: GPTConfig, *, rngs: Optional[nnx.Rngs] = None) -> None:
        rngs = default_rngs(rngs)
        self.config = config
        d = config.d_model
        self.token_embedding = Embedding(config.vocab_size, d, rngs=rngs)  # W_e
        position_embedding = rotary = alibi = None
        if config.positional == "learned":
            position_embedding = LearnedPositionalEmbedding(config.max_length, d, rngs=rngs)  # W_p
        elif config.positional == "rotary":
            rotary = RotaryEmbedding(config.head_dim, config.max_length)
        else:
            alibi = AlibiBias(config.n_heads)
        self.position_embedding: Optional[LearnedPositionalEmbedding] = position_embedding
        self.embedding_dropout = Dropout(config.dropout, rngs=rngs)
        # Pre-norm layers need a norm after the last one (GPT-2 §2.3); post-norm ones (GPT-1) do not.
        self.blocks = Encoder(
            config, config.n_layers, final_norm=config.norm_first, rotary=rotary, relative_bias=alibi, rngs=rngs
        )
        self.output_projection = Linear(d, config.vocab_size, bias=False, rngs=rngs)
        self.reset_parameters(rngs=rngs)
        self.tied_weights: dict[str, str] = {}
        if config.tie_output:  # h_N W_e^T
            self.output_projection.weight = self.token_embedding.weight
            self.tied_weights = tie("token_embedding.weight", "output_projection.weight")

    def reset_parameters(self, *, rngs: nnx.Rngs) -> None:
        """N(0, 0.02) everywhere; the projections that write into the residual stream (attention
        output, feed-forward W2) N(0, 0.02 / sqrt(2 N)): two residual additions per layer (GPT-2 §2.3)."""
        normal_init_(self, self.config.init_std, rngs=rngs)
        residual_std = self.config.init_std / math.sqrt(2 * max(self.config.n_layers, 1))
        for layer in self.blocks.layers:
            for projection in (layer.self_attention.out_proj, layer.feed_forward.w2):
                shape = projection.weight[...].shape
                projection.weight[...] = jax.random.normal(rngs.params(), shape, jnp.float32) * residual_std

    def new_cache(self, capacity: Optional[int] = None) -> DecoderCache:
        """An empty KV cache for step-by-step decoding; with ``capacity`` (prompt + new tokens),
        a fixed-size one that decoding under ``nnx.jit`` compiles once for."""
        return DecoderCache.empty(len(self.blocks.layers), capacity)

    def hidden_states(
        self,
        input_ids: jax.Array,
        attention_mask: Optional[jax.Array] = None,
        *,
        position_ids: Optional[jax.Array] = None,
        cache: Optional[DecoderCache] = None,
    ) -> jax.Array:
        """input_ids (b, n) -> the final norm's output (b, n, d).

        ``attention_mask`` (b, k), 1 at real tokens, covers every key: the cached and the new
        tokens (a fixed-size cache: its whole capacity). Without ``position_ids`` the positions
        follow from it. Without a mask every token is real and positions continue from the cache.

        Every kind of position stops at ``max_length``: a longer input raises a ValueError
        wherever the cache's length is known (eagerly, or without a cache); a traced length
        cannot be checked.
        """
        input_ids = jnp.asarray(input_ids)
        batch, length = input_ids.shape
        offset = cache.length if cache is not None else 0
        start = known_value(offset)
        if start is not None and start + length > self.config.max_length:
            raise ValueError(f"position {start + length} exceeds max_length={self.config.max_length}")
        mask = None
        if attention_mask is not None:
            attention_mask = jnp.asarray(attention_mask)
            widths = {cache.key_length(length) if cache is not None else length}  # every key attention sees
            if start is not None:
                widths.add(start + length)  # or the cached and new tokens alone (widened to a capacity)
            if attention_mask.ndim != 2 or attention_mask.shape[0] != batch or attention_mask.shape[1] not in widths:
                expected = " or ".join(str((batch, width)) for width in sorted(widths))
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                    f"(batch, cached + new tokens) = {expected}"
                )
            key_padding = attention_mask.astype(bool)  # (b, k)
            if position_ids is None:  # (b, n): the new tokens' columns
                position_ids = jax.lax.dynamic_slice_in_dim(positions_from_mask(key_padding), offset, length, axis=1)
            mask = key_padding_to_attention_mask(key_padding)  # (b, 1, 1, k)
        x = self.token_embedding(input_ids)  # (b, n, d): U W_e
        if self.position_embedding is not None:
            x = self.position_embedding(x, offset, position_ids)  # + W_p
        # Rotary and ALiBi positions count from the cache's start in every row; a left-padded
        # row is shifted by its padding, which changes no distance between its real tokens.
        x = self.embedding_dropout(x)
        return self.blocks(x, mask, causal=True, cache=cache)  # (b, n, d)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: Optional[jax.Array] = None,
        *,
        position_ids: Optional[jax.Array] = None,
        cache: Optional[DecoderCache] = None,
    ) -> jax.Array:
        """input_ids (b, n) -> logits (b, n, v); see :meth:`hidden_states` for the options."""
        hidden = self.hidden_states(input_ids, attention_mask, position_ids=position_ids, cache=cache)
        return self.output_projection(hidden)  # h_N W_e^T
