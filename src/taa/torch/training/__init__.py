"""Training: the loop, optimizers, schedules, losses, checkpoints and the progress bar."""

from taa.torch.training.checkpoint import load_recipe, load_weights, save_checkpoint
from taa.torch.training.loop import (
    BatchStream,
    Seq2SeqBatch,
    Trainer,
    TrainResult,
    fit,
    make_optimizer,
    seed_everything,
    seq2seq_loss,
)
from taa.torch.training.losses import label_smoothed_cross_entropy
from taa.torch.training.muon import Muon
from taa.torch.training.schedules import constant, cosine, noam, schedule_from_config

__all__ = [
    "BatchStream", "Muon", "Seq2SeqBatch", "TrainResult", "Trainer", "constant", "cosine", "fit",
    "label_smoothed_cross_entropy", "load_recipe", "load_weights", "make_optimizer", "noam", "save_checkpoint",
    "schedule_from_config", "seed_everything", "seq2seq_loss",
]
