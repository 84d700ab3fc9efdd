"""taa.config.models: each model config checks its own fields and names the bad one."""

import pytest

from taa import config as cfg
from taa.config import ConfigError, TransformerConfig


def test_divisibility_error_names_both_fields():
    with pytest.raises(ConfigError, match=r"^d_model=500 is not divisible by n_heads=8$"):
        TransformerConfig(d_model=500, n_heads=8)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"dropout": 1.5}, r"dropout=1.5 must be in \[0, 1\)"),
        ({"d_model": "wide"}, r"d_model='wide' should be an integer"),
        ({"activation": "tanh"}, r"activation='tanh' is not one of 'relu', 'gelu', 'gelu_tanh', 'swiglu', 'geglu'"),
        ({"n_heads": 8, "n_kv_heads": 3}, r"n_heads=8 is not divisible by n_kv_heads=3"),
        ({"share_embeddings": True, "source_vocab_size": 10, "target_vocab_size": 12}, r"source_vocab_size=10"),
        ({"pad_id": 99, "source_vocab_size": 50, "target_vocab_size": 50}, r"pad_id=99 is outside"),
        ({"norm_first": "yes"}, r"norm_first='yes' should be true or false"),
    ],
)
def test_bad_values_name_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        cfg.from_dict(TransformerConfig, fields)


@pytest.mark.parametrize("cls, fields, message", [
    (cfg.GPTConfig, {"vocab_size": 10, "eos_id": 10}, "eos_id=10 is outside the vocabulary of 10"),
    (cfg.BertConfig, {"activation": "swiglu"}, "BERT's masked-LM head needs an ungated one"),
    (cfg.T5Config, {"norm_first": False}, "T5 is pre-norm"),
])
def test_every_family_validates_its_own_fields(cls, fields, message):
    with pytest.raises(ConfigError, match=message):
        cfg.from_dict(cls, fields)
