"""The command line: exact forms the README and issues give, and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from taa.cli import main

from tests.helpers import assert_same_weights, run_and_sigkill

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    result = CliRunner().invoke(main, list(args))
    return result


def test_model_info_json_counts_parameters():
    result = run("model-info", "vaswani-base", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["parameters"] == sum(info["components"].values())
    assert abs(info["parameters"] - 65e6) / 65e6 <= 0.04


def test_model_info_set_and_table():
    result = run("model-info", "vaswani-tiny", "--set", "d_ff=128", "--set", "n_encoder_layers=1")
    assert result.exit_code == 0, result.output
    assert "encoder" in result.output and "total" in result.output
    tiny = json.loads(run("model-info", "vaswani-tiny", "--json").output)["parameters"]
    changed = json.loads(run("model-info", "vaswani-tiny", "--set", "d_ff=128", "--json").output)["parameters"]
    # each of the 2+2 layers' feed-forwards grows by 2 * 32 * 64 weights and 64 biases
    assert changed - tiny == 4 * (2 * 32 * 64 + 64)


@pytest.mark.parametrize(
    "args, message",
    [
        (["model-info", "vaswani-base", "--set", "d_model=500"], "d_model=500 is not divisible by n_heads=8"),
        (["model-info", "nope"], "unknown preset 'nope'"),
        (["train", "missing.yaml"], "missing.yaml: no such file"),
        (["train", str(ROOT / "recipes" / "copy.yaml"), "--set", "train.stepz=1"], "unknown field train.stepz"),
    ],
)
def test_errors_are_one_line(args, message):
    result = run(*args)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_train_writes_a_checkpoint(tmp_path):
    out = tmp_path / "copy"
    result = run(
        "train", str(ROOT / "recipes" / "copy.yaml"), "--out", str(out), "--no-progress",
        "--set", "train.steps=4", "--set", "data.eval_sequences=4", "--tracking", "none",
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "recipe.yaml", "metrics.json", "state"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and 0.0 <= metrics["exact_match"] <= 1.0


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "taa.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "0.1.0" in result.stdout


def _train_command(recipe, out, *extra):
    return [sys.executable, "-m", "taa.cli", "train", str(recipe), "--out", str(out), "--no-progress",
            "--tracking", "none", *extra]


def test_sigkill_then_resume_gives_the_same_weights(tmp_path):
    """A run killed with SIGKILL and resumed ends where an uninterrupted run ends, bit for bit."""
    recipe = ROOT / "recipes" / "copy.yaml"
    settings = ["--set", "train.steps=150", "--set", "train.checkpoint_every=5", "--set", "train.log_every=5",
                "--set", "data.eval_sequences=8", "--set", "train.threads=1", "--set", "model.dropout=0.1"]
    whole = tmp_path / "whole"
    subprocess.run(_train_command(recipe, whole, *settings), check=True, capture_output=True)

    killed = tmp_path / "killed"
    step_at_kill = run_and_sigkill(_train_command(recipe, killed, *settings), killed, 10)
    assert 10 <= step_at_kill < 150
    subprocess.run(_train_command(recipe, killed, "--resume", str(killed), *settings), check=True,
                   capture_output=True)
    assert_same_weights(whole / "model.safetensors", killed / "model.safetensors")


def test_train_tracks_to_mlflow_by_default(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = run("train", str(ROOT / "recipes" / "copy.yaml"), "--out", str(tmp_path / "run"), "--no-progress",
                 "--set", "train.steps=4", "--set", "train.log_every=2", "--set", "data.eval_sequences=4")
    assert result.exit_code == 0, result.output
    client = mlflow.tracking.MlflowClient(uri)
    experiment = client.get_experiment_by_name("taa")
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert tracked.info.status == "FINISHED"
    assert tracked.data.params["train.steps"] == "4" and tracked.data.params["model.d_model"] == "64"
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "train_loss")] == [2, 4]
    assert "exact_match" in tracked.data.metrics


def test_unknown_builtin_recipe_is_one_line():
    result = run("train", "no-such-recipe")
    assert result.exit_code != 0 and "no such recipe file or built-in recipe" in result.output
