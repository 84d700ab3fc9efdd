"""T5 text-to-text on a few hundred Multi30k pairs: the prefix, the mask, a tiny run end to end."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from taa.cli import main
from taa.config import RecipeConfig, preset
from taa.data import find_data_dir
from taa.tasks.text_to_text import load_text_to_text, t5_loss, with_prefix
from taa.tasks.translation import load_pairs, translate
from taa.torch.models.t5 import T5ForConditionalGeneration
from taa.torch.training import Seq2SeqBatch

pytest.importorskip("sacrebleu")
ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "t5-multi30k.yaml"
DATA = find_data_dir(None) or Path(__file__).resolve().parents[3] / "shared" / "data"
needs_multi30k = pytest.mark.skipif(not (DATA / "multi30k" / "train.de.gz").is_file(),
                                    reason=f"Multi30k not found under {DATA} (set TAA_DATA)")
TINY = [
    "model.preset=t5-tiny", "model.n_encoder_layers=1", "model.n_decoder_layers=1",
    "data.max_train_pairs=200", "data.max_valid_pairs=20", "data.max_test_pairs=10", "data.vocab_size=300",
    "data.bleu_sentences=5", "data.beam=2", "data.max_extra=5", "data.max_tokens=512",
    "train.steps=4", "train.eval_every=2", "train.warmup_steps=1", "train.threads=1", "train.max_minutes=0",
    "train.dtype=float32", "train.keep_best=1", "train.average_best=false", "train.log_every=1",
]


def test_every_source_gets_the_task_prefix():
    assert with_prefix([("Ein Hund.", "A dog.")], "translate German to English: ") == [
        ("translate German to English: Ein Hund.", "A dog.")]
    assert RecipeConfig.load(RECIPE).data.prefix == "translate German to English: "


def test_loss_masks_source_padding():
    """A padded sentence has the loss it has alone: the encoder mask hides the padding."""
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(preset("t5-tiny", pad_id=0, eos_id=2, decoder_start_id=1)).eval()
    source = torch.tensor([[5, 6, 7, 2, 0, 0], [8, 9, 10, 11, 12, 2]])
    target = torch.tensor([[1, 13, 14, 2], [1, 15, 16, 2]])
    batch = Seq2SeqBatch(source, target[:, :-1], target[:, 1:])
    alone = Seq2SeqBatch(source[:1, :4], target[:1, :-1], target[:1, 1:])
    loss = t5_loss(0.0, 0)
    with torch.no_grad():
        together_first = model(batch.source, batch.target_input, attention_mask=batch.source != 0)[0]
        by_itself = model(alone.source, alone.target_input)[0]
        torch.testing.assert_close(together_first, by_itself, atol=1e-5, rtol=1e-5)
        total, count = loss(model, batch)
    assert int(count) == 6


@needs_multi30k
def test_tiny_t5_end_to_end(tmp_path):
    out = tmp_path / "t5"
    args = ["train", str(RECIPE), "--out", str(out), "--tracking", "none", "--no-progress"]
    for setting in [f"data.dir={DATA}", *TINY]:
        args += ["--set", setting]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["test_sentences"] == 10 and 0.0 <= metrics["test_bleu"] <= 100.0
    assert "val_bleu" in metrics and "val_loss" in metrics
    hypotheses = (out / "test_hypotheses.txt").read_text().splitlines()
    assert len(hypotheses) == 10
    model, tokenizer, recipe = load_text_to_text(out)
    assert recipe.model.vocab_size == tokenizer.target_vocab_size <= 300
    assert (recipe.model.pad_id, recipe.model.decoder_start_id, recipe.model.eos_id) == (0, 1, 2)
    # the saved model decodes the (prefixed) test sentences as it did at the end of training
    test = with_prefix(load_pairs(recipe.data, "test"), recipe.data.prefix)
    again = translate(model, tokenizer, [s for s, _ in test], beam=2, length_penalty=recipe.data.length_penalty,
                      max_extra=recipe.data.max_extra)
    assert again == hypotheses


def test_another_model_is_one_line(tmp_path):
    recipe = tmp_path / "gpt.yaml"
    recipe.write_text("task: text_to_text\nmodel:\n  preset: gpt-tiny\n")
    result = CliRunner().invoke(main, ["train", str(recipe), "--out", str(tmp_path / "run"), "--tracking", "none",
                                       "--no-progress"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "task='text_to_text' needs a T5Config model" in lines[0], result.output
