"""Named presets: the sizes the papers give, as data (a config class and its fields).

``preset("gpt2-small")`` is the :class:`GPTConfig` of GPT-2 small; keyword arguments replace
fields. :mod:`taa.registry` lists each family's presets from this table, and a family
registered later adds its own presets to it.
"""

from __future__ import annotations

from typing import Any

from taa.config.coerce import ConfigError, from_dict
from taa.config.models import BertConfig, DecisionTransformerConfig, GPTConfig, T5Config, TransformerConfig
from taa.config.models import ViTConfig

# Named presets are data: a config class and the fields that differ from its defaults.
PRESETS: dict[str, tuple[type, dict[str, Any]]] = {
    # Paper Table 3, "base": N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1, shared 37000 BPE vocabulary.
    "vaswani-base": (TransformerConfig, dict(
        d_model=512, n_heads=8, d_ff=2048, dropout=0.1,
        n_encoder_layers=6, n_decoder_layers=6,
        source_vocab_size=37000, target_vocab_size=37000,
    )),
    # Paper Table 3, "big": d_model=1024, d_ff=4096, h=16, P_drop=0.3.
    "vaswani-big": (TransformerConfig, dict(
        d_model=1024, n_heads=16, d_ff=4096, dropout=0.3,
        n_encoder_layers=6, n_decoder_layers=6,
        source_vocab_size=37000, target_vocab_size=37000,
    )),
    # Small ones for tests and the copy task.
    "vaswani-tiny": (TransformerConfig, dict(
        d_model=32, n_heads=4, d_ff=64, dropout=0.0,
        n_encoder_layers=2, n_decoder_layers=2,
        source_vocab_size=50, target_vocab_size=50, max_length=64,
    )),
    "copy-task": (TransformerConfig, dict(
        d_model=64, n_heads=4, d_ff=128, dropout=0.0,
        n_encoder_layers=2, n_decoder_layers=2,
        source_vocab_size=11, target_vocab_size=11, max_length=32,
        pad_id=0, bos_id=1, eos_id=1,
    )),
    # gpt2-small and bert-base have as many parameters as transformers' GPT2LMHeadModel
    # (tied head) and BertModel (with pooler) at the same config: 124,439,808 and 109,482,240
    # (tests/torch/models/test_gpt.py, test_bert.py).
    #
    # GPT-2 small: 12 layers, 768 wide, 12 heads, context 1024, 50257 byte-level BPE tokens.
    "gpt2-small": (GPTConfig, dict(
        d_model=768, n_heads=12, d_ff=3072, n_layers=12, max_length=1024, vocab_size=50257,
        dropout=0.1, attention_dropout=0.1, bos_id=50256, eos_id=50256,
    )),
    # nanoGPT's shakespeare_char: 6 layers, 6 heads, 384 wide, context 256, 65 characters.
    "gpt-shakespeare-char": (GPTConfig, dict(
        d_model=384, n_heads=6, d_ff=1536, n_layers=6, max_length=256, vocab_size=65,
        dropout=0.2, attention_dropout=0.2,
    )),
    "gpt-tiny": (GPTConfig, dict(
        d_model=32, n_heads=4, d_ff=128, n_layers=2, max_length=64, vocab_size=64,
        dropout=0.0, attention_dropout=0.0,
    )),
    # BERT-base: 12 layers, 768 wide, 12 heads, 512 positions, 30522 WordPiece tokens.
    "bert-base": (BertConfig, dict(
        d_model=768, n_heads=12, d_ff=3072, n_layers=12, max_length=512, vocab_size=30522,
        dropout=0.1, attention_dropout=0.1,
    )),
    # all-MiniLM-L6-v2's shape: 6 layers, 384 wide, 12 heads of 32, BERT's uncased vocabulary.
    "bert-minilm-l6": (BertConfig, dict(
        d_model=384, n_heads=12, d_ff=1536, n_layers=6, max_length=512, vocab_size=30522,
        dropout=0.1, attention_dropout=0.1,
    )),
    "bert-tiny": (BertConfig, dict(
        d_model=32, n_heads=4, d_ff=64, n_layers=2, max_length=64, vocab_size=100,
        dropout=0.0, attention_dropout=0.0,
    )),
    # t5-small has as many parameters as transformers' T5ForConditionalGeneration at the
    # same config: 60,506,624 (tests/torch/models/test_t5.py).
    # t5-small (v1.0): 6+6 layers, 512 wide, 8 heads of 64, ReLU FFN of 2048, tied output layer.
    "t5-small": (T5Config, dict(
        d_model=512, n_heads=8, d_kv=64, d_ff=2048, n_encoder_layers=6, n_decoder_layers=6,
        vocab_size=32128, activation="relu", tie_word_embeddings=True, dropout=0.1, attention_dropout=0.1,
    )),
    # t5-v1_1-small: 8+8 layers, 512 wide, 6 heads of 64 (384 != 512), gated-GELU FFN of 1024, own output layer.
    "t5-v1_1-small": (T5Config, dict(
        d_model=512, n_heads=6, d_kv=64, d_ff=1024, n_encoder_layers=8, n_decoder_layers=8,
        vocab_size=32128, activation="geglu", tie_word_embeddings=False, dropout=0.1, attention_dropout=0.1,
    )),
    "t5-tiny": (T5Config, dict(
        d_model=32, n_heads=4, d_kv=8, d_ff=64, n_encoder_layers=2, n_decoder_layers=2,
        vocab_size=100, relative_buckets=8, relative_max_distance=16, max_length=64,
        dropout=0.0, attention_dropout=0.0,
    )),
    "t5-v1_1-tiny": (T5Config, dict(
        d_model=32, n_heads=3, d_kv=8, d_ff=48, n_encoder_layers=2, n_decoder_layers=3,
        vocab_size=100, relative_buckets=8, relative_max_distance=16, max_length=64,
        activation="geglu", tie_word_embeddings=False, dropout=0.0, attention_dropout=0.0,
    )),
    # ViT-B/16 (paper Table 1, "Base"; 224 x 224 images, ImageNet's 1000 classes): as many
    # parameters as transformers' ViTForImageClassification at the same config (with 2 labels,
    # its default: 85,800,194; tests/torch/models/test_vit.py).
    "vit-b16": (ViTConfig, dict(
        d_model=768, n_heads=12, d_ff=3072, n_layers=12, image_size=224, patch_size=16, num_channels=3,
        num_labels=1000,
    )),
    # Small ones for digits: 8 x 8 (scikit-learn) and 28 x 28 (MNIST) grey images, ten classes.
    "vit-digits": (ViTConfig, dict(
        d_model=64, n_heads=4, d_ff=128, n_layers=4, image_size=8, patch_size=2, num_channels=1,
        num_labels=10, dropout=0.1,
    )),
    "vit-mnist": (ViTConfig, dict(
        d_model=128, n_heads=4, d_ff=256, n_layers=6, image_size=28, patch_size=4, num_channels=1,
        num_labels=10, dropout=0.1,
    )),
    # Decision Transformers for gymnasium's control tasks (the paper's Atari/gym sizes: 128 wide,
    # 3 layers, 1 head; context K = 20). CartPole: 4 numbers a state, 2 actions, episodes up to
    # 500 steps; Pendulum: 3 numbers, 1 torque in [-2, 2] (scaled to [-1, 1]), 200 steps.
    "dt-cartpole": (DecisionTransformerConfig, dict(
        d_model=128, n_heads=1, d_ff=512, n_layers=3, state_dim=4, act_dim=2, max_ep_len=512, context=20,
        discrete=True, action_tanh=False,
    )),
    "dt-pendulum": (DecisionTransformerConfig, dict(
        d_model=128, n_heads=1, d_ff=512, n_layers=3, state_dim=3, act_dim=1, max_ep_len=256, context=20,
        discrete=False, action_tanh=True,
    )),
    "dt-tiny": (DecisionTransformerConfig, dict(
        d_model=16, n_heads=2, d_ff=32, n_layers=2, state_dim=4, act_dim=2, max_ep_len=50, context=5,
        dropout=0.0, attention_dropout=0.0,
    )),
    "vit-tiny": (ViTConfig, dict(
        d_model=32, n_heads=4, d_ff=64, n_layers=2, image_size=16, patch_size=4, num_channels=3,
        num_labels=5,
    )),
}


def preset(name: str, **overrides: Any) -> Any:
    """The config of a named preset, with fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    cls, fields = PRESETS[name]
    return from_dict(cls, {**fields, **overrides}, prefix="")
