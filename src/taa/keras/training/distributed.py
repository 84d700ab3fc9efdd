"""Where a Keras run computes: one process, its device and its number format.

The Keras twin of :mod:`taa.torch.training.distributed`, for one process only: a Keras run
on several processes (``taa train --nproc``, torchrun) is refused in one line. What the
task runner asks of a run's place (:func:`taa.tasks.runner.training_backend`) is here:
``is_main``, ``main_first()``, ``broadcast`` and ``close()``.

:func:`setup` also settles what Keras decides when a layer is made, before the run
builds its model:

- the number format: ``train.dtype: bfloat16`` is Keras's ``mixed_bfloat16`` policy (the
  layers compute in bfloat16, the weights and their updates stay float32: the torch
  trainer's autocast); ``float32`` is ``float32``. :meth:`Parallel.close` puts back the
  policy that was set before;
- the device: ``train.device: auto`` leaves the choice to Keras's backend (a GPU when it
  sees one); ``cpu`` and ``cuda``/``cuda:N`` place the run there (``keras.device``);
  ``mps`` is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

import keras

from taa.config import ConfigError, TrainConfig
from taa.training.dtypes import BFLOAT16
from taa.training.launch import process_count

MIXED_BFLOAT16 = "mixed_bfloat16"  # Keras's policy for train.dtype: bfloat16


def keras_device(name: str) -> Optional[str]:
    """``train.device`` as Keras names it (None: Keras's own choice)."""
    if name == "auto":
        return None
    if name == "cpu":
        return "cpu:0"
    if name.startswith("cuda"):
        return f"gpu:{name.partition(':')[2] or 0}"
    raise ConfigError(f"train.device={name!r}: the Keras trainer runs on auto, cpu, cuda or cuda:N")


def gpu_count() -> int:
    """How many GPUs Keras's backend sees (the one backend-specific question the trainer asks)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return sum(device.platform == "gpu" for device in jax.devices())
    return 0


def check_device(name: str) -> None:
    """``train.device=cuda`` or ``cuda:N`` needs that GPU: one line when the backend lacks it."""
    if not name.startswith("cuda"):
        return
    index, found = int(name.partition(":")[2] or 0), gpu_count()
    if index >= found:
        raise ConfigError(f"train.device={name}: Keras's {keras.backend.backend()} backend sees "
                          f"{found or 'no'} GPU{'' if found == 1 else 's'} here; use train.device=auto or cpu")


class Parallel:
    """One process: the run's device scope and number format, held until :meth:`close`."""

    world_size = 1
    rank = 0
    kind = "single"

    def __init__(self, train: TrainConfig) -> None:
        self.device = keras_device(train.device)
        self.previous_policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy(MIXED_BFLOAT16 if train.dtype == BFLOAT16 else "float32")
        self.scope = keras.device(self.device) if self.device is not None else None
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
        """Leave the device scope and put back the number format set before."""
        if self.scope is not None:
            self.scope.__exit__(None, None, None)
            self.scope = None
        keras.config.set_dtype_policy(self.previous_policy)


def setup(train: TrainConfig) -> Parallel:
    """The run's place: one process (several are refused in one line), its device and number format."""
    processes = process_count()
    if processes > 1:
        raise ConfigError(f"train.framework=keras trains on one process, not {processes} (leave out --nproc, "
                          "or train with train.framework: torch)")
    return Parallel(train)
