"""The Keras 3 port of taa: the same modules, classes and weight names as :mod:`taa.torch`.

Everything a model is built from, importable from here::

    from taa.keras import GPT, MultiHeadAttention, from_pretrained

Each module mirrors its torch twin file for file (``attention``, ``positional``, ``norm``,
``feedforward``, ``blocks``, ``models/``, ``generate``), and tests pin each to it on the
same weights. Weights carry torch's names (:mod:`taa.keras.weights`), so a folder written
by one framework loads in the other. The code uses ``keras.ops`` only: it runs on the
backend ``KERAS_BACKEND`` names (TensorFlow by default; JAX too). The decoder-only
``generate()`` stays under its module's name (``taa.keras.generate.generate``).
"""

import os

# TensorFlow's start-up notices (CPU instructions, XLA services) are not the user's business;
# an explicit TF_CPP_MIN_LOG_LEVEL wins. Only read when TensorFlow is first imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from taa.keras.attention import (  # noqa: E402
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
from taa.keras.blocks import Decoder, DecoderCache, DecoderLayer, Encoder, EncoderLayer, LayerCache  # noqa: E402
from taa.keras.feedforward import PositionwiseFeedForward  # noqa: E402
from taa.keras.generate import Hypothesis, beam_search, greedy_decode  # noqa: E402
from taa.keras.hub import Pretrained, from_pretrained, save_pretrained  # noqa: E402
from taa.keras.models.bert import BertForMaskedLM, BertForSequenceClassification, BertModel  # noqa: E402
from taa.keras.models.gpt import GPT  # noqa: E402
from taa.keras.models.t5 import T5ForConditionalGeneration  # noqa: E402
from taa.keras.models.transformer import Transformer  # noqa: E402
from taa.keras.norm import LayerNorm, RMSNorm  # noqa: E402
from taa.keras.positional import (  # noqa: E402
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
