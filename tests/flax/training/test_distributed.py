"""taa.flax.training.distributed: one process and its device."""

import jax
import pytest

from taa.config import ConfigError, TrainConfig
from taa.flax.training import distributed, setup_parallel
from taa.flax.training.distributed import jax_device


def test_devices_as_jax_names_them():
    assert jax_device("auto") is None and jax_device("cpu") == jax.devices("cpu")[0]
    with pytest.raises(ConfigError, match=r"^train.device='mps': the Flax trainer runs on auto, cpu, cuda or cuda:N$"):
        jax_device("mps")


@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_a_gpu_jax_does_not_see_is_one_line(device, monkeypatch):
    monkeypatch.setattr(distributed, "gpu_count", lambda: 0)
    with pytest.raises(ConfigError, match=f"^train.device={device}: JAX sees no GPUs here; "
                                          "use train.device=auto or cpu$"):
        distributed.check_device(device)
    monkeypatch.setattr(distributed, "gpu_count", lambda: 4)
    distributed.check_device(device)  # there: no refusal


def test_one_process_on_its_device(monkeypatch):
    parallel = setup_parallel(TrainConfig(device="cpu"))
    try:
        assert parallel.is_main and parallel.broadcast(3) == 3 and parallel.world_size == 1
        with parallel.main_first():
            assert jax.numpy.ones(2).devices() == {jax.devices("cpu")[0]}
    finally:
        parallel.close()
    with pytest.warns(UserWarning, match=r"^train.threads=1: XLA chooses its own threads with train.framework=flax"):
        setup_parallel(TrainConfig(threads=1)).close()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"^train.framework=flax trains on one process, not 2 "):
        setup_parallel(TrainConfig())
