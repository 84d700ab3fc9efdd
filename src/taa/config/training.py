"""The training run's configuration: steps, batches, optimizer, schedule, checkpoints."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Literal, Optional

from taa.config.coerce import ConfigError, _check_types, _require

# The number formats a model computes in, by name (taa.training.dtypes says what each means).
DtypeName = Literal["float32", "bfloat16"]

MAX_THREADS = 1024  # the most CPU threads a run may ask for

# Where a run computes: "auto" (a GPU when there is one: CUDA, else Apple's MPS, else the
# CPU), "cpu", "cuda" (the first GPU, or each process's own under torchrun), "cuda:N", "mps".
DEVICE_NAMES = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")

# How many processes share a model (taa.torch.training.distributed): "ddp" keeps a whole
# copy on each and averages the gradients; "fsdp" shards weights, gradients and optimizer
# state across them (FSDP2), for a model too big for one device.
ParallelName = Literal["ddp", "fsdp"]


def check_device_name(name: str) -> str:
    """``name`` if it spells a device taa knows (:data:`DEVICE_NAMES`), else a one-line ConfigError."""
    if not isinstance(name, str) or not DEVICE_NAMES.fullmatch(name):
        raise ConfigError(f"device={name!r} is not one of auto, cpu, cuda, cuda:N, mps")
    return name

# Whose model classes, Trainer and checkpoints a run uses: taa.torch (the reference), the
# Keras 3 port (taa.keras.training; its backend is Keras's own choice, KERAS_BACKEND) or the
# Flax NNX port (taa.flax.training, on JAX).
FrameworkName = Literal["torch", "keras", "flax"]

# What a step whose loss or gradient is not finite does (taa.training.divergence says why).
NonFinitePolicy = Literal["stop", "skip"]

# The validation metric that ranks checkpoints unless a recipe says otherwise: every task
# with a validation reports it. A task without validation takes no other.
DEFAULT_SELECT_METRIC = "val_loss"


def _check_finite(config: object) -> None:
    """Every float field of a config dataclass is a finite number: inf would pass the range
    checks (``lr > 0``), and nan fail them with a message that blames the range."""
    for f in fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        _require(not isinstance(value, float) or math.isfinite(value), f"{f.name}={value} must be a finite number")


@dataclass
class TrainConfig:
    """The optimisation run: steps, batches, optimizer and schedule (paper §5.3).

    A step whose loss or gradient norm is inf or nan (a rate too high, a bad batch) is never
    applied; ``nonfinite`` says what follows (:mod:`taa.training.divergence`):

    - ``stop`` (the default): the run ends with a one-line error naming the step; the last
      state saved (``state/``) holds finite weights and resumes;
    - ``skip``: the step's update is dropped (its batches are spent and it counts as a step),
      the rate is multiplied by ``skip_lr_factor`` for the rest of the run, and the run goes
      on; once ``max_skipped_steps`` steps were skipped, the next non-finite step stops it
      as ``stop`` would. The skipped steps are the ``skipped_steps`` metric.

    Every number here must be finite and in its range (``lr: inf``, ``adam_beta1: 1.5``,
    ``weight_decay: -1`` are refused when the recipe is read); ``select_metric`` must be one
    of the metrics the task's validation reports (checked when the run starts, by the task).
    """

    steps: int = 1000  # optimizer steps
    batch_size: int = 32  # sequences per batch
    lr: float = 1.0  # peak scale: the warm-up schedule multiplies it (paper: lrate formula)
    schedule: Literal["noam", "cosine", "constant"] = "noam"  # paper §5.3 is "noam"
    warmup_steps: int = 400  # paper: warmup_steps=4000
    min_lr_ratio: float = 0.0  # cosine: floor as a fraction of the peak
    adam_beta1: float = 0.9  # paper: beta1=0.9
    adam_beta2: float = 0.98  # paper: beta2=0.98
    adam_eps: float = 1e-9  # paper: epsilon=1e-9
    weight_decay: float = 0.0  # decoupled weight decay (AdamW); 0 = Adam
    optimizer: Literal["adam", "muon"] = "adam"  # adam: Adam(W); muon: Muon on the layers' matrices, AdamW elsewhere
    muon_momentum: float = 0.95  # Muon's Nesterov momentum mu (Jordan et al. 2024)
    layer_lr_decay: float = 1.0  # fine-tuning: each layer below the top learns this much slower (1 = off)
    label_smoothing: float = 0.0  # paper §5.4: 0.1
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    grad_accumulation: int = 1  # batches whose gradients add up to one optimizer step
    dtype: DtypeName = "float32"  # bfloat16: autocast matmuls (mixed precision)
    seed: int = 0  # seeds data, initialisation and dropout
    threads: Optional[int] = None  # CPU threads for the framework's kernels; None = the framework decides
    device: str = "auto"  # auto (a GPU when there is one), cpu, cuda, cuda:N, mps (DEVICE_NAMES)
    parallel: ParallelName = "ddp"  # several processes: ddp (a copy each) or fsdp (sharded); one process: unused
    log_every: int = 10  # steps between progress updates
    eval_every: int = 0  # steps between validations; 0 = only at the end
    checkpoint_every: int = 0  # steps between resumable checkpoints; 0 = at each validation
    select_metric: str = DEFAULT_SELECT_METRIC  # the validation metric that ranks checkpoints (the task's names)
    select_mode: Literal["min", "max"] = "min"  # whether lower or higher select_metric is better
    keep_best: int = 1  # best checkpoints kept (paper §6.1 averages the last 5 or 20)
    average_best: bool = False  # final weights = average of the kept best checkpoints
    early_stopping: int = 0  # stop after this many validations without improvement; 0 = never
    max_minutes: float = 0.0  # wall-time budget for training; 0 = none
    nonfinite: NonFinitePolicy = "stop"  # a step with an inf/nan loss or gradient: stop the run, or skip the step
    max_skipped_steps: int = 10  # skip: the most steps a run skips; the next non-finite step stops it
    skip_lr_factor: float = 0.5  # skip: each skipped step multiplies the rate by this for the rest of the run
    framework: FrameworkName = "torch"  # torch, keras or flax: whose model, Trainer, checkpoints (--framework)

    def __post_init__(self) -> None:
        _check_types(self)
        _check_finite(self)
        for name in ("steps", "batch_size", "log_every", "grad_accumulation", "keep_best"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")
        check_device_name(self.device)
        _require(self.threads is None or self.threads > 0, f"threads={self.threads} must be positive")
        _require(self.threads is None or self.threads <= MAX_THREADS,  # far more crashes the kernels' thread pool
                 f"threads={self.threads} must be at most {MAX_THREADS}")
        for name in ("eval_every", "checkpoint_every", "early_stopping", "max_skipped_steps"):
            _require(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0")
        _require(self.max_minutes >= 0, f"max_minutes={self.max_minutes} must be >= 0")
        _require(self.lr > 0, f"lr={self.lr} must be positive")
        _require(0 <= self.seed < 2**32, f"seed={self.seed} must be in [0, 2**32)")  # what every generator seeded takes
        _require(self.warmup_steps >= 0, f"warmup_steps={self.warmup_steps} must be >= 0")
        _require(0.0 <= self.label_smoothing < 1.0, f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        _require(self.grad_clip >= 0, f"grad_clip={self.grad_clip} must be >= 0")
        _require(0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        for name in ("adam_beta1", "adam_beta2", "muon_momentum"):  # a moment's decay: 1 would never forget
            value = getattr(self, name)
            _require(0.0 <= value < 1.0, f"{name}={value} must be in [0, 1)")
        _require(self.adam_eps > 0, f"adam_eps={self.adam_eps} must be positive")
        _require(self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0 (0 = Adam)")
        _require(self.select_metric.strip() != "", "select_metric='' is empty: name a validation metric")
        _require(0.0 < self.layer_lr_decay <= 1.0, f"layer_lr_decay={self.layer_lr_decay} must be in (0, 1]")
        _require(0.0 < self.skip_lr_factor <= 1.0, f"skip_lr_factor={self.skip_lr_factor} must be in (0, 1]")
        if self.schedule == "noam":
            _require(self.warmup_steps > 0, "schedule=noam needs warmup_steps > 0")

