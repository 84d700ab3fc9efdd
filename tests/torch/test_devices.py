"""Device names -> torch devices (``--device``, ``train.device``), on this machine and on
machines with GPUs the tests pretend to have (no CUDA tensor is ever made); where a model is."""

from __future__ import annotations

import pytest
import torch

from taa.config import ConfigError
from taa.torch import devices
from taa.torch.devices import model_device, resolve_device


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine without CUDA or MPS, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with two CUDA GPUs, as torch would report it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


def test_auto_and_cpu_are_the_cpu_without_a_gpu(no_gpu) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu", "--device") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


@pytest.mark.parametrize("name, message", [
    ("cuda", "--device=cuda: no CUDA GPU here ("),
    ("cuda:0", "--device=cuda:0: no CUDA GPU here ("),
    ("mps", "--device=mps: Apple's MPS backend is not available here; use --device=cpu"),
])
def test_a_missing_gpu_is_one_line(no_gpu, name: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        resolve_device(name, "--device")
    text = str(error.value)
    assert "\n" not in text and text.startswith(message) and text.endswith("use --device=cpu")


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cpu:0", "", "auto "])
def test_a_bad_spelling_is_one_line(no_gpu, name: str) -> None:
    with pytest.raises(ConfigError) as error:
        resolve_device(name, "--device")
    assert str(error.value) == f"--device={name!r} is not one of auto, cpu, cuda, cuda:N, mps"


def test_the_setting_is_named_in_the_error(no_gpu) -> None:
    with pytest.raises(ConfigError, match=r"^train\.device=cuda: no CUDA GPU here .*; use train\.device=cpu$"):
        resolve_device("cuda", "train.device")


def test_cuda_indices_on_a_machine_with_two_gpus(two_gpus, monkeypatch) -> None:
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")  # asked for: the CPU, GPUs or not
    with pytest.raises(ConfigError, match=r"^--device=cuda:2: this machine has 2 CUDA GPUs \(cuda:0 to cuda:1\)$"):
        resolve_device("cuda:2", "--device")
    # Under torchrun each process takes its own GPU when the name leaves the index out ...
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # ... and the one named when it names one
    monkeypatch.setenv("LOCAL_RANK", "2")  # more processes than GPUs
    with pytest.raises(ConfigError, match="this machine has 2 CUDA GPUs"):
        resolve_device("cuda")


def test_one_gpu_is_named_in_the_singular(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(ConfigError, match=r"this machine has 1 CUDA GPU \(cuda:0 to cuda:0\)$"):
        resolve_device("cuda:1")


def test_auto_takes_mps_when_there_is_no_cuda(no_gpu, monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    assert resolve_device("mps") == torch.device("mps")


def test_local_rank_is_read_only_when_it_is_a_number(monkeypatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert devices.local_rank() is None
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert devices.local_rank() == 3
    monkeypatch.setenv("LOCAL_RANK", "x")
    assert devices.local_rank() is None


# --------------------------------------------------------------------------------------
# Where a model is
# --------------------------------------------------------------------------------------


def test_model_device_is_where_the_weights_are() -> None:
    layer = torch.nn.Linear(2, 2)
    assert model_device(layer) == torch.device("cpu")
    assert model_device(layer.to("meta")) == torch.device("meta")
    assert model_device(torch.nn.ReLU()) is None
