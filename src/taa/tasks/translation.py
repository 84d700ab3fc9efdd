"""Machine translation end to end: data -> BPE -> batches -> Transformer -> BLEU.

The pipeline of "Attention Is All You Need" §5-6 at Multi30k scale:

1. read line-aligned parallel text (Multi30k from a folder, ``$TAA_DATA`` or a download);
2. learn a BPE vocabulary on the training split, joint or per language;
3. batch sentence pairs of similar length under a token budget (§5.1), leaving out, with
   one warning, those longer than the model's positions;
4. train with Adam, a warm-up schedule, label smoothing and dropout (§5.3-5.4),
   validating every N steps (loss, perplexity, greedy BLEU on a sample);
5. keep the best checkpoints and average them (§6.1);
6. beam-search the test set (beam 4, length penalty 0.6, §6.1) and score it with sacreBLEU.

It trains with torch or with the Flax port (``train.framework``): the same data, the
framework's own loss, validation and decoder (:func:`taa.flax.generate.decode`). A Flax
step is compiled once for each shape of its batch, and token-budget batches come in many
shapes (rows x source length x target length), so a Flax run batches the pairs by bucket
(:class:`PaddedShapes`): each pair counts at the next of a few bucket lengths, and each
batch is padded to its bucket's length and rows, one shape per bucket. Padding changes no
figure: a padded position is left out of the loss, a padded source position is masked,
and a padded row has no target token.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from taa import config as cfg
from taa.data import (
    DataError, SubwordTokenizer, TokenBatcher, default_cache_dir, find_data_dir, load_multi30k, multi30k_paths, pad,
    read_parallel,
)
from taa.data.batching import in_length_order
from taa.tasks.runner import Task, run_function, training_backend
from taa.decoding import DEFAULTS
from taa.torch.devices import model_device
from taa.torch.generate import decode
from taa.torch.hub import load_run
from taa.torch.models.transformer import Transformer
from taa.torch.training import Seq2SeqBatch, TrainResult, seq2seq_loss
from taa.torch.devices import to_device
from taa.torch.training.loop import autocast
from taa.training.progress import counted

HYPOTHESES = "test_hypotheses.txt"  # the test set's translations, one a line, in the run folder

# ------------------------------------------------------------------ data


def load_pairs(task: cfg.TranslationTaskConfig, split: str) -> list[tuple[str, str]]:
    """The (source, target) sentence pairs of ``split`` ("train", "valid" or "test")."""
    files = {"train": task.train_files, "valid": task.valid_files, "test": task.test_files}[split]
    limit = {"train": task.max_train_pairs, "valid": task.max_valid_pairs, "test": task.max_test_pairs}[split]
    if files:
        pairs = read_parallel(*files)
    else:
        name = {"train": task.train_split, "valid": task.valid_split, "test": task.test_split}[split]
        pairs = load_multi30k(
            name, data_dir=task.dir or None, cache_dir=task.cache_dir or None,
            source_lang=task.source_lang, target_lang=task.target_lang,
        )
    return pairs[:limit] if limit else pairs


def split_files(task: cfg.TranslationTaskConfig, split: str) -> tuple[Path, Path]:
    """The (source, target) files the pairs of ``split`` were read from (:func:`load_pairs`),
    for a message that names a line: pair i is line i + 1 of both."""
    files = {"train": task.train_files, "valid": task.valid_files, "test": task.test_files}[split]
    if files:
        return Path(files[0]), Path(files[1])
    name = {"train": task.train_split, "valid": task.valid_split, "test": task.test_split}[split]
    folder = find_data_dir(task.dir or None) or (Path(task.cache_dir) if task.cache_dir else default_cache_dir())
    return multi30k_paths(folder, name, task.source_lang, task.target_lang)


def positions_taken(encoded: Sequence[tuple[list[int], list[int]]]) -> list[tuple[int, int]]:
    """The positions each encoded pair takes on each side: the encoder reads the whole
    source (its ``</s>`` included), the decoder the target but its last token (``<s>``
    included)."""
    return [(len(source), len(target) - 1) for source, target in encoded]


def too_long(taken: Sequence[Sequence[int]], positions: int) -> Iterator[tuple[int, int, int]]:
    """The examples a model of ``positions`` positions cannot read, from the positions each
    takes on each side (:func:`positions_taken`), as (index, side, tokens); side 0 is the
    source, 1 the target."""
    for index, sides in enumerate(taken):
        side = next((side for side, tokens in enumerate(sides) if tokens > positions), None)
        if side is not None:
            yield index, side, sides[side]


def to_batch(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int,
             shapes: Optional[PaddedShapes] = None) -> Seq2SeqBatch:
    """Encoded pairs -> padded tensors; the decoder reads target[:-1] and predicts target[1:].
    ``shapes``: padded further, to one of a few shapes (rows of padding only)."""
    sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
    rows, source_length, target_length = len(pairs), None, None
    if shapes is not None:
        rows, source_length, target_length = shapes.shape(pairs)
    source = np.full((rows, source_length or max(map(len, sources))), pad_id, dtype=np.int64)
    target = np.full((rows, target_length or max(map(len, targets))), pad_id, dtype=np.int64)
    source[: len(pairs)] = pad(sources, pad_id, source.shape[1])
    target[: len(pairs)] = pad(targets, pad_id, target.shape[1])
    source, target = torch.from_numpy(source), torch.from_numpy(target)
    return Seq2SeqBatch(source=source, target_input=target[:, :-1], target_output=target[:, 1:])


def bucket_lengths(longest: int, shortest: int = 8) -> list[int]:
    """Lengths from ``shortest`` up to the first at least ``longest``, each about 1.4 times the
    one before (8, 12, 16, 24, 32, 48, ...: a power of two, then half as much again)."""
    lengths = [shortest]
    while lengths[-1] < longest:
        last = lengths[-1]
        lengths.append(last * 3 // 2 if last & (last - 1) == 0 else last * 4 // 3)
    return lengths


class PaddedShapes:
    """The few shapes a batch of ``encoded`` pairs is padded to, for a compiled model.

    A pair's longer side (``L``) picks the first bucket length at least ``L``
    (:func:`bucket_lengths`): its bucket. Batches are made per bucket (:meth:`batcher`: the
    token budget counts each pair at its bucket's length ``B``), so a batch of bucket ``B``
    holds at most ``max_tokens // B`` pairs and is padded to exactly that many rows and to
    ``B`` tokens on each side, never beyond the model's ``positions`` (the source) or
    ``positions + 1`` (the target, which the decoder reads but its last token). One shape
    per bucket; the padding is at most the gap between two bucket lengths.
    """

    def __init__(self, encoded: Sequence[tuple[Sequence[int], Sequence[int]]], max_tokens: int,
                 positions: Optional[int] = None) -> None:
        self.longest = [max(len(source), len(target)) for source, target in encoded]
        self.lengths = bucket_lengths(max(self.longest))
        self.positions, self.max_tokens = positions, max_tokens
        self.rows = {bucket: max(1, max_tokens // bucket) for bucket in {self.bucket(n) for n in self.longest}}

    def bucket(self, length: int) -> int:
        """The first bucket length at least ``length``."""
        return next(bucket for bucket in self.lengths if bucket >= length)

    def batcher(self, seed: int = 0, shuffle: bool = True) -> TokenBatcher:
        """Token-budget batches of the pairs, each pair counted at its bucket's length on both
        sides: a batch never mixes buckets unless it fits the longer one's rows."""
        return TokenBatcher([(self.bucket(n),) * 2 for n in self.longest], self.max_tokens, seed, shuffle)

    def shape(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> tuple[int, int, int]:
        """(rows, source length, target length) a batch of ``pairs`` is padded to."""
        bucket = self.bucket(max(max(len(source), len(target)) for source, target in pairs))
        source, target = bucket, bucket
        if self.positions is not None:
            source, target = min(source, self.positions), min(target, self.positions + 1)
        return max(self.rows[bucket], len(pairs)), source, target


class TranslationBatches:
    """Endless, resumable token-budget batches over the encoded training pairs (padded to a
    few shapes with ``shapes``)."""

    def __init__(self, encoded: list[tuple[list[int], list[int]]], max_tokens: int, seed: int, pad_id: int,
                 shapes: Optional[PaddedShapes] = None):
        self.encoded, self.pad_id, self.shapes = encoded, pad_id, shapes
        self.batcher = shapes.batcher(seed) if shapes is not None else TokenBatcher.from_pairs(encoded, max_tokens, seed)
        self.epoch, self.position = 0, 0  # the next batch to yield

    def __iter__(self) -> TranslationBatches:
        return self

    def __next__(self) -> Seq2SeqBatch:
        batches = self.batcher.epoch_batches(self.epoch)
        if self.position >= len(batches):
            self.epoch, self.position = self.epoch + 1, 0
            batches = self.batcher.epoch_batches(self.epoch)
        indices = batches[self.position]
        self.position += 1
        return to_batch([self.encoded[i] for i in indices], self.pad_id, self.shapes)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


# ------------------------------------------------------------------ decoding and scoring


def translate(
    model: Transformer,
    tokenizer: SubwordTokenizer,
    sentences: Sequence[str],
    beam: int = 1,
    length_penalty: float = DEFAULTS.length_penalty,
    max_extra: int = DEFAULTS.max_extra,
    max_length: Optional[int] = None,
    batch_size: int = 128,
    framework: str = "torch",
) -> list[str]:
    """Translate sentences, batched by length, in input order: greedy when ``beam`` is 1,
    else beam search ranked by log P / lp(Y), GNMT's lp with alpha ``length_penalty``
    (:func:`taa.torch.generate.decode`, the decoder of ``taa generate`` too; a Flax model's:
    :func:`taa.flax.generate.decode`, each batch's sources padded to a bucket length, so that
    it compiles for few shapes).

    A sentence may take its source length + ``max_extra`` tokens; ``max_length`` instead
    caps every output at ``max_length`` tokens, the start token included.
    """
    model.eval()
    settings = DEFAULTS.replace(beam=beam, length_penalty=length_penalty, max_extra=max_extra)
    new_tokens = None if max_length is None else max_length - 1

    def decode_rows(rows: list[list[int]]) -> list[list[int]]:  # <s>, tokens, </s>, padding
        if framework == "flax":
            from taa.flax.generate import decode as flax_decode

            length = bucket_lengths(max(map(len, rows)))[-1]
            positions = getattr(model.config, "max_source_length", None)  # the sources fit it (TranslationTask.encode)
            source = pad(rows, tokenizer.pad_id, min(length, positions) if positions else length)  # (b, m)
            decoded = flax_decode(model, source, None, settings, max_new_tokens=new_tokens)
            return np.asarray(decoded.sequences()).tolist()
        source = torch.from_numpy(pad(rows, tokenizer.pad_id)).to(model_device(model))  # (b, m)
        return decode(model, source, None, settings, max_new_tokens=new_tokens).sequences().tolist()

    encoded = [tokenizer.encode_source(s) for s in sentences]
    return [tokenizer.decode_target(ids) for ids in in_length_order(encoded, batch_size, decode_rows)]


def bleu_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """sacreBLEU (13a tokenisation) cased and lower-cased, and chrF."""
    try:
        import sacrebleu
    except ImportError:  # pragma: no cover - the eval extra is missing
        raise cfg.ConfigError("BLEU needs sacrebleu: pip install 'taa[eval]'") from None
    references = [list(references)]
    return {
        "bleu": sacrebleu.corpus_bleu(hypotheses, references).score,
        "bleu_lowercase": sacrebleu.corpus_bleu(hypotheses, references, lowercase=True).score,
        "chrf": sacrebleu.corpus_chrf(hypotheses, references).score,
    }


@torch.no_grad()
def validation_loss(model: Transformer, encoded: list[tuple[list[int], list[int]]], max_tokens: int, pad_id: int,
                    dtype: str = "float32", compute_loss=None) -> float:
    """Mean cross-entropy per target token (no smoothing, no dropout).

    ``compute_loss(model, batch)`` -> (summed loss, tokens) replaces the default
    (unsmoothed :func:`seq2seq_loss`) for models called differently (T5 takes a mask).
    """
    model.eval()
    compute_loss = compute_loss or seq2seq_loss(0.0, pad_id)
    batcher = TokenBatcher.from_pairs(encoded, max_tokens, shuffle=False)
    total, count = 0.0, 0
    device = model_device(model)
    with autocast(dtype, device):
        for indices in batcher.epoch_batches(0):
            batch = to_device(to_batch([encoded[i] for i in indices], pad_id), device)
            loss, n = compute_loss(model, batch)
            total, count = total + float(loss), count + int(n)
    return total / max(1, count)


def flax_validation_loss(model, encoded: list[tuple[list[int], list[int]]], max_tokens: int, pad_id: int,
                         dtype: str, compute_loss, evaluator=None) -> float:
    """:func:`validation_loss` of a Flax model, its batches padded to a few shapes
    (:class:`PaddedShapes`); ``evaluator``: a :class:`taa.flax.training.LossEvaluator` of
    ``compute_loss`` kept from an earlier validation (its compilations are reused)."""
    evaluator = evaluator or training_backend("flax").LossEvaluator(compute_loss, dtype=dtype)
    shapes = PaddedShapes(encoded, max_tokens, getattr(model.config, "max_source_length", None))
    return evaluator(model, (to_batch([encoded[i] for i in indices], pad_id, shapes)
                             for indices in shapes.batcher(shuffle=False).epoch_batches(0)))


# ------------------------------------------------------------------ the task

SPLITS = ("train", "valid", "test")


class TranslationTask(Task):
    """Sentence pairs, a BPE vocabulary, token-budget batches; validation loss and greedy BLEU
    on a sample while training; beam search and sacreBLEU on the test set at the end."""

    example_preset = "vaswani-tiny"
    trains_tokenizer = True
    final_phase = "test decoding"
    files = (HYPOTHESES,)
    frameworks = ("torch", "flax")
    flax_validation: Any = None  # a Flax run's LossEvaluator, made at its first validation

    def read_data(self) -> None:
        self.pairs = {split: self.load_split(split) for split in SPLITS}

    def load_split(self, split: str) -> list[tuple[str, str]]:
        return load_pairs(self.recipe.data, split)

    def new_tokenizer(self) -> SubwordTokenizer:
        task, pairs = self.recipe.data, self.pairs["train"]
        return SubwordTokenizer.train(
            [s for s, _ in pairs], [t for _, t in pairs], task.vocab_size, joint=task.joint_vocab,
            min_frequency=task.min_frequency,
        )

    def load_tokenizer(self, folder: Path) -> SubwordTokenizer:
        return SubwordTokenizer.load(folder)

    def save_tokenizer(self, folder: Path) -> None:
        self.tokenizer.save(folder)

    def model_config(self) -> cfg.TransformerConfig:
        """The recipe's model with the vocabulary sizes and special ids the tokenizer fixed."""
        tokenizer = self.tokenizer
        return dataclasses.replace(
            self.recipe.model,
            source_vocab_size=tokenizer.source_vocab_size,
            target_vocab_size=tokenizer.target_vocab_size,
            pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
        )

    def encode(self) -> None:
        """Encode the training and validation pairs, and check every pair against the
        model's positions (:meth:`positions`) before any training: a training pair too long
        is left out, with one warning that counts them (an error when none is left); a
        validation pair or a test sentence too long is an error naming its file and line, as
        the figures would leave it out silently or decoding fail after the training."""
        self.train_encoded = self.tokenizer.encode_pairs(self.pairs["train"])
        self.valid_encoded = self.tokenizer.encode_pairs(self.pairs["valid"])
        self.bleu_sample = self.pairs["valid"][: self.recipe.data.bleu_sentences]
        positions = self.positions()
        if positions is None:
            return
        self.train_encoded = self.drop_too_long(self.train_encoded, positions)
        # the test decoding reads each source whole; its references are only compared with
        test_sources = [(len(source),) for source, _ in self.tokenizer.encode_pairs(self.pairs["test"])]
        for split, taken in (("valid", positions_taken(self.valid_encoded)), ("test", test_sources)):
            for index, side, tokens in too_long(taken, positions):
                raise DataError(f"{self.line(split, index, side)}: {counted(tokens, 'token')}, more than the "
                                f"model reads ({positions} positions, model.max_length): shorten it or raise "
                                "model.max_length")

    def positions(self) -> Optional[int]:
        """The most tokens the model reads on either side (its position table), None when
        its positions are relative or absent."""
        return getattr(self.recipe.model, "max_source_length", None)

    def drop_too_long(self, encoded: list[tuple[list[int], list[int]]], positions: int
                      ) -> list[tuple[list[int], list[int]]]:
        """The training pairs the model reads whole; the others are left out with one warning
        that counts them and names the first (as fairseq and OpenNMT filter by length). None
        left is an error: there would be nothing to train on."""
        dropped = list(too_long(positions_taken(encoded), positions))
        if not dropped:
            return encoded
        index, side, tokens = dropped[0]
        first = f"{self.line('train', index, side)} ({counted(tokens, 'token')})"
        if len(dropped) == len(encoded):
            raise DataError(f"no training pair fits the model's {positions} positions (model.max_length), the first is "
                            f"{first}: shorten the sentences or raise model.max_length")
        warnings.warn(f"{len(dropped):,} of {counted(len(encoded), 'training pair')} left out: longer than the "
                      f"model's {positions} positions (model.max_length); the first is {first}", stacklevel=2)
        skip = {index for index, _, _ in dropped}
        return [pair for index, pair in enumerate(encoded) if index not in skip]

    def line(self, split: str, index: int, side: int) -> str:
        """``FILE, line N``: where pair ``index`` of ``split`` is, on ``side`` (0 source, 1 target)."""
        return f"{split_files(self.recipe.data, split)[side]}, line {index + 1}"

    def batches(self) -> TranslationBatches:
        task, train = self.recipe.data, self.recipe.train
        shapes = None
        if self.framework == "flax":  # a few shapes: few compilations of the training step
            shapes = PaddedShapes(self.train_encoded, task.max_tokens, self.positions())
        return TranslationBatches(self.train_encoded, task.max_tokens, train.seed, self.tokenizer.pad_id, shapes)

    def batch_loss(self, smoothing: float):
        """The model's loss on a teacher-forced batch, in the run's framework (T5 is called with a mask)."""
        return training_backend(self.framework).seq2seq_loss(smoothing, self.tokenizer.pad_id)

    def loss(self):
        return self.batch_loss(self.recipe.train.label_smoothing)

    def validation_metrics(self) -> dict[str, str]:
        bleu = {"val_bleu": "max"} if self.recipe.data.bleu_sentences else {}
        return {"val_loss": "min", "val_perplexity": "min", **bleu}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        task, tokenizer, dtype = self.recipe.data, self.tokenizer, self.recipe.train.dtype
        if self.framework == "flax":
            if self.flax_validation is None:
                self.flax_validation = training_backend("flax").LossEvaluator(self.batch_loss(0.0), dtype=dtype)
            loss = flax_validation_loss(model, self.valid_encoded, task.max_tokens, tokenizer.pad_id, dtype,
                                        self.batch_loss(0.0), self.flax_validation)
        else:
            loss = validation_loss(model, self.valid_encoded, task.max_tokens, tokenizer.pad_id, dtype,
                                   self.batch_loss(0.0))
        metrics = {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50.0))}
        if self.bleu_sample:
            hypotheses = translate(model, tokenizer, [s for s, _ in self.bleu_sample], beam=1, max_extra=task.max_extra,
                                   framework=self.framework)
            metrics["val_bleu"] = bleu_scores(hypotheses, [t for _, t in self.bleu_sample])["bleu"]
        return metrics

    def final_metrics(self, model: nn.Module, result: TrainResult) -> dict[str, Any]:
        task, test = self.recipe.data, self.pairs["test"]
        self.hypotheses = translate(
            model, self.tokenizer, [s for s, _ in test], beam=task.beam,
            length_penalty=task.length_penalty, max_extra=task.max_extra, framework=self.framework,
        )
        scores = bleu_scores(self.hypotheses, [t for _, t in test])
        return {**{f"test_{k}": v for k, v in scores.items()}, "test_sentences": len(test)}

    def write_files(self, folder: Path) -> None:
        (folder / HYPOTHESES).write_text("\n".join(self.hypotheses) + "\n", encoding="utf-8")

    def outcome(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer, "hypotheses": self.hypotheses}


run = run_function(TranslationTask)


# ------------------------------------------------------------------ loading a trained model


def load_translator(directory: str | Path) -> tuple[Transformer, SubwordTokenizer, cfg.RecipeConfig]:
    """A trained translation checkpoint folder -> (model in eval mode, tokenizer, recipe)."""
    return load_run(directory, "translation")
