"""Masked language modelling from scratch: BERT's pre-training task "Masked LM".

Devlin et al. 2019, §3.1 "Task #1: Masked LM": "we simply mask some percentage of
the input tokens at random, and then predict those masked tokens [...] we mask 15%
of all WordPiece tokens in each sequence at random." And, because ``[MASK]`` never
appears when fine-tuning: "If the i-th token is chosen, we replace the i-th token
with (1) the [MASK] token 80% of the time (2) a random token 10% of the time (3) the
unchanged i-th token 10% of the time. Then, T_i will be used to predict the
original token with cross entropy loss."

Here each token is chosen independently with probability 15% (as Hugging Face's
data collator does; the paper's script picks round(15% of n) per sequence). Special
tokens (``<s>``, ``</s>``, padding, ...) are never chosen. The loss covers the chosen
positions only: every other label is the ignore index -100.

The data, as RoBERTa's "FULL-SENTENCES" input (Liu et al. 2019, §4.2): ``<s>``, a
window of running text at a random offset, ``</s>``; ``max_length`` tokens in all, so
no padding. The vocabulary is a byte-level BPE with ``<mask>`` learned on the
training part of the text. The run reports the validation loss and the accuracy of
the predictions at the chosen positions, on fixed windows masked the same way every
time.

Notation: ``b`` batch, ``n`` sequence length, ``v`` vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from taa import config as cfg
from taa.data.text_corpus import (
    WindowSampler, check_parts_hold_a_window, find_text_file, fixed_windows, read_text, split_text,
)
from taa.data.tokenizer import SubwordTokenizer, train_bpe
from taa.tasks.runner import Task, run_function
from taa.torch.devices import model_device
from taa.torch.hub import load_run
from taa.torch.models.bert import BertForMaskedLM
from taa.torch.training import TrainResult
from taa.torch.devices import to_device
from taa.torch.training.loop import autocast
from taa.torch.training.losses import label_smoothed_cross_entropy

MASK = "<mask>"
IGNORE_INDEX = -100  # labels of positions left out of the loss (torch's cross-entropy default)

# ------------------------------------------------------------------ masking (BERT §3.1)


def mask_tokens(
    ids: np.ndarray,
    rng: np.random.Generator,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    probability: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """(b, n) token ids -> (inputs, labels), both (b, n).

    Each token that is not special is chosen with ``probability``; a chosen token
    becomes ``mask_id`` with ``mask_fraction``, a random non-special token with
    ``random_fraction``, and stays as it is otherwise. ``labels`` hold the original
    token at chosen positions and ``IGNORE_INDEX`` everywhere else.
    """
    special = np.isin(ids, np.asarray(special_ids))  # (b, n): never chosen
    chosen = (rng.random(ids.shape) < probability) & ~special  # (b, n): 15%
    action = rng.random(ids.shape)  # (b, n): which of the three happens to a chosen token
    to_mask = chosen & (action < mask_fraction)  # 80%
    to_random = chosen & (action >= mask_fraction) & (action < mask_fraction + random_fraction)  # 10%
    regular = np.setdiff1d(np.arange(vocab_size), np.asarray(special_ids))  # what a random token may be
    inputs = ids.copy()
    inputs[to_mask] = mask_id
    inputs[to_random] = rng.choice(regular, size=int(to_random.sum()))
    labels = np.where(chosen, ids, IGNORE_INDEX)
    return inputs, labels


@dataclass
class MaskedLMBatch:
    """The model reads ``inputs`` and predicts ``labels`` where they are not ignored."""

    inputs: Tensor  # (b, n)
    labels: Tensor  # (b, n), IGNORE_INDEX where not chosen


class Masker:
    """The task's masking: the tokenizer's special ids and the config's fractions."""

    def __init__(self, task: cfg.MaskedLMTaskConfig, tokenizer: SubwordTokenizer) -> None:
        self.task, self.tokenizer = task, tokenizer
        self.mask_id = tokenizer.target.token_to_id(MASK)
        if self.mask_id is None:
            raise cfg.ConfigError(f"the tokenizer has no {MASK} token")
        self.special_ids = sorted({tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id, self.mask_id})

    def __call__(self, windows: np.ndarray, rng: np.random.Generator) -> MaskedLMBatch:
        """(b, n - 2) windows of running text -> ``<s>`` window ``</s>``, masked."""
        batch = windows.shape[0]
        bos = np.full((batch, 1), self.tokenizer.bos_id, dtype=np.int64)
        eos = np.full((batch, 1), self.tokenizer.eos_id, dtype=np.int64)
        ids = np.concatenate([bos, windows, eos], axis=1)  # (b, n)
        task = self.task
        inputs, labels = mask_tokens(
            ids, rng, self.mask_id, self.tokenizer.vocab_size, self.special_ids,
            task.mask_probability, task.mask_token_fraction, task.random_token_fraction,
        )
        return MaskedLMBatch(inputs=torch.from_numpy(inputs), labels=torch.from_numpy(labels))


class MaskedLMBatches:
    """Endless, resumable masked batches: batch ``k``'s windows and masks are seeded by ``(seed, k)``."""

    def __init__(self, tokens: np.ndarray, masker: Masker, batch_size: int, seed: int) -> None:
        self.masker, self.seed = masker, seed
        self.windows = WindowSampler(tokens, masker.task.max_length - 2, batch_size, seed)

    def __iter__(self) -> MaskedLMBatches:
        return self

    def __next__(self) -> MaskedLMBatch:
        rng = np.random.default_rng([self.seed, 2, self.windows.position])  # stream 2: training masks
        return self.masker(next(self.windows), rng)

    def state_dict(self) -> dict[str, Any]:
        return self.windows.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.windows.load_state_dict(state)


def fixed_batches(tokens: np.ndarray, masker: Masker, batches: int, batch_size: int, seed: int) -> list[MaskedLMBatch]:
    """Validation: the same windows, masked the same way, at every evaluation."""
    windows = fixed_windows(tokens, masker.task.max_length - 2, batches, batch_size, seed)
    return [masker(w, np.random.default_rng([seed, 3, i])) for i, w in enumerate(windows)]  # stream 3


def masked_lm_loss(smoothing: float = 0.0):
    """Summed cross-entropy over the chosen positions and their number."""

    def compute_loss(model: nn.Module, batch: MaskedLMBatch) -> tuple[Tensor, Tensor]:
        logits = model(batch.inputs)  # (b, n, v): no padding, so no attention mask
        return label_smoothed_cross_entropy(logits, batch.labels, smoothing, ignore_index=IGNORE_INDEX)

    return compute_loss


@torch.no_grad()
def evaluate_masked_lm(model: nn.Module, batches: list[MaskedLMBatch], dtype: str = "float32") -> dict[str, float]:
    """Mean loss and accuracy at the chosen positions (no dropout)."""
    model.eval()
    total, correct, count = 0.0, 0, 0
    device = model_device(model)
    with autocast(dtype, device):
        for batch in batches:
            batch = to_device(batch, device)
            logits = model(batch.inputs)  # (b, n, v)
            loss, n = label_smoothed_cross_entropy(logits, batch.labels, 0.0, ignore_index=IGNORE_INDEX)
            chosen = batch.labels != IGNORE_INDEX
            correct += int((logits.argmax(dim=-1)[chosen] == batch.labels[chosen]).sum())
            total, count = total + float(loss), count + int(n)
    loss = total / max(1, count)
    return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50.0)), "val_accuracy": correct / max(1, count)}


# ------------------------------------------------------------------ the task


def build_tokenizer(task: cfg.MaskedLMTaskConfig, train_text: str) -> SubwordTokenizer:
    """Byte-level BPE learned on the training text, with ``<mask>`` as id 4."""
    return SubwordTokenizer(
        train_bpe([train_text], task.vocab_size, task.min_frequency, byte_level=True, extra_special_tokens=[MASK])
    )


class MaskedLMTask(Task):
    """Running text, a byte-level BPE vocabulary with ``<mask>``, masked windows; the loss and
    accuracy at the chosen positions of fixed validation windows."""

    example_preset = "bert-tiny"
    trains_tokenizer = True

    def check(self) -> None:
        task, model = self.recipe.data, self.recipe.model
        if task.max_length > model.max_length:
            raise cfg.ConfigError(
                f"data.max_length={task.max_length} exceeds model.max_length={model.max_length} (positions)"
            )

    def read_data(self) -> None:
        task = self.recipe.data
        self.train_text, self.val_text = split_text(read_text(find_text_file(task.file, task.dir)), task.train_fraction)

    def new_tokenizer(self) -> SubwordTokenizer:
        return build_tokenizer(self.recipe.data, self.train_text)

    def load_tokenizer(self, folder: Path) -> SubwordTokenizer:
        return SubwordTokenizer.load(folder)

    def save_tokenizer(self, folder: Path) -> None:
        self.tokenizer.save(folder)

    def model_config(self) -> cfg.BertConfig:
        return dataclasses.replace(self.recipe.model, vocab_size=self.tokenizer.vocab_size, pad_id=self.tokenizer.pad_id)

    def encode(self) -> None:
        task, train = self.recipe.data, self.recipe.train
        self.masker = Masker(task, self.tokenizer)
        self.train_tokens = np.asarray(self.tokenizer.encode(self.train_text), dtype=np.int64)
        self.val_tokens = np.asarray(self.tokenizer.encode(self.val_text), dtype=np.int64)
        check_parts_hold_a_window(find_text_file(task.file, task.dir), len(self.train_tokens), len(self.val_tokens),
                                  task.train_fraction, task.max_length - 2,
                                  f"data.max_length={task.max_length} less <s> and </s>", "data.max_length")
        self.val_batches = fixed_batches(self.val_tokens, self.masker, task.eval_batches, train.batch_size, train.seed)

    def batches(self) -> MaskedLMBatches:
        train = self.recipe.train
        return MaskedLMBatches(self.train_tokens, self.masker, train.batch_size, train.seed)

    def loss(self):
        return masked_lm_loss(self.recipe.train.label_smoothing)

    def validation_metrics(self) -> dict[str, str]:
        return {"val_loss": "min", "val_perplexity": "min", "val_accuracy": "max"}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return evaluate_masked_lm(model, self.val_batches, self.recipe.train.dtype)

    def final_metrics(self, model: nn.Module, result: TrainResult) -> dict[str, Any]:
        return {"train_tokens": len(self.train_tokens), "val_tokens": len(self.val_tokens),
                "vocab_size": self.tokenizer.vocab_size}


run = run_function(MaskedLMTask)


def load_masked_lm(directory: str | Path) -> tuple[BertForMaskedLM, SubwordTokenizer, cfg.RecipeConfig]:
    """A trained masked-LM checkpoint folder -> (model in eval mode, tokenizer, recipe)."""
    return load_run(directory, "masked_lm")
