"""Training with Flax NNX: the torch trainer's recipe, checkpoints and losses, one compiled
step (schedules and the progress bar are framework-neutral, in :mod:`taa.training`).

The Flax twin of :mod:`taa.torch.training`, and what :func:`taa.tasks.runner.training_backend`
imports for ``train.framework: flax``: ``setup_parallel``, ``Trainer``, ``seed_everything``,
``build_model``, ``save_checkpoint``, ``count_parameters``, and ``check_train`` (what this
trainer refuses, before any data is read).
"""

from taa.flax.training.adam import adamw
from taa.flax.training.checkpoint import load_weights, save_checkpoint
from taa.flax.training.distributed import Parallel
from taa.flax.training.distributed import setup as setup_parallel
from taa.flax.training.loop import (
    LossEvaluator,
    Trainer,
    TrainResult,
    build_model,
    check_train,
    count_parameters,
    fit,
    make_optimizer,
    seed_everything,
    seq2seq_loss,
)
from taa.flax.training.losses import label_smoothed_cross_entropy
from taa.flax.training.muon import muon, orthogonalize, scale_by_muon
from taa.flax.training.step import TrainStep
from taa.folders import load_recipe
from taa.training.batches import BatchStream
from taa.training.schedules import constant, cosine, noam, schedule_from_config

__all__ = [
    "BatchStream", "LossEvaluator", "Parallel", "TrainResult", "TrainStep", "Trainer", "adamw", "build_model",
    "check_train", "constant", "cosine", "count_parameters", "fit", "label_smoothed_cross_entropy", "load_recipe",
    "load_weights", "make_optimizer", "muon", "noam", "orthogonalize", "save_checkpoint", "scale_by_muon",
    "schedule_from_config", "seed_everything", "seq2seq_loss", "setup_parallel",
]
