"""GPT: a decoder-only Transformer language model, in GPT-2's layout; the Keras twin of
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

Built from the shared blocks: a GPT layer is an :class:`~taa.keras.blocks.EncoderLayer`
whose self-attention is causal, and the stack is an :class:`~taa.keras.blocks.Encoder`
with a final norm. Attribute names are torch's, so :mod:`taa.keras.weights` gives the
state dict of :class:`taa.torch.models.gpt.GPT`.

Padding. Prompts of different lengths are batched left-padded, with an
``attention_mask`` (b, k) that is 1 at real tokens. Positions then count from each
row's first real token (``position_ids = cumsum(mask) - 1``, as transformers'
``generate`` does), so a padded prompt gives the logits of the prompt alone. The mask
is always applied when given (torch skips an all-ones one, the same numbers): no
branch on tensor values, so the call traces under ``jit_compile``.

KV cache. ``model(new_ids, cache=cache)`` feeds only the new tokens; every layer
appends their keys and values to ``cache`` (a :class:`~taa.keras.blocks.DecoderCache`
from :meth:`GPT.new_cache`) and attends to the cached ones. ``attention_mask`` then
covers the cached tokens too: (b, cached + new). Cached decoding runs eagerly.

Notation: ``b`` batch, ``n`` new tokens, ``k`` all tokens so far (cached + new),
``d`` d_model, ``v`` vocabulary.
"""

from __future__ import annotations

import math
from typing import Optional

import keras
import numpy as np
from keras import ops

from taa.config import GPTConfig
from taa.keras.attention import key_padding_to_attention_mask
from taa.keras.base import build_sublayers
from taa.keras.blocks import DecoderCache, Encoder
from taa.keras.dropout import Dropout
from taa.keras.models.transformer import ConfigModel, TiedLinear, set_initializer
from taa.keras.positional import AlibiBias, LearnedPositionalEmbedding, RotaryEmbedding
from taa.keras.weights import named_layers


@keras.saving.register_keras_serializable(package="taa")
class NormalWithZeroRow(keras.initializers.RandomNormal):
    """N(mean, stddev) with row ``row`` zero: an embedding whose padding row starts at zero
    (torch's ``nn.Embedding(padding_idx=row)``)."""

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed=None, row: Optional[int] = None) -> None:
        super().__init__(mean=mean, stddev=stddev, seed=seed)
        self.row = row

    def __call__(self, shape, dtype=None):
        values = super().__call__(shape, dtype)
        if self.row is None:
            return values
        keep = np.ones((shape[0],) + (1,) * (len(shape) - 1), dtype="float32")
        keep[self.row] = 0.0
        return values * ops.cast(keep, values.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "row": self.row}


def normal_init_(model: keras.layers.Layer, std: float) -> None:
    """GPT's initialisation, which BERT kept: "a simple weight initialization of N(0, 0.02)
    was sufficient" (Radford et al. 2018, §4.1) for every linear map and embedding, biases
    zero; norms keep their ones and zeros. An embedding with a ``padding_idx`` attribute
    (torch's name) starts with that row at zero."""
    for _, layer in named_layers(model):
        if isinstance(layer, keras.layers.Dense):
            set_initializer(layer, "kernel_initializer", keras.initializers.RandomNormal(stddev=std))
            if layer.use_bias:
                set_initializer(layer, "bias_initializer", keras.initializers.Zeros())
        elif isinstance(layer, keras.layers.Embedding):
            row = getattr(layer, "padding_idx", None)
            set_initializer(layer, "embeddings_initializer", NormalWithZeroRow(stddev=std, row=row))


def positions_from_mask(attention_mask):
    """(b, k) 1/True at real tokens -> (b, k) positions counted from each row's first real token.

    Padding gets position 0 (it is never attended to), as in transformers' ``generate``.
    """
    mask = ops.cast(attention_mask, "int32")
    return ops.where(ops.equal(mask, 0), 0, ops.cumsum(mask, axis=-1) - 1)


def _agrees(shape: tuple, expected: tuple) -> bool:
    """Whether ``shape`` is ``expected`` in every dimension known to both (ints; a traced
    dimension may be None or symbolic)."""
    return len(shape) == len(expected) and all(
        not isinstance(a, int) or not isinstance(b, int) or a == b for a, b in zip(shape, expected)
    )


@keras.saving.register_keras_serializable(package="taa")
class GPT(ConfigModel):
    """GPT-2: ``model(input_ids)`` -> next-token logits (b, n, v).

    >>> model = GPT(taa.config.preset("gpt-tiny"))
    >>> logits = model(np.array([[5, 6, 7]]))  # (1, 3, 64)
    """

    def __init__(self, config: GPTConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        d, dtype = config.d_model, self.dtype_policy
        self.token_embedding = keras.layers.Embedding(config.vocab_size, d, name="token_embedding", dtype=dtype)  # W_e
        self.position_embedding: Optional[LearnedPositionalEmbedding] = None
        rotary = alibi = None
        if config.positional == "learned":
            self.position_embedding = LearnedPositionalEmbedding(
                config.max_length, d, name="position_embedding", dtype=dtype
            )  # W_p
        elif config.positional == "rotary":
            rotary = RotaryEmbedding(config.head_dim, config.max_length, dtype=dtype)
        else:
            alibi = AlibiBias(config.n_heads, dtype=dtype)
        self.embedding_dropout = Dropout(config.dropout, name="embedding_dropout", dtype=dtype)
        # Pre-norm layers need a norm after the last one (GPT-2 §2.3); post-norm ones (GPT-1) do not.
        self.blocks = Encoder(
            config, config.n_layers, final_norm=config.norm_first, rotary=rotary, relative_bias=alibi, name="blocks",
            dtype=dtype,
        )
        if config.tie_output:  # h_N W_e^T
            self.output_projection = TiedLinear(self.token_embedding, name="output_projection", dtype=dtype)
            self.tied_weights = {"output_projection.weight": "token_embedding.weight"}
        else:
            self.output_projection = keras.layers.Dense(
                config.vocab_size, use_bias=False, name="output_projection", dtype=dtype
            )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02) everywhere; the projections that write into the residual stream (attention
        output, feed-forward W2) N(0, 0.02 / sqrt(2 N)): two residual additions per layer (GPT-2 §2.3)."""
        normal_init_(self, self.config.init_std)
        residual_std = self.config.init_std / math.sqrt(2 * max(self.config.n_layers, 1))
        for layer in self.blocks.layers:
            for projection in (layer.self_attention.out_proj, layer.feed_forward.w2):
                set_initializer(projection, "kernel_initializer", keras.initializers.RandomNormal(stddev=residual_std))

    def build(self, input_shape=None) -> None:
        build_sublayers(
            (None, None, self.config.d_model),  # (b, n, d)
            self.token_embedding, self.position_embedding, self.blocks, self.output_projection,
        )
        self.built = True

    def new_cache(self) -> DecoderCache:
        """An empty KV cache for step-by-step decoding."""
        return DecoderCache.empty(len(self.blocks.layers))

    def hidden_states(
        self,
        input_ids,
        attention_mask=None,
        *,
        position_ids=None,
        cache: Optional[DecoderCache] = None,
        training=None,
    ):
        """input_ids (b, n) -> the final norm's output (b, n, d).

        ``attention_mask`` (b, k), 1 at real tokens, covers cached and new tokens; without
        ``position_ids`` the positions follow from it. Without a mask every token is real
        and positions continue from the cache.

        Every kind of position stops at ``max_length``: a longer input raises a ValueError
        wherever its length is known, eagerly or compiled for fixed shapes (``jit_compile``,
        ``jax.jit``), at trace time. A trace that leaves the length open (``keras.Input((None,))``)
        cannot check it; a longer input then reads past the position table (see
        :class:`~taa.keras.positional.LearnedPositionalEmbedding`).
        """
        offset = cache.length if cache is not None else 0
        batch, length = input_ids.shape[0], input_ids.shape[1]
        if isinstance(length, int) and offset + length > self.config.max_length:
            raise ValueError(f"position {offset + length} exceeds max_length={self.config.max_length}")
        mask = None
        if attention_mask is not None:
            expected = (batch, offset + length if isinstance(length, int) else None)
            if not _agrees(tuple(attention_mask.shape), expected):
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                    f"(batch, cached + new tokens) = {expected}"
                )
            key_padding = ops.cast(attention_mask, "bool")  # (b, k)
            if position_ids is None:
                position_ids = positions_from_mask(key_padding)[:, offset:]  # (b, n)
            mask = key_padding_to_attention_mask(key_padding)  # (b, 1, 1, k)
        x = self.token_embedding(input_ids)  # (b, n, d): U W_e
        if self.position_embedding is not None:
            x = self.position_embedding(x, offset=offset, position_ids=position_ids)  # + W_p
        # Rotary and ALiBi positions count from the cache's start in every row; a left-padded
        # row is shifted by its padding, which changes no distance between its real tokens.
        x = self.embedding_dropout(x, training=training)
        return self.blocks(x, mask, causal=True, cache=cache, training=training)  # (b, n, d)

    def call(
        self,
        input_ids,
        attention_mask=None,
        *,
        position_ids=None,
        cache: Optional[DecoderCache] = None,
        training=None,
    ):
        """input_ids (b, n) -> logits (b, n, v); see :meth:`hidden_states` for the options."""
        hidden = self.hidden_states(
            input_ids, attention_mask, position_ids=position_ids, cache=cache, training=training
        )
        return self.output_projection(hidden)  # h_N W_e^T
