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
from pathlib import Path

from torch import Tensor, nn

from taa import config as cfg
from taa.data import SubwordTokenizer
from taa.tasks.runner import run_function
from taa.tasks.translation import TranslationTask, load_pairs
from taa.torch.hub import load_run
from taa.torch.models.t5 import T5ForConditionalGeneration
from taa.torch.training import Seq2SeqBatch
from taa.torch.training.losses import label_smoothed_cross_entropy


def with_prefix(pairs: list[tuple[str, str]], prefix: str) -> list[tuple[str, str]]:
    """Put the task prefix in front of every source sentence (§2.4)."""
    return [(prefix + source, target) for source, target in pairs]


def t5_loss(smoothing: float, pad_id: int):
    """Label-smoothed cross-entropy of T5 on a teacher-forced batch; padding masked on both sides."""

    def compute_loss(model: nn.Module, batch: Seq2SeqBatch) -> tuple[Tensor, Tensor]:
        logits = model(batch.source, batch.target_input, attention_mask=batch.source != pad_id)  # (b, n, v)
        return label_smoothed_cross_entropy(logits, batch.target_output, smoothing, ignore_index=pad_id)

    return compute_loss


class TextToTextTask(TranslationTask):
    """Translation's data, vocabulary, batches and scores, with the task prefix on every source
    sentence, a joint vocabulary, and T5's loss (an encoder mask)."""

    example_preset = "t5-tiny"
    frameworks = ("torch",)  # T5's loss (an encoder mask) is torch's: translation's Flax path does not carry it

    def check(self) -> None:
        if not self.recipe.data.joint_vocab:
            raise cfg.ConfigError("data.joint_vocab=false: T5 shares one embedding between encoder and decoder")

    def load_split(self, split: str) -> list[tuple[str, str]]:
        return with_prefix(load_pairs(self.recipe.data, split), self.recipe.data.prefix)

    def model_config(self) -> cfg.T5Config:
        """The recipe's T5 with the vocabulary and special ids of the tokenizer."""
        tokenizer = self.tokenizer
        return dataclasses.replace(
            self.recipe.model, vocab_size=tokenizer.target_vocab_size, pad_id=tokenizer.pad_id,
            eos_id=tokenizer.eos_id, decoder_start_id=tokenizer.bos_id,
        )

    def batch_loss(self, smoothing: float):
        return t5_loss(smoothing, self.tokenizer.pad_id)


run = run_function(TextToTextTask)


def load_text_to_text(directory: str | Path) -> tuple[T5ForConditionalGeneration, SubwordTokenizer, cfg.RecipeConfig]:
    """A trained text-to-text checkpoint folder -> (model in eval mode, tokenizer, recipe).

    Sentences given to it need the recipe's prefix: ``recipe.data.prefix + sentence``.
    """
    return load_run(directory, "text_to_text")
