"""taa.config.coerce: type checks from the annotations, the dict/YAML/JSON round trip, overrides."""

import json

import pytest

from taa import config as cfg
from taa.config import ConfigError, RecipeConfig, TransformerConfig


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"d_model": "wide"}, r"d_model='wide' should be an integer"),
        ({"activation": "tanh"}, r"activation='tanh' is not one of 'relu', 'gelu', 'gelu_tanh', 'swiglu', 'geglu'"),
        ({"norm_first": "yes"}, r"norm_first='yes' should be true or false"),
        ({"d_modle": 3}, r"unknown field d_modle \(known: "),
    ],
)
def test_wrong_types_name_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        cfg.from_dict(TransformerConfig, fields)


def test_model_config_round_trip_json(tmp_path):
    model = cfg.preset("vaswani-big")
    path = tmp_path / "model.json"
    cfg.save(model, path)
    assert cfg.from_dict(TransformerConfig, json.loads(path.read_text())) == model
    assert cfg.to_dict(model) == json.loads(path.read_text())


def test_overrides_are_typed_and_nested():
    overrides = cfg.parse_overrides(["model.d_model=256", "train.lr=1e-3", "name=run", "model.bias=false"])
    assert overrides == {"model": {"d_model": 256, "bias": False}, "train": {"lr": "1e-3"}, "name": "run"}
    # YAML 1.1 reads 1e-3 as a string; a float field accepts it as the number it spells
    assert RecipeConfig.from_dict(overrides).train.lr == 1e-3
    with pytest.raises(ConfigError, match="expected key=value"):
        cfg.parse_overrides(["d_model"])


def test_merge_is_deep_and_leaves_the_base_alone():
    base = {"model": {"preset": "gpt-tiny", "n_layers": 2}, "task": "language_model"}
    merged = cfg.merge(base, {"model": {"n_layers": 3}})
    assert merged == {"model": {"preset": "gpt-tiny", "n_layers": 3}, "task": "language_model"}
    assert base["model"]["n_layers"] == 2


def test_read_mapping_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"task": "copy",\n "train": }\n')
    with pytest.raises(ConfigError, match=r"broken.json, line 2"):
        cfg.read_mapping(path)
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of fields at the top level"):
        cfg.read_mapping(path)
