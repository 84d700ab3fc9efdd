"""Task runs with ``train.framework: keras`` (``taa train --framework keras``): the run folder
torch loads, the language model's loss, one-line refusals before training, the JAX backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from taa.cli import main
from taa.config import RecipeConfig
from taa.tasks.copy import run as run_copy
from taa.torch import from_pretrained

ROOT = Path(__file__).resolve().parents[3]
RECIPES = ROOT / "src" / "taa" / "recipes"
DATA = Path(os.environ.get("TAA_DATA", "/work/shared/data"))
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"
QUICK_COPY = ["train.steps=12", "train.log_every=4", "data.eval_sequences=8"]
TINY_GPT = [
    "model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.max_length=32",
    "train.batch_size=4", "train.steps=30", "train.eval_every=15", "train.log_every=5", "train.max_minutes=0",
    "train.lr=1e-2", "data.eval_batches=2", "data.sample_tokens=20",
]


def taa_train(*arguments: str, env: dict | None = None):
    args = ["train", *arguments, "--tracking", "none", "--no-progress"]
    return CliRunner().invoke(main, args, env={"TAA_DATA": str(DATA), **(env or {})})


def settings(*overrides: str) -> list[str]:
    return [item for override in overrides for item in ("--set", override)]


def test_a_keras_copy_run_folder_loads_in_torch_with_the_same_outputs(tmp_path):
    recipe = RecipeConfig.load(RECIPES / "copy.yaml", ["train.framework=keras", *QUICK_COPY])
    outcome = run_copy(recipe, out=tmp_path / "copy", progress=False)
    model, metrics = outcome["model"], outcome["metrics"]
    assert isinstance(model, keras.Model) and metrics["steps"] == 12 and 0.0 <= metrics["exact_match"] <= 1.0
    assert metrics["parameters"] == sum(p.numel() for p in from_pretrained(tmp_path / "copy").model.parameters())
    loaded = from_pretrained(tmp_path / "copy")
    assert loaded.recipe.train.framework == "keras"
    source = np.random.default_rng(0).integers(2, 11, (3, 10)).astype(np.int64)
    source[:, 0] = 1
    with torch.no_grad():
        expected = loaded.model(torch.from_numpy(source), torch.from_numpy(source[:, :-1])).numpy()
    ours = keras.ops.convert_to_numpy(model(source.astype(np.int32), source[:, :-1].astype(np.int32)))
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"{SHAKESPEARE} not found (set TAA_DATA)")
def test_the_language_model_trains_with_keras_through_taa_train(tmp_path):
    """bfloat16 (the recipe's), validation, the best weights averaged, a sample; the loss falls."""
    result = taa_train(str(RECIPES / "gpt-shakespeare-char.yaml"), "--framework", "keras", "--out",
                       str(tmp_path / "lm"), "--json", *settings(*TINY_GPT))
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["metrics"]
    assert metrics["steps"] == 30 and metrics["best_steps"] == [30, 15] and metrics["val_loss"] < 4.0
    assert metrics["final_train_loss"] < np.log(65)  # below a uniform guess over the 65 characters
    assert (tmp_path / "lm" / "sample.txt").is_file() and len(metrics["sample"]) > 0
    loaded = from_pretrained(tmp_path / "lm")
    assert loaded.recipe.train.framework == "keras" and loaded.recipe.train.dtype == "bfloat16"


def test_bad_framework_values_are_one_line(tmp_path):
    flag = taa_train(str(RECIPES / "copy.yaml"), "--framework", "jax", "--out", str(tmp_path / "a"))
    assert flag.exit_code == 2 and "Invalid value for '--framework': 'jax' is not one of" in flag.output
    field = taa_train(str(RECIPES / "copy.yaml"), "--out", str(tmp_path / "b"), *settings("train.framework=jax"))
    assert field.exit_code == 1
    assert field.output.strip() == ("Error: --set train.framework=jax: train.framework='jax' is not one of "
                                    "'torch', 'keras', 'flax'")


@pytest.mark.parametrize("recipe, arguments, message", [
    ("copy", settings("train.grad_accumulation=2"),
     "train.grad_accumulation=2: the Keras trainer takes one batch a step"),
    ("copy", ["--nproc", "2"], "--nproc 2: train.framework=keras trains on one process"),
    ("translate-tiny", [], "train.framework='keras': task='translation' trains with torch or flax only"),
])
def test_what_keras_does_not_train_is_refused_before_training(tmp_path, recipe, arguments, message):
    result = taa_train(str(RECIPES / f"{recipe}.yaml"), "--framework", "keras", "--out", str(tmp_path / "run"),
                       *arguments)
    assert result.exit_code == 1 and result.output.startswith(f"Error: {message}"), result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_framework_that_is_not_installed_is_one_line(monkeypatch):
    from taa.tasks import runner
    from taa.tasks.copy import CopyTask

    def missing(framework):
        raise ModuleNotFoundError(f"No module named {framework!r}")

    monkeypatch.setattr(runner, "training_backend", missing)
    task = CopyTask(RecipeConfig.load(RECIPES / "copy.yaml", ["train.framework=keras"]))
    with pytest.raises(runner.cfg.ConfigError, match=r"^train.framework='keras' needs keras installed \(No module "
                                                     r"named 'keras'\): pip install 'taa\[keras\]'$"):
        runner.check_recipe(task)


def test_resuming_is_refused_before_training(tmp_path):
    torch_run = taa_train(str(RECIPES / "copy.yaml"), "--out", str(tmp_path / "run"),
                          *settings("train.steps=2", "data.eval_sequences=2"))
    assert torch_run.exit_code == 0, torch_run.output
    result = taa_train("--resume", str(tmp_path / "run"), "--resume-changed", "--framework", "keras",
                       *settings("train.steps=4"))
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: --resume: a train.framework=keras run saves no resumable state "
                                     "(train with train.framework: torch)")


def test_the_jax_backend_trains_too(tmp_path):
    """KERAS_BACKEND=jax: the same run, in a process of its own (the backend is chosen at import)."""
    command = [sys.executable, "-m", "taa", "train", str(RECIPES / "copy.yaml"), "--framework", "keras", "--out",
               str(tmp_path / "jax"), "--tracking", "none", "--no-progress", "--json", *settings(*QUICK_COPY)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "KERAS_BACKEND": "jax", "TAA_DATA": str(DATA)})
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(done.stdout)["metrics"]
    assert metrics["steps"] == 12 and metrics["final_train_loss"] < np.log(11)
    assert from_pretrained(tmp_path / "jax").recipe.train.framework == "keras"
