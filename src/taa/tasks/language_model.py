"""Language modelling end to end: text -> tokens -> random windows -> GPT -> validation loss, sample.

The task GPT is trained on (Radford et al. 2018, §3.1, equation 1): maximise

    L(U) = sum_i log P(u_i | u_{i-k}, ..., u_{i-1})

over a corpus U with a context of k tokens, i.e. minimise the cross-entropy of each
next token. Set up as nanoGPT's ``shakespeare_char`` (Karpathy):

1. read Tiny Shakespeare (or any text file); the first 90% of the characters train,
   the last 10% validate;
2. tokenize: one id per character (65 for Shakespeare), or a byte-level BPE
   learned on the training part;
3. each step reads ``batch_size`` windows of ``block_size + 1`` tokens at random
   offsets; the model reads ``window[:-1]`` and predicts ``window[1:]``, every
   position at once under the causal mask;
4. validation: the mean next-token loss over every token of the validation text
   (``eval_batches: 0``), or over a fixed set of ``eval_batches`` batches of random
   windows (nanoGPT's estimate; the same windows at every evaluation, so the numbers
   compare across steps and runs);
5. at the end, a text sample continuing ``sample_prompt`` (temperature 0.8, top-k
   200, as nanoGPT's ``sample.py``), saved as ``sample.txt`` and reported.

The run folder holds ``tokenizer/`` next to the weights, as translation's does, so
:func:`load_language_model` (and ``taa generate --checkpoint DIR``) restores both.

It trains with torch, the Keras port or the Flax port (``train.framework``): the same
windows, the framework's own cross-entropy, validation (:class:`taa.keras.training.LossEvaluator`,
:class:`taa.flax.training.LossEvaluator`: one compiled forward per batch shape) and sampler
(:func:`taa.keras.generate.sample`, :func:`taa.flax.generate.sample`).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from taa import config as cfg
from taa.data.text import DataError
from taa.data.text_corpus import (
    WindowSampler, check_parts_hold_a_window, every_window, find_text_file, fixed_windows, read_text, split_text,
)
from taa.data.tokenizer import CharTokenizer, SubwordTokenizer, train_bpe
from taa.tasks.runner import Task, run_function, training_backend
from taa.folders import CheckpointError
from taa.text import encode_text, load_tokenizer
from taa.torch.devices import model_device
from taa.torch.generate import sample
from taa.torch.hub import Pretrained, load_run
from taa.torch.models.gpt import GPT
from taa.torch.training import TrainResult
from taa.torch.devices import to_device
from taa.torch.training.loop import autocast
from taa.torch.training.losses import label_smoothed_cross_entropy
from taa.training.progress import counted

SAMPLE = "sample.txt"
EVAL_BATCH_SIZE = 64  # windows per batch when validating on the whole text

Tokenizer = CharTokenizer | SubwordTokenizer

# ------------------------------------------------------------------ data


def load_text(task: cfg.LanguageModelTaskConfig) -> tuple[str, str]:
    """(training text, validation text) of the task's file, split as nanoGPT does."""
    text = read_text(find_text_file(task.file, task.dir))
    return split_text(text, task.train_fraction)


def build_tokenizer(task: cfg.LanguageModelTaskConfig, train_text: str, val_text: str) -> Tokenizer:
    """Characters of the whole text (nanoGPT's vocabulary), or byte-level BPE learned on the training text."""
    if task.tokenizer == "char":
        return CharTokenizer.train(train_text + val_text)
    return SubwordTokenizer(train_bpe([train_text], task.vocab_size, task.min_frequency, byte_level=True))


def block_size(recipe: cfg.RecipeConfig) -> int:
    """The context the model trains on: ``data.block_size``, else the model's ``max_length``."""
    size = recipe.data.block_size or recipe.model.max_length
    if size > recipe.model.max_length:
        raise cfg.ConfigError(
            f"data.block_size={size} exceeds model.max_length={recipe.model.max_length} (the position table)"
        )
    return size


@dataclass
class LanguageModelBatch:
    """The model reads ``inputs`` and predicts ``targets``, the same windows shifted by one."""

    inputs: Tensor  # (b, n)
    targets: Tensor  # (b, n)


def to_batch(windows: np.ndarray) -> LanguageModelBatch:
    """(b, n + 1) token windows -> inputs window[:, :-1], targets window[:, 1:]."""
    tokens = torch.from_numpy(windows)
    return LanguageModelBatch(inputs=tokens[:, :-1], targets=tokens[:, 1:])


class LanguageModelBatches:
    """Endless, resumable batches of random windows (nanoGPT's ``get_batch``)."""

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int) -> None:
        self.windows = WindowSampler(tokens, block_size + 1, batch_size, seed)

    def __iter__(self) -> LanguageModelBatches:
        return self

    def __next__(self) -> LanguageModelBatch:
        return to_batch(next(self.windows))

    def state_dict(self) -> dict[str, Any]:
        return self.windows.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.windows.load_state_dict(state)


def language_model_loss(smoothing: float = 0.0, cross_entropy=label_smoothed_cross_entropy):
    """Summed next-token cross-entropy and the number of predicted tokens. ``cross_entropy``
    is the framework's :func:`~taa.torch.training.label_smoothed_cross_entropy` (torch's by default)."""

    def compute_loss(model: nn.Module, batch: LanguageModelBatch) -> tuple[Tensor, Tensor]:
        logits = model(batch.inputs)  # (b, n, v)
        return cross_entropy(logits, batch.targets, smoothing)

    return compute_loss


@torch.no_grad()
def validation_loss(model: nn.Module, windows: list[np.ndarray], dtype: str = "float32") -> float:
    """Mean next-token cross-entropy over fixed windows (no dropout)."""
    model.eval()
    compute_loss = language_model_loss()
    total, count = 0.0, 0
    device = model_device(model)
    with autocast(dtype, device):
        for batch in windows:
            loss, n = compute_loss(model, to_device(to_batch(batch), device))
            total, count = total + float(loss), count + int(n)
    return total / max(1, count)


def port_loss_evaluator(framework: str, dtype: str = "float32"):
    """A port's ``LossEvaluator`` of the next-token loss (one compiled forward per window
    shape): Keras's in the number format the model was made in, Flax's in ``dtype``."""
    training = training_backend(framework)
    compute_loss = language_model_loss(cross_entropy=training.label_smoothed_cross_entropy)
    if framework == "flax":
        return training.LossEvaluator(compute_loss, dtype=dtype)
    return training.LossEvaluator(compute_loss)


def port_validation_loss(model, windows: list[np.ndarray], dtype: str = "float32", evaluator=None) -> float:
    """:func:`validation_loss` of a port's model (``taa.keras`` or ``taa.flax``, known by its
    class's package) with its framework's loss; ``evaluator``: one made before, reused."""
    evaluator = evaluator or port_loss_evaluator(type(model).__module__.split(".")[1], dtype)
    return evaluator(model, (LanguageModelBatch(inputs=w[:, :-1], targets=w[:, 1:]) for w in windows))


def perplexity(loss: float) -> float:
    """exp of a mean next-token loss (capped, so a diverged model gives a huge number, not inf)."""
    return math.exp(min(loss, 50.0))


def score_text(model: nn.Module, tokens: np.ndarray, context: int, dtype: str = "float32") -> dict[str, Any]:
    """The mean next-token loss and perplexity of running text, read as validation reads the
    whole validation text: consecutive windows of ``context`` inputs (fewer when the text is
    shorter), every token after the first predicted once, a tail shorter than a window left out."""
    length = min(context + 1, len(tokens))
    if length < 2:
        raise DataError(f"the text has {counted(len(tokens), 'token')}: at least 2 are needed to predict one")
    windows = every_window(tokens, length, EVAL_BATCH_SIZE)  # batches of (b, length)
    if isinstance(model, nn.Module):
        loss = validation_loss(model, windows, dtype)
    else:  # a port's model (Flax, Keras): its framework's loss, compiled once per window shape
        loss = port_validation_loss(model, windows, dtype)
    predicted = sum(batch.shape[0] * (length - 1) for batch in windows)
    return {"loss": loss, "perplexity": perplexity(loss), "tokens": predicted, "context": length - 1}


# ------------------------------------------------------------------ the sample


def generate_sample(model: GPT, tokenizer: Tokenizer, task: cfg.LanguageModelTaskConfig, seed: int,
                    framework: str = "torch") -> Optional[str]:
    """``task.sample_tokens`` tokens sampled after ``task.sample_prompt``, as text (None when 0 are asked).

    Sampling with ``task.temperature`` and top-k (nanoGPT's ``sample.py``: 0.8 and 200)
    is :func:`taa.torch.generate.sample`, the sampler ``taa generate`` uses too (a Keras
    model: :func:`taa.keras.generate.sample`; a Flax one: :func:`taa.flax.generate.sample`).
    """
    if task.sample_tokens == 0:
        return None
    if framework != "torch":  # a port's sampler (taa.keras.generate, taa.flax.generate), called alike
        port_sample = importlib.import_module(f"taa.{framework}.generate").sample
        prompt = np.asarray([tokenizer.encode(task.sample_prompt)], dtype=np.int32)  # (1, p)
        ids = port_sample(model, prompt, max_new_tokens=task.sample_tokens, temperature=task.temperature,
                          top_k=task.top_k or None, seed=seed)  # (1, p + sample_tokens)
        return tokenizer.decode(np.asarray(ids)[0].tolist())
    prompt = torch.tensor([tokenizer.encode(task.sample_prompt)], device=model_device(model))  # (1, p)
    ids = sample(
        model, prompt, max_new_tokens=task.sample_tokens, temperature=task.temperature,
        top_k=task.top_k or None, seed=seed,
    )  # (1, p + sample_tokens)
    return tokenizer.decode(ids[0].tolist())


# ------------------------------------------------------------------ the task


class LanguageModelTask(Task):
    """Running text, a character or byte-level BPE vocabulary, random windows; the validation
    loss while training; a text sample at the end."""

    example_preset = "gpt-tiny"
    trains_tokenizer = True
    final_phase = "sampling"
    files = (SAMPLE,)
    frameworks = ("torch", "keras", "flax")
    port_validation: Any = None  # a Keras or Flax run's LossEvaluator, made at its first validation

    def check(self) -> None:
        self.context = block_size(self.recipe)

    def read_data(self) -> None:
        self.train_text, self.val_text = load_text(self.recipe.data)

    def new_tokenizer(self) -> Tokenizer:
        return build_tokenizer(self.recipe.data, self.train_text, self.val_text)

    def load_tokenizer(self, folder: Path) -> Tokenizer:
        return load_tokenizer(folder)

    def save_tokenizer(self, folder: Path) -> None:
        self.tokenizer.save(folder)

    def model_config(self) -> cfg.GPTConfig:
        """The recipe's GPT with the vocabulary the tokenizer fixed."""
        return dataclasses.replace(self.recipe.model, vocab_size=self.tokenizer.vocab_size)

    def encode(self) -> None:
        task, train, tokenizer = self.recipe.data, self.recipe.train, self.tokenizer
        if task.sample_tokens:  # a prompt the vocabulary cannot spell fails now, not after training
            tokenizer.encode(task.sample_prompt)
        self.train_tokens = np.asarray(tokenizer.encode(self.train_text), dtype=np.int64)
        self.val_tokens = np.asarray(tokenizer.encode(self.val_text), dtype=np.int64)
        check_parts_hold_a_window(find_text_file(task.file, task.dir), len(self.train_tokens), len(self.val_tokens),
                                  task.train_fraction, self.context + 1,
                                  f"a context of {self.context} tokens and the one after it", "data.block_size")
        if task.eval_batches == 0:  # the whole validation text
            self.val_windows = every_window(self.val_tokens, self.context + 1, EVAL_BATCH_SIZE)
        else:
            self.val_windows = fixed_windows(self.val_tokens, self.context + 1, task.eval_batches, train.batch_size,
                                             seed=train.seed)

    def batches(self) -> LanguageModelBatches:
        train = self.recipe.train
        return LanguageModelBatches(self.train_tokens, self.context, train.batch_size, train.seed)

    def loss(self):
        cross_entropy = training_backend(self.framework).label_smoothed_cross_entropy
        return language_model_loss(self.recipe.train.label_smoothing, cross_entropy)

    def validation_metrics(self) -> dict[str, str]:
        return {"val_loss": "min", "val_perplexity": "min"}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self.framework in ("keras", "flax"):
            loss = self.port_validation_loss(model)
        else:
            loss = validation_loss(model, self.val_windows, self.recipe.train.dtype)
        return {"val_loss": loss, "val_perplexity": perplexity(loss)}

    def port_validation_loss(self, model) -> float:
        """:func:`validation_loss` of a Keras or Flax model, its evaluator made once."""
        if self.port_validation is None:
            self.port_validation = port_loss_evaluator(self.framework, self.recipe.train.dtype)
        return port_validation_loss(model, self.val_windows, evaluator=self.port_validation)

    def final_metrics(self, model: GPT, result: TrainResult) -> dict[str, Any]:
        self.sample = generate_sample(model, self.tokenizer, self.recipe.data, self.recipe.train.seed, self.framework)
        metrics: dict[str, Any] = {
            "train_tokens": len(self.train_tokens), "val_tokens": len(self.val_tokens),
            "vocab_size": self.tokenizer.vocab_size,
        }
        if self.sample is not None:
            metrics["sample"] = self.sample
        return metrics

    def write_files(self, folder: Path) -> None:
        if self.sample is not None:
            (folder / SAMPLE).write_text(self.sample, encoding="utf-8")

    def outcome(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer, "sample": self.sample}


run = run_function(LanguageModelTask)


# ------------------------------------------------------------------ loading a trained model


def load_language_model(directory: str | Path) -> tuple[GPT, Tokenizer, cfg.RecipeConfig]:
    """A trained language-model checkpoint folder -> (model in eval mode, tokenizer, recipe)."""
    return load_run(directory, "language_model")


def score_file(pretrained: Pretrained, path: str | Path) -> dict[str, Any]:
    """``taa evaluate --data``: a loaded language model's mean next-token loss and perplexity
    on a UTF-8 text file, in windows of the model's context (a run's ``block_size``)."""
    if pretrained.tokenizer is None:
        raise CheckpointError(f"{pretrained.folder}: no tokenizer to read text with")
    text = read_text(path)
    try:
        tokens = encode_text(pretrained.tokenizer, text)
    except DataError as error:  # a character the vocabulary cannot spell: find its line
        lines = text.splitlines(keepends=True)
        number = next((n for n, line in enumerate(lines, start=1) if _unspellable(pretrained.tokenizer, line)), None)
        raise DataError(f"{path}{f', line {number}' if number else ''}: {error}") from None
    recipe = pretrained.recipe
    context = block_size(recipe) if recipe is not None else pretrained.config.max_length
    figures = score_text(pretrained.model, np.asarray(tokens, dtype=np.int64), context)
    return {"task": "language_model", **figures}


def _unspellable(tokenizer: Tokenizer, line: str) -> bool:
    try:
        encode_text(tokenizer, line)
    except DataError:
        return True
    return False
