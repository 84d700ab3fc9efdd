"""Language modelling on Tiny Shakespeare: nanoGPT's data, resumable batches, the run folder,
resume equal to an uninterrupted run, and one-line errors; through ``taa train``."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from taa.cli import main
from taa.config import RecipeConfig
from taa.data.tokenizer import CharTokenizer
from taa.tasks.language_model import LanguageModelBatches, load_language_model, run, validation_loss

from tests.helpers import assert_resume_continues

ROOT = Path(__file__).resolve().parents[2]
CHAR = ROOT / "recipes" / "gpt-shakespeare-char.yaml"
BPE = ROOT / "recipes" / "gpt-shakespeare-bpe.yaml"
DATA = Path(os.environ.get("TAA_DATA", "/work/shared/data"))
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"
# A model of a few thousand weights, a context of 32, a few steps: well under a second.
TINY = [
    "model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.max_length=32",
    "train.batch_size=4", "train.steps=6", "train.eval_every=3", "train.log_every=1", "train.threads=1",
    "train.max_minutes=0", "train.dtype=float32", "data.eval_batches=2", "data.sample_tokens=20",
]


def taa_train(recipe, out, *settings, resume=None):
    args = ["train", str(recipe), "--tracking", "none", "--no-progress"]
    args += ["--resume", str(resume)] if resume else ["--out", str(out)]
    for setting in settings:
        args += ["--set", setting]
    result = CliRunner().invoke(main, args, env={"TAA_DATA": str(DATA)})
    return result


needs_shakespeare = pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"{SHAKESPEARE} not found (set TAA_DATA)")


def test_batches_shift_the_window_by_one_and_resume():
    tokens = np.arange(500, dtype=np.int64)
    stream = LanguageModelBatches(tokens, block_size=8, batch_size=3, seed=0)
    batch = next(stream)
    assert batch.inputs.shape == batch.targets.shape == (3, 8)
    assert torch.equal(batch.targets[:, :-1], batch.inputs[:, 1:])
    assert torch.equal(batch.targets, batch.inputs + 1)  # contiguous text: the next token
    saved = stream.state_dict()
    expected = [next(stream) for _ in range(3)]
    again = LanguageModelBatches(tokens, block_size=8, batch_size=3, seed=0)
    again.load_state_dict(saved)
    assert all(torch.equal(a.inputs, next(again).inputs) for a in expected)


def test_validation_loss_of_a_uniform_model_is_log_vocabulary():
    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids):
            return torch.zeros(*ids.shape, 65) + self.weight

    windows = [np.random.default_rng(i).integers(0, 65, size=(2, 9)) for i in range(3)]
    assert validation_loss(Uniform(), windows) == pytest.approx(np.log(65), rel=1e-6)


def test_recipes_parse_and_start_at_nanogpts_scale():
    char, bpe = RecipeConfig.load(CHAR), RecipeConfig.load(BPE)
    assert char.task == bpe.task == "language_model"
    assert (char.data.tokenizer, bpe.data.tokenizer) == ("char", "bpe")
    assert char.train.max_minutes == 10 and char.train.schedule == "cosine"
    assert char.data.train_fraction == 0.9


@needs_shakespeare
def test_tiny_run_writes_a_checkpoint_that_loads(tmp_path):
    out = tmp_path / "run"
    result = taa_train(CHAR, out, *TINY)
    assert result.exit_code == 0, result.output
    assert {"model.safetensors", "recipe.yaml", "metrics.json", "tokenizer", "state", "best"} <= {
        p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["vocab_size"] == 65
    assert (metrics["train_tokens"], metrics["val_tokens"]) == (1_003_854, 111_540)  # nanoGPT's split
    assert 3.0 < metrics["val_loss"] < 4.5  # about log(65) = 4.17 after 6 steps
    assert metrics["val_perplexity"] == pytest.approx(np.exp(metrics["val_loss"]))
    model, tokenizer, recipe = load_language_model(out)
    assert isinstance(tokenizer, CharTokenizer) and tokenizer.vocab_size == 65
    assert recipe.model.vocab_size == 65 and model.config.n_layers == 1
    sample = (out / "sample.txt").read_text()
    assert sample == metrics["sample"] and sample.startswith("\n") and len(sample) == 1 + 20  # prompt + 20 characters
    assert set(sample) <= set(tokenizer.characters)


@needs_shakespeare
def test_validation_on_the_whole_split(tmp_path):
    """``eval_batches: 0`` scores every validation token: the loss equals the mean over
    all consecutive windows, recomputed here from the saved model."""
    out = tmp_path / "run"
    result = taa_train(CHAR, out, *TINY, "data.eval_batches=0", "train.steps=2")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    model, tokenizer, recipe = load_language_model(out)
    val_text = SHAKESPEARE.read_text(encoding="utf-8")[-metrics["val_tokens"]:]
    tokens = np.asarray(tokenizer.encode(val_text), dtype=np.int64)
    windows = np.stack([tokens[i * 32 : i * 32 + 33] for i in range((len(tokens) - 1) // 32)])  # context 32
    batches = [windows[start : start + 500] for start in range(0, len(windows), 500)]
    assert metrics["val_loss"] == pytest.approx(validation_loss(model, batches), rel=1e-5)


@needs_shakespeare
def test_half_then_resume_equals_one_go(tmp_path, monkeypatch):
    """Steps 1-6 in one go == steps 1-3, then a resumed run that trains steps 4-6 only
    (no kill needed: the constant schedule does not depend on the total number of steps)."""
    settings = [*TINY, "train.schedule=constant", "train.warmup_steps=2", "model.dropout=0.1"]
    whole = tmp_path / "whole"
    result = taa_train(CHAR, whole, *settings)
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("TAA_DATA", str(DATA))
    assert_resume_continues(run, RecipeConfig.load(CHAR, settings), tmp_path / "parts", whole, 3)
    parts, one_go = (json.loads((folder / "metrics.json").read_text()) for folder in (tmp_path / "parts", whole))
    assert parts["val_loss"] == one_go["val_loss"] and parts["sample"] == one_go["sample"]


def test_bpe_variant_on_a_small_file(tmp_path):
    text = tmp_path / "sonnets.txt"
    text.write_text("Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n" * 60)
    out = tmp_path / "bpe"
    result = taa_train(BPE, out, *TINY, f"data.file={text}", "data.vocab_size=300")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    _, tokenizer, recipe = load_language_model(out)
    assert metrics["vocab_size"] == tokenizer.vocab_size == recipe.model.vocab_size <= 300
    assert metrics["train_tokens"] < 0.5 * len(text.read_text()) * 0.9  # merges learned


@pytest.mark.parametrize("settings, message", [
    (["data.file=/nowhere/input.txt"], "/nowhere/input.txt: no such file"),
    (["data.block_size=64"], "data.block_size=64 exceeds model.max_length=32"),
    (["model.preset=bert-tiny"], "task='language_model' needs a GPTConfig model"),
    (["data.sample_prompt=Zounds€"], "character '€' is not in the vocabulary of 65"),
])
def test_errors_are_one_line(tmp_path, settings, message):
    result = taa_train(CHAR, tmp_path / "run", *TINY, *settings)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
