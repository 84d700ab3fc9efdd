"""BERT's masked LM: the 80/10/10 masking measured, ignored labels, the tiny recipe end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from taa.cli import main
from taa.config import RecipeConfig
from taa.data.tokenizer import SubwordTokenizer, train_bpe
from taa.tasks.masked_lm import IGNORE_INDEX, MASK, MaskedLMBatches, Masker, load_masked_lm, mask_tokens, run

from tests.helpers import assert_resume_continues

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "bert-mlm-tiny.yaml"
TEXT = "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n" * 80
SPECIAL = [0, 1, 2, 3, 4]  # <pad> <s> </s> <unk> <mask>


def test_eighty_ten_ten_of_fifteen_percent():
    """BERT §3.1 on 200,000 tokens; binomial standard deviations are far below the tolerances."""
    rng = np.random.default_rng(0)
    vocab = 1000
    ids = rng.integers(5, vocab, size=(400, 500))  # regular tokens only
    inputs, labels = mask_tokens(ids, np.random.default_rng(1), mask_id=4, vocab_size=vocab, special_ids=SPECIAL)
    chosen = labels != IGNORE_INDEX
    n_chosen = chosen.sum()
    assert abs(n_chosen / ids.size - 0.15) < 0.003  # sd 0.0008
    masked = (inputs == 4) & chosen
    unchanged = (inputs == ids) & chosen
    replaced = chosen & ~masked & ~unchanged
    assert abs(masked.sum() / n_chosen - 0.8) < 0.01  # sd 0.0023
    # a random token equals the original with probability 1/995: "unchanged" gains that share
    assert abs(replaced.sum() / n_chosen - 0.1 * (1 - 1 / 995)) < 0.008  # sd 0.0017
    assert abs(unchanged.sum() / n_chosen - (0.1 + 0.1 / 995)) < 0.008
    assert (inputs[replaced] >= 5).all() and (inputs[replaced] < vocab).all()  # never a special token
    assert len(np.unique(inputs[replaced])) > 900  # spread over the whole regular vocabulary
    assert (labels[chosen] == ids[chosen]).all()  # the original token is the target
    assert (inputs[~chosen] == ids[~chosen]).all()  # only chosen positions change
    assert (labels[~chosen] == IGNORE_INDEX).all()


def test_special_tokens_and_padding_are_never_chosen():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=(100, 64))  # a fifth of them special
    ids[:, 40:] = 0  # padding
    inputs, labels = mask_tokens(ids, rng, mask_id=4, vocab_size=50, special_ids=SPECIAL,
                                 probability=0.5)
    special = ids < 5
    assert (labels[special] == IGNORE_INDEX).all() and (inputs[special] == ids[special]).all()
    assert (labels[~special] != IGNORE_INDEX).mean() == pytest.approx(0.5, abs=0.02)
    nothing, none = mask_tokens(np.full((3, 5), 0), rng, 4, 50, SPECIAL)
    assert (none == IGNORE_INDEX).all() and (nothing == 0).all()


@pytest.fixture(scope="module")
def tokenizer() -> SubwordTokenizer:
    return SubwordTokenizer(train_bpe([TEXT], 300, byte_level=True, extra_special_tokens=[MASK]))


def test_sequences_are_wrapped_and_batches_resume(tokenizer):
    task = RecipeConfig.load(TINY).data
    masker = Masker(task, tokenizer)
    assert masker.mask_id == 4 and masker.special_ids == SPECIAL
    tokens = np.asarray(tokenizer.encode(TEXT))
    stream = MaskedLMBatches(tokens, masker, batch_size=3, seed=0)
    batch = next(stream)
    assert batch.inputs.shape == batch.labels.shape == (3, task.max_length)
    assert (batch.inputs[:, 0] == tokenizer.bos_id).all() and (batch.inputs[:, -1] == tokenizer.eos_id).all()
    assert (batch.labels[:, [0, -1]] == IGNORE_INDEX).all()
    saved = stream.state_dict()
    expected = [next(stream) for _ in range(3)]
    again = MaskedLMBatches(tokens, masker, batch_size=3, seed=0)
    again.load_state_dict(saved)
    for a in expected:
        b = next(again)
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)


def taa_train(out, *settings, resume=None):
    args = ["train", str(TINY), "--tracking", "none", "--no-progress"]
    args += ["--resume", str(resume)] if resume else ["--out", str(out)]
    for setting in settings:
        args += ["--set", setting]
    return CliRunner().invoke(main, args)


def test_tiny_recipe_end_to_end_and_resume(tmp_path):
    text = tmp_path / "sonnet.txt"
    text.write_text(TEXT)
    whole = tmp_path / "whole"
    result = taa_train(whole, f"data.file={text}")
    assert result.exit_code == 0, result.output
    metrics = json.loads((whole / "metrics.json").read_text())
    assert metrics["steps"] == 6 and 0.0 <= metrics["val_accuracy"] <= 1.0
    assert 3.0 < metrics["val_loss"] < 7.0  # about log(300) = 5.7 after 6 steps
    model, tokenizer, recipe = load_masked_lm(whole)
    assert recipe.model.vocab_size == tokenizer.vocab_size == model.config.vocab_size <= 300
    # steps 1-3, then a resumed run for steps 4-6 == steps 1-6 in one go
    assert_resume_continues(run, RecipeConfig.load(TINY, [f"data.file={text}"]), tmp_path / "parts", whole, 3)


def test_missing_text_file_is_one_line(tmp_path):
    result = taa_train(tmp_path / "run", f"data.file={tmp_path / 'nope.txt'}")
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "nope.txt: no such file" in lines[0], result.output
