"""taa.config.training: the training run's fields."""

import pytest

from taa.config import ConfigError, RecipeConfig, TrainConfig


def test_train_config_validation():
    with pytest.raises(ConfigError, match="schedule=noam needs warmup_steps > 0"):
        TrainConfig(schedule="noam", warmup_steps=0)
    with pytest.raises(ConfigError, match="steps=0 must be positive"):
        TrainConfig(steps=0)


def test_threads_are_the_frameworks_choice_unless_set():
    assert TrainConfig().threads is None
    assert RecipeConfig.from_dict({"train": {"threads": 3}}).train.threads == 3
    with pytest.raises(ConfigError, match="threads=0 must be positive"):
        TrainConfig(threads=0)
    with pytest.raises(ConfigError, match="train.threads='many'"):
        RecipeConfig.from_dict({"train": {"threads": "many"}})
