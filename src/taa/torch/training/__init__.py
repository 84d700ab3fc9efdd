"""Training with torch: the loop, optimizers, losses and checkpoint tensors (schedules and the
progress bar are framework-neutral, in :mod:`taa.training`, and re-exported here)."""

from taa.folders import load_recipe
from taa.torch.training.checkpoint import load_weights, save_checkpoint
from taa.torch.training.distributed import Parallel
from taa.torch.training.distributed import setup as setup_parallel
from taa.torch.training.loop import (
    BatchStream,
    Seq2SeqBatch,
    Trainer,
    TrainResult,
    count_parameters,
    fit,
    make_optimizer,
    seed_everything,
    seq2seq_loss,
)
from taa.torch.training.losses import label_smoothed_cross_entropy
from taa.torch.training.muon import Muon
from taa.training.schedules import constant, cosine, noam, schedule_from_config

__all__ = [
    "BatchStream", "Muon", "Parallel", "Seq2SeqBatch", "TrainResult", "Trainer", "constant", "cosine", "count_parameters", "fit",
    "label_smoothed_cross_entropy", "load_recipe", "load_weights", "make_optimizer", "noam", "save_checkpoint",
    "schedule_from_config", "seed_everything", "seq2seq_loss", "setup_parallel",
]
