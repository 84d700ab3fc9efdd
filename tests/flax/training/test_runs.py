"""Task runs with ``train.framework: flax`` (``taa train --framework flax``): the copy task
learned exactly, run folders torch loads, the language model's loss, translation with few
compilations, a resume through ``taa train --resume``, one-line refusals before training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from flax import nnx

from taa.cli import main
from taa.config import RecipeConfig
from taa.flax.weights import state_dict
from taa.safetensors_file import read_tensors
from taa.tasks.copy import exact_match, random_sequences
from taa.tasks.copy import run as run_copy
from taa.torch import from_pretrained

ROOT = Path(__file__).resolve().parents[3]
RECIPES = ROOT / "src" / "taa" / "recipes"
DATA = Path(os.environ.get("TAA_DATA", "/work/shared/data"))
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"
MULTI30K = DATA / "multi30k" / "train.de.gz"
TINY_GPT = [
    "model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.max_length=32",
    "train.batch_size=4", "train.steps=30", "train.eval_every=15", "train.log_every=5", "train.max_minutes=0",
    "train.lr=1e-2", "data.eval_batches=2", "data.sample_tokens=20",
]


def taa_train(*arguments: str):
    args = ["train", *arguments, "--tracking", "none", "--no-progress"]
    return CliRunner().invoke(main, args, env={"TAA_DATA": str(DATA)})


def settings(*overrides: str) -> list[str]:
    return [item for override in overrides for item in ("--set", override)]


@pytest.mark.slow
def test_the_copy_task_copies_every_held_out_sequence_and_loads_in_torch(tmp_path):
    """The shipped recipe, shortened: exact on every held-out sequence, one compilation;
    torch loads the run folder, the same weights, and copies exactly too."""
    recipe = RecipeConfig.load(RECIPES / "copy.yaml", ["train.framework=flax", "train.steps=300",
                                                      "train.warmup_steps=20", "data.eval_sequences=100"])
    outcome = run_copy(recipe, out=tmp_path / "copy", progress=False)
    model, metrics = outcome["model"], outcome["metrics"]
    assert isinstance(model, nnx.Module) and metrics["exact_match"] == 1.0 and metrics["train_compiles"] == 1
    loaded = from_pretrained(tmp_path / "copy")
    assert loaded.recipe.train.framework == "flax"
    assert metrics["parameters"] == sum(p.numel() for p in loaded.model.parameters())
    ours = state_dict(model)
    for name, value in loaded.model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), ours[name], err_msg=name)
    source = random_sequences(100, 10, 11, 1, torch.Generator().manual_seed(1234))  # never seen
    assert exact_match(loaded.model, source) == 1.0


def test_a_flax_run_resumed_through_taa_train_ends_with_the_uninterrupted_weights(tmp_path):
    """Four steps, then four more from the saved state (--resume-changed: more steps), equal
    to eight never interrupted (a constant schedule: the rate of a step does not depend on
    the number of steps)."""
    quick = ["train.schedule=constant", "train.warmup_steps=4", "train.batch_size=16", "data.eval_sequences=4",
             "train.optimizer=muon", "train.weight_decay=0.1"]
    whole = taa_train(str(RECIPES / "copy.yaml"), "--framework", "flax", "--out", str(tmp_path / "whole"),
                      *settings(*quick, "train.steps=8"))
    assert whole.exit_code == 0, whole.output
    half = taa_train(str(RECIPES / "copy.yaml"), "--framework", "flax", "--out", str(tmp_path / "half"),
                     *settings(*quick, "train.steps=4"))
    assert half.exit_code == 0, half.output
    resumed = taa_train("--resume", str(tmp_path / "half"), "--resume-changed", *settings("train.steps=8"))
    assert resumed.exit_code == 0, resumed.output
    expected = read_tensors(tmp_path / "whole" / "model.safetensors", "np")
    for name, value in read_tensors(tmp_path / "half" / "model.safetensors", "np").items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    assert json.loads((tmp_path / "half" / "metrics.json").read_text())["steps"] == 8


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"{SHAKESPEARE} not found (set TAA_DATA)")
def test_the_language_model_trains_with_flax_through_taa_train(tmp_path):
    """bfloat16 (the recipe's), validation, the best weights averaged, a sample; the loss falls."""
    result = taa_train(str(RECIPES / "gpt-shakespeare-char.yaml"), "--framework", "flax", "--out",
                       str(tmp_path / "lm"), "--json", *settings(*TINY_GPT))
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["metrics"]
    assert metrics["steps"] == 30 and sorted(metrics["best_steps"]) == [15, 30] and metrics["val_loss"] < 4.0
    assert metrics["final_train_loss"] < np.log(65)  # below a uniform guess over the 65 characters
    assert metrics["train_compiles"] == 1  # the one compiling step's time is measured and reported
    assert 0 < metrics["first_step_seconds"] == metrics["train_compile_seconds"] < metrics["train_seconds"]
    assert (tmp_path / "lm" / "sample.txt").is_file() and len(metrics["sample"]) > 0
    loaded = from_pretrained(tmp_path / "lm")
    assert loaded.recipe.train.framework == "flax" and loaded.recipe.train.dtype == "bfloat16"


@pytest.mark.skipif(not MULTI30K.is_file(), reason=f"{MULTI30K} not found (set TAA_DATA)")
def test_translation_trains_with_flax_in_few_compilations(tmp_path):
    """The tiny recipe: token-budget batches of many shapes padded to a few, validation loss
    and BLEU, beam search on the test set; torch loads the weights."""
    from taa.tasks.translation import TranslationTask, translate

    with pytest.warns(UserWarning, match="train.threads=1: XLA chooses its own threads"):
        result = taa_train(str(RECIPES / "translate-tiny.yaml"), "--framework", "flax", "--out",
                           str(tmp_path / "mt"), "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["metrics"]
    assert metrics["steps"] == 30 and 0.0 <= metrics["test_bleu"] <= 100.0 and metrics["test_sentences"] == 40
    task = TranslationTask(RecipeConfig.load(tmp_path / "mt" / "recipe.yaml"))
    task.tokenizer = from_pretrained(tmp_path / "mt").tokenizer
    task.read_data()
    task.encode()
    stream = task.batches()
    shapes = {tuple(next(stream).source.shape) for _ in range(60)}
    assert len(shapes) > 1 and metrics["train_compiles"] <= len(stream.shapes.rows) <= 6
    loaded = from_pretrained(tmp_path / "mt")
    assert loaded.recipe.train.framework == "flax"
    hypotheses = (tmp_path / "mt" / "test_hypotheses.txt").read_text(encoding="utf-8").splitlines()
    assert len(hypotheses) == 40
    sentences = [source for source, _ in task.pairs["test"][:8]]
    assert translate(loaded.model, loaded.tokenizer, sentences, beam=1) == translate(
        task_model(tmp_path / "mt"), loaded.tokenizer, sentences, beam=1, framework="flax")


def task_model(folder: Path):
    """The Flax model of a run folder."""
    from taa.flax.hub import from_pretrained as flax_from_pretrained

    return flax_from_pretrained(folder).model


@pytest.mark.parametrize("recipe, arguments, message", [
    ("copy", settings("train.layer_lr_decay=0.8"),
     "train.layer_lr_decay=0.8: the Flax trainer has one rate for every layer"),
    ("copy", ["--nproc", "2"], "--nproc 2: train.framework=flax trains on one process"),
])
def test_what_flax_does_not_train_is_refused_before_training(tmp_path, recipe, arguments, message):
    result = taa_train(str(RECIPES / f"{recipe}.yaml"), "--framework", "flax", "--out", str(tmp_path / "run"),
                       *arguments)
    assert result.exit_code == 1 and result.output.startswith(f"Error: {message}"), result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_new_flax_model_draws_its_weights_from_the_recipes_seed():
    from taa.tasks.runner import new_model

    recipes = [RecipeConfig.load(RECIPES / "copy.yaml", ["train.framework=flax", f"train.seed={seed}"])
               for seed in (0, 0, 1)]
    first, again, other = (state_dict(new_model(recipe, "flax")) for recipe in recipes)
    name = "encoder.layers.0.feed_forward.w1.weight"
    assert np.array_equal(first[name], again[name]) and not np.array_equal(first[name], other[name])
