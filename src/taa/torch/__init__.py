"""The PyTorch reference implementation of taa.

Everything a model is built from, importable from here::

    from taa.torch import MultiHeadAttention, Transformer, scaled_dot_product_attention
"""

from taa.torch.attention import (
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
from taa.torch.blocks import Decoder, DecoderCache, DecoderLayer, Encoder, EncoderLayer, LayerCache
from taa.torch.feedforward import PositionwiseFeedForward
from taa.torch.generate import Hypothesis, beam_search, greedy_decode
from taa.torch.models.transformer import Transformer
from taa.torch.models.bert import BertForMaskedLM, BertForSequenceClassification, BertModel
from taa.torch.models.gpt import GPT
from taa.torch.norm import LayerNorm, RMSNorm
from taa.torch.positional import (
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
    "AlibiBias", "Decoder", "DecoderCache", "DecoderLayer", "Encoder", "EncoderLayer", "Hypothesis",
    "KVCache", "LayerCache", "LayerNorm", "LearnedPositionalEmbedding", "MultiHeadAttention",
    "PositionwiseFeedForward", "RMSNorm", "RelativePositionBias", "RotaryEmbedding",
    "SinusoidalPositionalEncoding", "Transformer", "alibi_slopes", "attend", "attention_mask", "beam_search",
    "capture_attention", "causal_mask", "combine_masks", "fused_scaled_dot_product_attention",
    "greedy_decode", "key_padding_to_attention_mask", "padding_mask", "relative_position_bucket",
    "scaled_dot_product_attention", "sinusoidal_table",
]
__all__ += ["BertForMaskedLM", "BertForSequenceClassification", "BertModel", "GPT"]

# Loading Hugging Face folders and taa checkpoints. The decoder-only generate()
# stays under its module's name (taa.torch.generate.generate): exporting it here would hide
# the taa.torch.generate module behind the function.
from taa.torch.hub import Pretrained, from_pretrained  # noqa: E402

__all__ += ["Pretrained", "from_pretrained"]
