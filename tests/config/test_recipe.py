"""taa.config.recipe: a whole experiment in one file, and its model section."""

import pytest
import yaml

from taa import config as cfg
from taa.config import ConfigError, RecipeConfig


def test_section_prefix_in_nested_errors():
    with pytest.raises(ConfigError, match=r"model: d_model=100 is not divisible by n_heads=8"):
        RecipeConfig.from_dict({"model": {"preset": "vaswani-base", "d_model": 100}})
    with pytest.raises(ConfigError, match=r"unknown field train.stepz"):
        RecipeConfig.from_dict({"train": {"stepz": 3}})
    with pytest.raises(ConfigError, match=r"train.steps='ten' should be an integer"):
        RecipeConfig.from_dict({"train": {"steps": "ten"}})


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, suffix):
    recipe = RecipeConfig.from_dict(
        {"name": "x", "model": {"preset": "vaswani-tiny", "positional": "rotary", "n_kv_heads": 2},
         "train": {"steps": 7, "schedule": "cosine", "lr": 3e-4}}
    )
    path = tmp_path / f"recipe{suffix}"
    cfg.save(recipe, path)
    again = RecipeConfig.from_dict(cfg.read_mapping(path))
    assert again == recipe
    assert again.model.positional == "rotary" and again.train.steps == 7


def test_recipe_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("task: copy\ntrain:\n  steps: [1,\n")
    with pytest.raises(ConfigError, match=r"broken.yaml, line \d+"):
        RecipeConfig.load(path)
    with pytest.raises(ConfigError, match=r"missing.yaml: no such file"):
        RecipeConfig.load(tmp_path / "missing.yaml")
    path.write_text("task: dance\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: task='dance' is not one of 'copy'"):
        RecipeConfig.load(path)


def test_a_saved_recipe_names_its_model_type_and_reads_back():
    recipe = RecipeConfig.from_dict({"task": "language_model", "model": {"preset": "gpt-tiny", "n_layers": 3}})
    text = cfg.dumps(recipe)  # what checkpoints write as recipe.yaml
    assert "type: gpt" in text
    again = RecipeConfig.from_dict(yaml.safe_load(text))
    assert again == recipe and again.model.n_layers == 3


def test_the_model_section_type_picks_the_family():
    assert type(cfg.model_config_from_dict({"type": "bert", "n_layers": 1})) is cfg.BertConfig
    assert type(cfg.model_config_from_dict({})) is cfg.TransformerConfig  # no type, no preset
    assert cfg.model_type(cfg.preset("t5-tiny")) == "t5"
    assert cfg.model_config_to_dict(cfg.preset("gpt-tiny"))["type"] == "gpt"
    with pytest.raises(ConfigError, match="model.type='rnn' is not one of 'transformer', 'gpt', 'bert', 't5'"):
        cfg.model_config_from_dict({"type": "rnn"})
    with pytest.raises(ConfigError, match="model.type='gpt' does not match preset 'bert-tiny' \\(BertConfig\\)"):
        cfg.model_config_from_dict({"type": "gpt", "preset": "bert-tiny"})
    with pytest.raises(ConfigError, match="model.preset='gpt-huge' is unknown"):
        cfg.model_config_from_dict({"preset": "gpt-huge"})
    with pytest.raises(ConfigError, match="dict is not a model config"):
        cfg.model_type({})
