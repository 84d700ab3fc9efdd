"""Where a Flax run computes: one process, and its device.

The Flax twin of :mod:`taa.keras.training.distributed`, for one process only: a Flax run
on several processes (``taa train --nproc``, torchrun) is refused in one line. What the
task runner asks of a run's place (:func:`taa.tasks.runner.training_backend`) is here:
``is_main``, ``main_first()``, ``broadcast`` and ``close()``.

The device: ``train.device: auto`` leaves the choice to JAX (its default backend: a GPU
when it sees one); ``cpu`` and ``cuda``/``cuda:N`` make that device JAX's default until
:meth:`Parallel.close` (``jax.default_device``); ``mps`` is refused. The number format
needs no setting here: the trainer casts the weights to bfloat16 inside the step
(:mod:`taa.flax.training.step`). ``train.threads`` is left to XLA, which sizes its thread
pool when JAX starts: :func:`setup` warns that it is not taken.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

import jax

from taa.config import ConfigError, TrainConfig
from taa.training.launch import process_count


def gpu_count() -> int:
    """How many GPUs JAX sees."""
    try:
        return len(jax.devices("gpu"))
    except RuntimeError:  # no GPU backend
        return 0


def check_device(name: str) -> None:
    """``train.device=cuda`` or ``cuda:N`` needs that GPU: one line when JAX lacks it."""
    if not name.startswith("cuda"):
        return
    index, found = int(name.partition(":")[2] or 0), gpu_count()
    if index >= found:
        raise ConfigError(f"train.device={name}: JAX sees {found or 'no'} GPU{'' if found == 1 else 's'} here; "
                          "use train.device=auto or cpu")


def jax_device(name: str) -> Optional[jax.Device]:
    """``train.device`` as a JAX device (None: JAX's own choice)."""
    if name == "auto":
        return None
    if name == "cpu":
        return jax.devices("cpu")[0]
    if name.startswith("cuda"):
        check_device(name)
        return jax.devices("gpu")[int(name.partition(":")[2] or 0)]
    raise ConfigError(f"train.device={name!r}: the Flax trainer runs on auto, cpu, cuda or cuda:N")


class Parallel:
    """One process: the run's default device, held until :meth:`close`."""

    world_size = 1
    rank = 0
    kind = "single"

    def __init__(self, train: TrainConfig) -> None:
        self.device = jax_device(train.device)
        self.scope = jax.default_device(self.device) if self.device is not None else None
        if self.scope is not None:
            self.scope.__enter__()

    @property
    def is_main(self) -> bool:
        """Always: the one process evaluates, writes, tracks and shows progress."""
        return True

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """The body runs here (no other process waits for it)."""
        yield

    def broadcast(self, value: Any) -> Any:
        return value

    def close(self) -> None:
        """Leave the device scope."""
        if self.scope is not None:
            self.scope.__exit__(None, None, None)
            self.scope = None


def setup(train: TrainConfig) -> Parallel:
    """The run's place: one process (several are refused in one line) and its device."""
    processes = process_count()
    if processes > 1:
        raise ConfigError(f"train.framework=flax trains on one process, not {processes} (leave out --nproc, "
                          "or train with train.framework: torch)")
    if train.threads is not None:  # XLA sizes its thread pool when JAX starts, not per run
        warnings.warn(f"train.threads={train.threads}: XLA chooses its own threads with train.framework=flax "
                      "(the setting changes no result)", stacklevel=2)
    return Parallel(train)
