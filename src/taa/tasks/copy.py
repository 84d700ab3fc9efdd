"""The synthetic copy task of the Annotated Transformer (Rush 2018, "A First Example").

Random sequences of symbols; the target is the source itself. Every sequence starts
with symbol 1, which is also the decoder's start token; 0 pads. A model that has
learned attention copies them exactly; we score exact-match greedy decoding on
held-out sequences.

It trains with torch, the Keras port or the Flax port (``train.framework``): the same
batches (drawn by torch's generator, handed to Keras and Flax as arrays), the framework's
own loss and greedy decoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from taa import config as cfg
from taa.config import CopyTaskConfig
from taa.tasks.runner import Task, run_function, training_backend
from taa.torch.devices import model_device
from taa.torch.generate import greedy_decode
from taa.torch.models.transformer import Transformer
from taa.torch.training import Seq2SeqBatch, TrainResult

FIRST_SYMBOL = 2  # 0 pads, 1 starts every sequence


def random_sequences(n: int, length: int, vocab_size: int, start_id: int, generator: torch.Generator) -> Tensor:
    """(n, length) sequences: ``start_id`` then symbols drawn from 2..vocab_size-1."""
    data = torch.randint(FIRST_SYMBOL, vocab_size, (n, length), generator=generator)
    data[:, 0] = start_id
    return data


class CopyBatches:
    """An endless, resumable stream of copy batches: the decoder reads x[:-1] and predicts x[1:]."""

    def __init__(self, task: CopyTaskConfig, vocab_size: int, batch_size: int, start_id: int, seed: int) -> None:
        self.task, self.vocab_size, self.batch_size, self.start_id = task, vocab_size, batch_size, start_id
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> CopyBatches:
        return self

    def __next__(self) -> Seq2SeqBatch:
        data = random_sequences(self.batch_size, self.task.length, self.vocab_size, self.start_id, self.generator)
        return Seq2SeqBatch(source=data, target_input=data[:, :-1], target_output=data[:, 1:])

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state().tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))


@torch.no_grad()
def exact_match(model: Transformer, sources: Tensor) -> float:
    """Fraction of sequences that greedy decoding reproduces exactly."""
    model.eval()
    sources = sources.to(model_device(model))
    length = sources.shape[1]
    # The copy task has no end token: decode exactly `length` tokens (-1 never matches).
    decoded = greedy_decode(model, sources, max_length=length, start_id=sources[0, 0].item(), end_id=-1)
    return (decoded == sources).all(dim=1).float().mean().item()


def keras_exact_match(model, sources: Tensor) -> float:
    """:func:`exact_match` of a Keras Transformer (:func:`taa.keras.generate.greedy_decode`)."""
    from taa.keras.generate import greedy_decode as keras_greedy_decode

    sources = sources.numpy()
    length = sources.shape[1]
    decoded = np.asarray(keras_greedy_decode(model, sources, max_length=length, start_id=int(sources[0, 0]), end_id=-1))
    return float((decoded == sources).all(axis=1).mean()) if decoded.shape == sources.shape else 0.0


def flax_exact_match(model, sources: Tensor) -> float:
    """:func:`exact_match` of a Flax Transformer (:func:`taa.flax.generate.greedy_decode`)."""
    from taa.flax.generate import greedy_decode as flax_greedy_decode

    sources = sources.numpy()
    length = sources.shape[1]
    decoded = np.asarray(flax_greedy_decode(model, sources, max_length=length, start_id=int(sources[0, 0]), end_id=-1))
    return float((decoded == sources).all(axis=1).mean()) if decoded.shape == sources.shape else 0.0


EXACT_MATCH = {"torch": exact_match, "keras": keras_exact_match, "flax": flax_exact_match}


class CopyTask(Task):
    """Random sequences to copy; exact match of greedy decoding on held-out ones."""

    example_preset = "copy-task"
    final_phase = "held-out decoding"
    frameworks = ("torch", "keras", "flax")

    def check(self) -> None:
        """A sequence must fit the model's positions: the encoder reads all ``data.length``
        tokens and greedy decoding writes as many."""
        length, positions = self.recipe.data.length, self.recipe.model.max_source_length
        if positions is not None and length > positions:
            raise cfg.ConfigError(f"data.length={length} exceeds model.max_length={positions} (the model's positions): "
                                  "lower data.length or raise model.max_length")

    def encode(self) -> None:
        task, model, seed = self.recipe.data, self.recipe.model, self.recipe.train.seed
        generator = torch.Generator().manual_seed(seed + 1)  # another stream than the training batches'
        self.held_out = random_sequences(task.eval_sequences, task.length, model.source_vocab_size, model.bos_id,
                                         generator)

    def batches(self) -> CopyBatches:
        model, train = self.recipe.model, self.recipe.train
        return CopyBatches(self.recipe.data, model.source_vocab_size, train.batch_size, model.bos_id, train.seed)

    def loss(self):
        return training_backend(self.framework).seq2seq_loss(self.recipe.train.label_smoothing,
                                                             self.recipe.model.pad_id)

    def final_metrics(self, model: Transformer, result: TrainResult) -> dict[str, Any]:
        return {"exact_match": EXACT_MATCH[self.framework](model, self.held_out)}


run = run_function(CopyTask)
