"""The Flax NNX port of taa: the same modules, classes and weight names as :mod:`taa.torch`.

Everything a model is built from, importable from here::

    from taa.flax import GPT, MultiHeadAttention, from_pretrained

Each module mirrors its torch twin file for file (``attention``, ``positional``, ``norm``,
``feedforward``, ``blocks``, ``models/``, ``generate``, ``training/``), and tests pin each
to it on the same weights. Modules are ``nnx.Module``s whose parameters are made eagerly
in ``__init__`` from an explicit ``rngs``; their parameters carry torch's names and
layouts (:mod:`taa.flax.weights`), so a folder written by one framework loads in the
other. Code that runs often (a training step, a decoding step) is compiled by
``nnx.jit``. The decoder-only ``generate()`` stays under its module's name
(``taa.flax.generate.generate``).
"""

from taa.flax.attention import (
    KVCache,
    MultiHeadAttention,
    attend,
    attention_mask,
    capture_attention,
    causal_mask,
    combine_masks,
    fused_scaled_dot_product_attention,
    key_padding_to_attention_mask,
    padding_mask,
    scaled_dot_product_attention,
)
from taa.flax.blocks import Decoder, DecoderCache, DecoderLayer, Encoder, EncoderLayer, LayerCache
from taa.flax.feedforward import PositionwiseFeedForward
from taa.flax.generate import Hypothesis, beam_search, greedy_decode
from taa.flax.hub import Pretrained, from_pretrained, save_pretrained
from taa.flax.models.bert import BertForMaskedLM, BertForSequenceClassification, BertModel
from taa.flax.models.gpt import GPT
from taa.flax.models.t5 import T5ForConditionalGeneration
from taa.flax.models.transformer import Transformer
from taa.flax.norm import LayerNorm, RMSNorm
from taa.flax.positional import (
    AlibiBias,
    LearnedPositionalEmbedding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_slopes,
    relative_position_bucket,
    sinusoidal_table,
)

__all__ = [
    "AlibiBias", "BertForMaskedLM", "BertForSequenceClassification", "BertModel", "Decoder", "DecoderCache",
    "DecoderLayer", "Encoder", "EncoderLayer", "GPT", "Hypothesis", "KVCache", "LayerCache", "LayerNorm",
    "LearnedPositionalEmbedding", "MultiHeadAttention", "PositionwiseFeedForward", "Pretrained", "RMSNorm",
    "RelativePositionBias", "RotaryEmbedding", "SinusoidalPositionalEncoding", "T5ForConditionalGeneration",
    "Transformer", "alibi_slopes", "attend", "attention_mask", "beam_search", "capture_attention", "causal_mask",
    "combine_masks", "from_pretrained", "fused_scaled_dot_product_attention", "greedy_decode",
    "key_padding_to_attention_mask", "padding_mask", "relative_position_bucket", "save_pretrained",
    "scaled_dot_product_attention", "sinusoidal_table",
]
