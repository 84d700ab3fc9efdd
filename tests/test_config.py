import json

import pytest

from taa import config as cfg
from taa.config import ConfigError, RecipeConfig, TrainConfig, TransformerConfig


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


def test_model_config_round_trip_json(tmp_path):
    model = cfg.preset("vaswani-big")
    path = tmp_path / "model.json"
    cfg.save(model, path)
    assert cfg.from_dict(TransformerConfig, json.loads(path.read_text())) == model


def test_presets_follow_the_paper_table_3():
    base, big = cfg.preset("vaswani-base"), cfg.preset("vaswani-big")
    assert (base.n_encoder_layers, base.d_model, base.d_ff, base.n_heads, base.dropout) == (6, 512, 2048, 8, 0.1)
    assert (big.n_encoder_layers, big.d_model, big.d_ff, big.n_heads, big.dropout) == (6, 1024, 4096, 16, 0.3)
    assert base.source_vocab_size == base.target_vocab_size == 37000 and base.share_embeddings
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        cfg.preset("nope")


def test_overrides_are_typed_and_nested():
    overrides = cfg.parse_overrides(["model.d_model=256", "train.lr=1e-3", "name=run", "model.bias=false"])
    assert overrides == {"model": {"d_model": 256, "bias": False}, "train": {"lr": "1e-3"}, "name": "run"}
    # YAML 1.1 reads 1e-3 as a string; a float field accepts it as the number it spells
    assert RecipeConfig.from_dict(overrides).train.lr == 1e-3
    with pytest.raises(ConfigError, match="expected key=value"):
        cfg.parse_overrides(["d_model"])


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


def test_train_config_validation():
    with pytest.raises(ConfigError, match="schedule=noam needs warmup_steps > 0"):
        TrainConfig(schedule="noam", warmup_steps=0)
    with pytest.raises(ConfigError, match="steps=0 must be positive"):
        TrainConfig(steps=0)


# ---------------------------------------------------------------- task configs of issue 4


@pytest.mark.parametrize("task, data, message", [
    ("language_model", {"tokenizer": "bpe", "vocab_size": 200}, "data: vocab_size=200 must exceed 260"),
    ("language_model", {"train_fraction": 1.0}, "data: train_fraction=1.0 must be in (0, 1)"),
    ("language_model", {"tokenizer": "words"}, "data.tokenizer='words' is not one of 'char', 'bpe'"),
    ("masked_lm", {"mask_token_fraction": 0.95}, "mask_token_fraction=0.95 + random_token_fraction=0.1 must be <= 1"),
    ("masked_lm", {"max_length": 2}, "data: max_length=2 must be >= 3"),
    ("classification", {"pretrained": ""}, "data: pretrained and tokenizer are both empty"),
    ("text_to_text", {"beam": 0}, "data: beam=0 must be positive"),
])
def test_task_configs_name_the_bad_field(task, data, message):
    with pytest.raises(ConfigError) as error:
        RecipeConfig.from_dict({"task": task, "data": data})
    assert message in str(error.value)


def test_a_saved_recipe_names_its_model_type_and_reads_back():
    import yaml

    recipe = RecipeConfig.from_dict({"task": "language_model", "model": {"preset": "gpt-tiny", "n_layers": 3}})
    text = cfg.dumps(recipe)  # what checkpoints write as recipe.yaml
    assert "type: gpt" in text
    again = RecipeConfig.from_dict(yaml.safe_load(text))
    assert again == recipe and again.model.n_layers == 3
