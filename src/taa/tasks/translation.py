"""Machine translation end to end: data -> BPE -> batches -> Transformer -> BLEU.

The pipeline of "Attention Is All You Need" §5-6 at Multi30k scale:

1. read line-aligned parallel text (Multi30k from a folder, ``$TAA_DATA`` or a download);
2. learn a BPE vocabulary on the training split, joint or per language;
3. batch sentence pairs of similar length under a token budget (§5.1);
4. train with Adam, a warm-up schedule, label smoothing and dropout (§5.3-5.4),
   validating every N steps (loss, perplexity, greedy BLEU on a sample);
5. keep the best checkpoints and average them (§6.1);
6. beam-search the test set (beam 4, length penalty 0.6, §6.1) and score it with sacreBLEU.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch

from taa import config as cfg
from taa.data import SubwordTokenizer, TokenBatcher, load_multi30k, pad, read_parallel
from taa.torch.generate import beam_search, greedy_decode
from taa.torch.models.transformer import Transformer
from taa.torch.training import Seq2SeqBatch, Trainer, save_checkpoint, seed_everything, seq2seq_loss
from taa.torch.training.checkpoint import find_state_folder, load_recipe, load_weights
from taa.torch.training.loop import autocast
from taa.tracking import Tracker, flatten_params

TOKENIZER = "tokenizer"

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


def to_batch(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> Seq2SeqBatch:
    """Encoded pairs -> padded tensors; the decoder reads target[:-1] and predicts target[1:]."""
    source = torch.from_numpy(pad([s for s, _ in pairs], pad_id))
    target = torch.from_numpy(pad([t for _, t in pairs], pad_id))
    return Seq2SeqBatch(source=source, target_input=target[:, :-1], target_output=target[:, 1:])


class TranslationBatches:
    """Endless, resumable token-budget batches over the encoded training pairs."""

    def __init__(self, encoded: list[tuple[list[int], list[int]]], max_tokens: int, seed: int, pad_id: int):
        self.encoded, self.pad_id = encoded, pad_id
        self.batcher = TokenBatcher.from_pairs(encoded, max_tokens, seed)
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
        return to_batch([self.encoded[i] for i in indices], self.pad_id)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


# ------------------------------------------------------------------ decoding and scoring


@torch.no_grad()
def translate(
    model: Transformer,
    tokenizer: SubwordTokenizer,
    sentences: Sequence[str],
    beam: int = 1,
    length_penalty: float = 0.6,
    max_extra: int = 50,
    max_length: Optional[int] = None,
    batch_size: int = 128,
) -> list[str]:
    """Translate sentences (greedy when ``beam`` is 1), batched by length, in input order."""
    model.eval()
    encoded = [tokenizer.encode_source(s) for s in sentences]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(encoded)
    pad_id = tokenizer.pad_id
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        source = torch.from_numpy(pad([encoded[i] for i in chunk], pad_id))
        if beam > 1:
            hypotheses = beam_search(
                model, source, beam_size=beam, max_length=max_length, max_extra=max_extra,
                length_penalty=length_penalty,
            )
        else:
            hypotheses = greedy_decode(model, source, max_length=max_length, max_extra=max_extra).tolist()
        for i, ids in zip(chunk, hypotheses):
            outputs[i] = tokenizer.decode_target(ids)
    return outputs


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
    with autocast(dtype, next(model.parameters()).device):
        for indices in batcher.epoch_batches(0):
            batch = to_batch([encoded[i] for i in indices], pad_id)
            loss, n = compute_loss(model, batch)
            total, count = total + float(loss), count + int(n)
    return total / max(1, count)


# ------------------------------------------------------------------ the run


def _model_config(recipe: cfg.RecipeConfig, tokenizer: SubwordTokenizer) -> cfg.TransformerConfig:
    """The recipe's model with the vocabulary sizes and special ids the tokenizer fixed."""
    return dataclasses.replace(
        recipe.model,
        source_vocab_size=tokenizer.source_vocab_size,
        target_vocab_size=tokenizer.target_vocab_size,
        pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
    )


def run(
    recipe: cfg.RecipeConfig,
    out: Optional[str | Path] = None,
    progress: bool = True,
    resume: Optional[str | Path] = None,
    tracker: Optional[Tracker] = None,
) -> dict[str, Any]:
    """Train, validate, average, test; write the checkpoint folder ``out``."""
    task, train = recipe.data, recipe.train
    tracker = tracker or Tracker()
    seed_everything(train.seed)
    train_pairs, valid_pairs, test_pairs = (load_pairs(task, split) for split in ("train", "valid", "test"))

    if resume is not None:
        tokenizer = SubwordTokenizer.load(find_state_folder(resume) / TOKENIZER)
    else:
        tokenizer = SubwordTokenizer.train(
            [s for s, _ in train_pairs], [t for _, t in train_pairs], task.vocab_size,
            joint=task.joint_vocab, min_frequency=task.min_frequency,
        )
    recipe = dataclasses.replace(recipe, model=_model_config(recipe, tokenizer))
    model = Transformer(recipe.model)
    tracker.log_params(flatten_params(recipe))

    train_encoded = tokenizer.encode_pairs(train_pairs)
    valid_encoded = tokenizer.encode_pairs(valid_pairs)
    bleu_sample = valid_pairs[: task.bleu_sentences]

    def evaluate(model: Transformer) -> dict[str, float]:
        loss = validation_loss(model, valid_encoded, task.max_tokens, tokenizer.pad_id, train.dtype)
        metrics = {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50.0))}
        if bleu_sample:
            hypotheses = translate(model, tokenizer, [s for s, _ in bleu_sample], beam=1, max_extra=task.max_extra)
            metrics["val_bleu"] = bleu_scores(hypotheses, [t for _, t in bleu_sample])["bleu"]
        return metrics

    batches = TranslationBatches(train_encoded, task.max_tokens, train.seed, tokenizer.pad_id)
    trainer = Trainer(
        model, train, seq2seq_loss(train.label_smoothing, tokenizer.pad_id), batches,
        d_model=recipe.model.d_model, evaluate=evaluate, out=out, tracker=tracker, progress=progress,
        write_extra=lambda folder: tokenizer.save(folder / TOKENIZER),
    )
    if resume is not None:
        trainer.load_state(Path(resume))
    result = trainer.fit()

    hypotheses = translate(
        model, tokenizer, [s for s, _ in test_pairs], beam=task.beam,
        length_penalty=task.length_penalty, max_extra=task.max_extra,
    )
    scores = bleu_scores(hypotheses, [t for _, t in test_pairs])
    metrics = {
        **{f"test_{k}": v for k, v in scores.items()},
        "test_sentences": len(test_pairs),
        "steps": result.steps,
        "train_seconds": result.seconds,
        "tokens_per_second": result.tokens_per_second,
        "final_train_loss": result.final_loss,
        "best_steps": [step for _, step in trainer.state.best],
        "stopped_early": result.stopped_early,
        "parameters": model.num_parameters(),
    }
    if result.evaluations:
        metrics["last_validation"] = result.evaluations[-1]
    tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)}, result.steps)
    if out is not None:
        out = Path(out)
        save_checkpoint(out, model, recipe, metrics, write_extra=lambda folder: tokenizer.save(folder / TOKENIZER))
        (out / "test_hypotheses.txt").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
        _plot_curves(result, out / "training_curves.png")
        for artifact in (out / "recipe.yaml", out / TOKENIZER, out / "training_curves.png", out / "metrics.json",
                         out / "model.safetensors"):
            if artifact.exists():
                tracker.log_artifact(artifact)
    return {"model": model, "tokenizer": tokenizer, "metrics": metrics, "result": result, "hypotheses": hypotheses}


def _plot_curves(result, path: Path) -> None:
    try:
        from taa.plots import plot_training_curves
    except ImportError:  # matplotlib missing: no picture, the run still counts
        return
    plot_training_curves(result.history, result.evaluations, path)


# ------------------------------------------------------------------ loading a trained model


def load_translator(directory: str | Path) -> tuple[Transformer, SubwordTokenizer, cfg.RecipeConfig]:
    """A trained translation checkpoint folder -> (model in eval mode, tokenizer, recipe)."""
    directory = Path(directory)
    recipe = load_recipe(directory)
    if recipe.task != "translation":
        raise cfg.ConfigError(f"{directory}: a {recipe.task!r} checkpoint, not a translation model")
    tokenizer = SubwordTokenizer.load(directory / TOKENIZER)
    model = load_weights(directory, Transformer(recipe.model))
    return model.eval(), tokenizer, recipe
