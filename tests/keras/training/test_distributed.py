"""taa.keras.training.distributed: one process, its device and its number format."""

import keras
import pytest

from taa.config import ConfigError, TrainConfig
from taa.keras.training import setup_parallel
from taa.keras.training.distributed import keras_device


def test_devices_as_keras_names_them():
    assert [keras_device(name) for name in ("auto", "cpu", "cuda", "cuda:1")] == [None, "cpu:0", "gpu:0", "gpu:1"]
    with pytest.raises(ConfigError, match=r"^train.device='mps': the Keras trainer runs on auto, cpu, cuda or cuda:N$"):
        keras_device("mps")


def test_one_process_the_policy_of_its_dtype_and_back(monkeypatch):
    before = keras.config.dtype_policy().name
    parallel = setup_parallel(TrainConfig(dtype="bfloat16", device="cpu"))
    assert parallel.is_main and parallel.broadcast(3) == 3 and keras.config.dtype_policy().name == "mixed_bfloat16"
    with parallel.main_first():
        assert keras.ops.ones(2).shape == (2,)
    parallel.close()
    assert keras.config.dtype_policy().name == before
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"^train.framework=keras trains on one process, not 2 "):
        setup_parallel(TrainConfig())
