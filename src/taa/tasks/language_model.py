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
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from taa import config as cfg
from taa.data.text_corpus import WindowSampler, every_window, find_text_file, fixed_windows, read_text, split_text
from taa.data.tokenizer import CharTokenizer, SubwordTokenizer, load_tokenizer, train_bpe
from taa.tasks import require_model_config
from taa.tasks.common import save_run, selected_metrics, training_metrics
from taa.torch.generate import sample
from taa.torch.models.gpt import GPT
from taa.torch.training import Trainer, seed_everything
from taa.torch.training.checkpoint import find_state_folder, load_recipe, load_weights
from taa.torch.training.loop import autocast
from taa.torch.training.losses import label_smoothed_cross_entropy
from taa.tracking import Tracker, flatten_params

TOKENIZER = "tokenizer"
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


def language_model_loss(smoothing: float = 0.0):
    """Summed next-token cross-entropy and the number of predicted tokens."""

    def compute_loss(model: nn.Module, batch: LanguageModelBatch) -> tuple[Tensor, Tensor]:
        logits = model(batch.inputs)  # (b, n, v)
        return label_smoothed_cross_entropy(logits, batch.targets, smoothing)

    return compute_loss


@torch.no_grad()
def validation_loss(model: nn.Module, windows: list[np.ndarray], dtype: str = "float32") -> float:
    """Mean next-token cross-entropy over fixed windows (no dropout)."""
    model.eval()
    compute_loss = language_model_loss()
    total, count = 0.0, 0
    with autocast(dtype, next(model.parameters()).device):
        for batch in windows:
            loss, n = compute_loss(model, to_batch(batch))
            total, count = total + float(loss), count + int(n)
    return total / max(1, count)


# ------------------------------------------------------------------ the sample


def generate_sample(model: GPT, tokenizer: Tokenizer, task: cfg.LanguageModelTaskConfig, seed: int) -> Optional[str]:
    """``task.sample_tokens`` tokens sampled after ``task.sample_prompt``, as text (None when 0 are asked).

    Sampling with ``task.temperature`` and top-k (nanoGPT's ``sample.py``: 0.8 and 200)
    is :func:`taa.torch.generate.sample`, the sampler ``taa generate`` uses too.
    """
    if task.sample_tokens == 0:
        return None
    prompt = torch.tensor([tokenizer.encode(task.sample_prompt)])  # (1, p)
    ids = sample(
        model, prompt, max_new_tokens=task.sample_tokens, temperature=task.temperature,
        top_k=task.top_k or None, seed=seed,
    )  # (1, p + sample_tokens)
    return tokenizer.decode(ids[0].tolist())


# ------------------------------------------------------------------ the run


def _model_config(recipe: cfg.RecipeConfig, tokenizer: Tokenizer) -> cfg.GPTConfig:
    """The recipe's GPT with the vocabulary the tokenizer fixed."""
    return dataclasses.replace(recipe.model, vocab_size=tokenizer.vocab_size)


def run(
    recipe: cfg.RecipeConfig,
    out: Optional[str | Path] = None,
    progress: bool = True,
    resume: Optional[str | Path] = None,
    tracker: Optional[Tracker] = None,
) -> dict[str, Any]:
    """Train a GPT on the task's text, validate, sample; write the checkpoint folder ``out``."""
    require_model_config(recipe, cfg.GPTConfig, "gpt-tiny")
    task, train = recipe.data, recipe.train
    tracker = tracker or Tracker()
    context = block_size(recipe)
    seed_everything(train.seed)
    train_text, val_text = load_text(task)
    if resume is not None:
        tokenizer = load_tokenizer(find_state_folder(resume) / TOKENIZER)
    else:
        tokenizer = build_tokenizer(task, train_text, val_text)
    recipe = dataclasses.replace(recipe, model=_model_config(recipe, tokenizer))
    model = GPT(recipe.model)
    tracker.log_params(flatten_params(recipe))

    tokenizer.encode(task.sample_prompt)  # a prompt the vocabulary cannot spell fails now, not after training
    train_tokens = np.asarray(tokenizer.encode(train_text), dtype=np.int64)
    val_tokens = np.asarray(tokenizer.encode(val_text), dtype=np.int64)
    if task.eval_batches == 0:  # the whole validation text
        val_windows = every_window(val_tokens, context + 1, EVAL_BATCH_SIZE)
    else:
        val_windows = fixed_windows(val_tokens, context + 1, task.eval_batches, train.batch_size, seed=train.seed)

    def evaluate(model: nn.Module) -> dict[str, float]:
        loss = validation_loss(model, val_windows, train.dtype)
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50.0))}

    def write_tokenizer(folder: Path) -> None:
        tokenizer.save(folder / TOKENIZER)

    batches = LanguageModelBatches(train_tokens, context, train.batch_size, train.seed)
    trainer = Trainer(
        model, train, language_model_loss(train.label_smoothing), batches,
        d_model=recipe.model.d_model, evaluate=evaluate, out=out, tracker=tracker, progress=progress,
        write_extra=write_tokenizer,
    )
    if resume is not None:
        trainer.load_state(Path(resume))
    result = trainer.fit()

    text_sample = generate_sample(model, tokenizer, task, train.seed)
    metrics = {
        **selected_metrics(trainer, result),
        **training_metrics(result, trainer, model),
        "train_tokens": len(train_tokens),
        "val_tokens": len(val_tokens),
        "vocab_size": tokenizer.vocab_size,
    }
    if text_sample is not None:
        metrics["sample"] = text_sample
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / SAMPLE).write_text(text_sample, encoding="utf-8")
    save_run(out, model, recipe, metrics, result, tracker, write_extra=write_tokenizer, artifacts=(TOKENIZER, SAMPLE))
    return {"model": model, "tokenizer": tokenizer, "metrics": metrics, "result": result, "sample": text_sample}


# ------------------------------------------------------------------ loading a trained model


def load_language_model(directory: str | Path) -> tuple[GPT, Tokenizer, cfg.RecipeConfig]:
    """A trained language-model checkpoint folder -> (model in eval mode, tokenizer, recipe)."""
    directory = Path(directory)
    recipe = load_recipe(directory)
    if recipe.task != "language_model":
        raise cfg.ConfigError(f"{directory}: a {recipe.task!r} checkpoint, not a language model")
    tokenizer = load_tokenizer(directory / TOKENIZER)
    model = load_weights(directory, GPT(recipe.model))
    return model.eval(), tokenizer, recipe
