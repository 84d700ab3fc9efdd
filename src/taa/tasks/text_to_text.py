"""T5 text-to-text: translation phrased as "translate German to English: <sentence>".

Raffel et al. 2020, §2.4 "Input and Output Format": every task is text in, text out,
"we add a task-specific (text) prefix to the original input sequence before feeding it
to the model", e.g. "translate English to German: That is good." -> "Das ist gut.";
training is teacher-forced maximum likelihood (§3.1.2) whatever the task.

Everything but the model and the prefix is the translation task's
(:mod:`taa.tasks.translation`): Multi30k (or any parallel text), a joint BPE
vocabulary learned on the (prefixed) training sentences, token-budget batches,
validation loss and greedy BLEU on a sample, beam search and sacreBLEU on the test
set. T5's decoder starts from ``<s>`` here (the original uses the pad id); it reads
``target[:-1]`` and predicts ``target[1:]``, ending with ``</s>``. T5 has no position
table and no built-in padding rule, so the encoder gets an attention mask.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Optional

from torch import Tensor, nn

from taa import config as cfg
from taa.data import SubwordTokenizer
from taa.tasks import require_model_config
from taa.tasks.common import save_run, selected_metrics, training_metrics
from taa.tasks.translation import TranslationBatches, bleu_scores, load_pairs, translate, validation_loss
from taa.torch.models.t5 import T5ForConditionalGeneration
from taa.torch.training import Seq2SeqBatch, Trainer, seed_everything
from taa.torch.training.checkpoint import find_state_folder, load_recipe, load_weights
from taa.torch.training.losses import label_smoothed_cross_entropy
from taa.tracking import Tracker, flatten_params

TOKENIZER = "tokenizer"
HYPOTHESES = "test_hypotheses.txt"


def with_prefix(pairs: list[tuple[str, str]], prefix: str) -> list[tuple[str, str]]:
    """Put the task prefix in front of every source sentence (§2.4)."""
    return [(prefix + source, target) for source, target in pairs]


def t5_loss(smoothing: float, pad_id: int):
    """Label-smoothed cross-entropy of T5 on a teacher-forced batch; padding masked on both sides."""

    def compute_loss(model: nn.Module, batch: Seq2SeqBatch) -> tuple[Tensor, Tensor]:
        logits = model(batch.source, batch.target_input, attention_mask=batch.source != pad_id)  # (b, n, v)
        return label_smoothed_cross_entropy(logits, batch.target_output, smoothing, ignore_index=pad_id)

    return compute_loss


def _model_config(recipe: cfg.RecipeConfig, tokenizer: SubwordTokenizer) -> cfg.T5Config:
    """The recipe's T5 with the vocabulary and special ids of the tokenizer."""
    return dataclasses.replace(
        recipe.model, vocab_size=tokenizer.target_vocab_size, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id,
        decoder_start_id=tokenizer.bos_id,
    )


def run(
    recipe: cfg.RecipeConfig,
    out: Optional[str | Path] = None,
    progress: bool = True,
    resume: Optional[str | Path] = None,
    tracker: Optional[Tracker] = None,
) -> dict[str, Any]:
    """Train T5 on prefixed sentence pairs, validate, beam-search the test set; write ``out``."""
    require_model_config(recipe, cfg.T5Config, "t5-tiny")
    task, train = recipe.data, recipe.train
    if not task.joint_vocab:
        raise cfg.ConfigError("data.joint_vocab=false: T5 shares one embedding between encoder and decoder")
    tracker = tracker or Tracker()
    seed_everything(train.seed)
    train_pairs, valid_pairs, test_pairs = (
        with_prefix(load_pairs(task, split), task.prefix) for split in ("train", "valid", "test")
    )
    if resume is not None:
        tokenizer = SubwordTokenizer.load(find_state_folder(resume) / TOKENIZER)
    else:
        tokenizer = SubwordTokenizer.train(
            [s for s, _ in train_pairs], [t for _, t in train_pairs], task.vocab_size, joint=True,
            min_frequency=task.min_frequency,
        )
    recipe = dataclasses.replace(recipe, model=_model_config(recipe, tokenizer))
    model = T5ForConditionalGeneration(recipe.model)
    tracker.log_params(flatten_params(recipe))

    train_encoded = tokenizer.encode_pairs(train_pairs)
    valid_encoded = tokenizer.encode_pairs(valid_pairs)
    bleu_sample = valid_pairs[: task.bleu_sentences]
    pad_id = tokenizer.pad_id

    def evaluate(model: nn.Module) -> dict[str, float]:
        loss = validation_loss(model, valid_encoded, task.max_tokens, pad_id, train.dtype, t5_loss(0.0, pad_id))
        metrics = {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50.0))}
        if bleu_sample:
            hypotheses = translate(model, tokenizer, [s for s, _ in bleu_sample], beam=1, max_extra=task.max_extra)
            metrics["val_bleu"] = bleu_scores(hypotheses, [t for _, t in bleu_sample])["bleu"]
        return metrics

    def write_tokenizer(folder: Path) -> None:
        tokenizer.save(folder / TOKENIZER)

    batches = TranslationBatches(train_encoded, task.max_tokens, train.seed, pad_id)
    trainer = Trainer(
        model, train, t5_loss(train.label_smoothing, pad_id), batches,
        d_model=recipe.model.d_model, evaluate=evaluate, out=out, tracker=tracker, progress=progress,
        write_extra=write_tokenizer,
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
        **selected_metrics(trainer, result),
        **training_metrics(result, trainer, model),
    }
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / HYPOTHESES).write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    save_run(out, model, recipe, metrics, result, tracker, write_extra=write_tokenizer,
             artifacts=(TOKENIZER, HYPOTHESES))
    return {"model": model, "tokenizer": tokenizer, "metrics": metrics, "result": result, "hypotheses": hypotheses}


def load_text_to_text(directory: str | Path) -> tuple[T5ForConditionalGeneration, SubwordTokenizer, cfg.RecipeConfig]:
    """A trained text-to-text checkpoint folder -> (model in eval mode, tokenizer, recipe).

    Sentences given to it need the recipe's prefix: ``recipe.data.prefix + sentence``.
    """
    directory = Path(directory)
    recipe = load_recipe(directory)
    if recipe.task != "text_to_text":
        raise cfg.ConfigError(f"{directory}: a {recipe.task!r} checkpoint, not a text-to-text model")
    tokenizer = SubwordTokenizer.load(directory / TOKENIZER)
    model = load_weights(directory, T5ForConditionalGeneration(recipe.model))
    return model.eval(), tokenizer, recipe
