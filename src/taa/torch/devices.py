"""The device a run or a command computes on, from its name (``train.device``, ``--device``).

``auto`` takes a GPU when there is one: CUDA, else Apple's MPS, else the CPU. Under
``torchrun`` each process on a machine takes its own GPU, ``cuda:LOCAL_RANK``, when the
name leaves the index out (``auto`` or ``cuda``). A device the machine does not have is one
line (:class:`~taa.config.ConfigError`), before any work.
"""

from __future__ import annotations

import os
from dataclasses import fields, is_dataclass, replace
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from taa.config import ConfigError
from taa.config.training import check_device_name


def cuda_count() -> int:
    """How many CUDA GPUs this process sees (0 on a machine or a torch build without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def mps_available() -> bool:
    """Whether Apple's Metal backend is usable here."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def local_rank() -> Optional[int]:
    """This process's index on its machine under torchrun (``LOCAL_RANK``); None outside it."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None and value.isdigit() else None


def resolve_device(name: str = "auto", what: str = "device") -> torch.device:
    """The :class:`torch.device` that ``name`` (auto, cpu, cuda, cuda:N, mps) means here.

    ``what`` names the setting in the error (``train.device``, ``--device``). Asking for a
    GPU the machine lacks is a ConfigError: ``--device cuda: no CUDA GPU here (torch ...
    sees none); use --device cpu``.
    """
    try:
        check_device_name(name)
    except ConfigError:
        raise ConfigError(f"{what}={name!r} is not one of auto, cpu, cuda, cuda:N, mps") from None
    gpus = cuda_count()
    if name == "auto":
        if gpus:
            name = "cuda"
        elif mps_available():
            name = "mps"
        else:
            return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not mps_available():
            raise ConfigError(f"{what}=mps: Apple's MPS backend is not available here; use {what}=cpu")
        return torch.device("mps")
    if not gpus:
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(f"{what}={name}: no CUDA GPU here (torch {torch.__version__}, {build}, sees none); "
                          f"use {what}=cpu")
    index = int(name.partition(":")[2]) if ":" in name else (local_rank() or 0)
    if index >= gpus:
        raise ConfigError(f"{what}={name}: this machine has {gpus} CUDA GPU{'s' if gpus > 1 else ''} "
                          f"(cuda:0 to cuda:{gpus - 1})")
    return torch.device("cuda", index)


def check_processes(name: str, processes: int, what: str = "train.device") -> torch.device:
    """The device of the first of ``processes`` processes on this machine, once every one
    of them has its own (one line otherwise): under torchrun each takes ``cuda:LOCAL_RANK``,
    so CUDA needs a GPU a process; Apple's MPS serves one process only."""
    device = resolve_device(name, what)
    if processes > 1 and device.type == "mps":
        raise ConfigError(f"{what}={name}: several processes train on CPUs (gloo) or CUDA GPUs (nccl), not on MPS")
    if processes > 1 and device.type == "cuda":
        if ":" in name:
            raise ConfigError(f"{what}={name}: each of {processes} processes takes its own GPU (cuda:LOCAL_RANK); "
                              f"give {what}=cuda")
        if cuda_count() < processes:
            raise ConfigError(f"{what}={name}: {processes} processes need a GPU each; this machine has "
                              f"{cuda_count()} (use --nproc {cuda_count()} or {what}=cpu)")
    return device


def model_device(model: torch.nn.Module) -> Optional[torch.device]:
    """The device of the model's weights (None for a model without any)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else None


def to_device(batch: Any, device: torch.device) -> Any:
    """Every tensor of ``batch`` (a tensor, a dataclass, a tuple or a dict of them) on ``device``."""
    return map_tensors(batch, lambda tensor: tensor.to(device, non_blocking=True))


def map_tensors(batch: Any, function: Callable[[Tensor], Any]) -> Any:
    """``batch`` (a tensor, a dataclass, a tuple or a dict of them, nested) with ``function``
    applied to each tensor; everything else as it is."""
    if isinstance(batch, Tensor):
        return function(batch)
    if is_dataclass(batch):
        return replace(batch, **{f.name: map_tensors(getattr(batch, f.name), function) for f in fields(batch)})
    if isinstance(batch, dict):
        return {key: map_tensors(value, function) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(map_tensors(value, function) for value in batch)
    return batch
