"""taa.config.presets: the papers' sizes as data."""

import pytest

from taa import config as cfg
from taa.config import ConfigError


def test_presets_follow_the_paper_table_3():
    base, big = cfg.preset("vaswani-base"), cfg.preset("vaswani-big")
    assert (base.n_encoder_layers, base.d_model, base.d_ff, base.n_heads, base.dropout) == (6, 512, 2048, 8, 0.1)
    assert (big.n_encoder_layers, big.d_model, big.d_ff, big.n_heads, big.dropout) == (6, 1024, 4096, 16, 0.3)
    assert base.source_vocab_size == base.target_vocab_size == 37000 and base.share_embeddings
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        cfg.preset("nope")


@pytest.mark.parametrize("name", sorted(cfg.PRESETS))
def test_every_preset_is_a_valid_config_of_its_class(name):
    cls, fields = cfg.PRESETS[name]
    config = cfg.preset(name)
    assert type(config) is cls
    assert all(getattr(config, key) == value for key, value in fields.items())


def test_overrides_replace_fields_and_are_checked():
    assert cfg.preset("gpt-tiny", n_layers=3).n_layers == 3
    with pytest.raises(ConfigError, match="d_model=30 is not divisible by n_heads=4"):
        cfg.preset("gpt-tiny", d_model=30)
