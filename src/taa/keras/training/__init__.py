"""Training with Keras 3: ``model.fit`` with the torch trainer's recipe, checkpoints and
losses (schedules and the progress bar are framework-neutral, in :mod:`taa.training`).

The Keras twin of :mod:`taa.torch.training`, and what :func:`taa.tasks.runner.training_backend`
imports for ``train.framework: keras``: ``setup_parallel``, ``Trainer``, ``seed_everything``,
``save_checkpoint``, ``count_parameters``, and ``check_train`` (what this trainer refuses,
before any data is read).
"""

from taa.folders import load_recipe
from taa.keras.training.adam import Adam
from taa.keras.training.checkpoint import load_weights, save_checkpoint
from taa.keras.training.distributed import Parallel
from taa.keras.training.distributed import setup as setup_parallel
from taa.keras.training.loop import (
    LossEvaluator,
    Trainer,
    TrainResult,
    check_train,
    count_parameters,
    fit,
    make_optimizer,
    seed_everything,
    seq2seq_loss,
)
from taa.keras.training.losses import label_smoothed_cross_entropy
from taa.keras.training.muon import Muon
from taa.training.batches import BatchStream
from taa.training.schedules import constant, cosine, noam, schedule_from_config

__all__ = [
    "Adam", "BatchStream", "LossEvaluator", "Muon", "Parallel", "TrainResult", "Trainer", "check_train", "constant",
    "cosine", "count_parameters", "fit", "label_smoothed_cross_entropy", "load_recipe", "load_weights",
    "make_optimizer", "noam", "save_checkpoint", "schedule_from_config", "seed_everything", "seq2seq_loss",
    "setup_parallel",
]
