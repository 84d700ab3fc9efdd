"""taa.config.tasks: each task's data section names its bad field."""

import pytest

from taa.config import ConfigError, RecipeConfig


@pytest.mark.parametrize("task, data, message", [
    ("language_model", {"tokenizer": "bpe", "vocab_size": 200}, "data: vocab_size=200 must exceed 260"),
    ("language_model", {"train_fraction": 1.0}, "data: train_fraction=1.0 must be in (0, 1)"),
    ("language_model", {"tokenizer": "words"}, "data.tokenizer='words' is not one of 'char', 'bpe'"),
    ("masked_lm", {"mask_token_fraction": 0.95}, "mask_token_fraction=0.95 + random_token_fraction=0.1 must be <= 1"),
    ("masked_lm", {"max_length": 2}, "data: max_length=2 must be >= 3"),
    ("classification", {"pretrained": ""}, "data: pretrained and tokenizer are both empty"),
    ("text_to_text", {"beam": 0}, "data: beam=0 must be positive"),
    ("translation", {"train_files": ["a.de"]}, "data: train_files needs [source_file, target_file]"),
    ("copy", {"length": 1}, "data: length=1 must be >= 2"),
])
def test_task_configs_name_the_bad_field(task, data, message):
    with pytest.raises(ConfigError) as error:
        RecipeConfig.from_dict({"task": task, "data": data})
    assert message in str(error.value)
