"""The command line: exact forms the README and issues give, and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from taa.cli import main

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
        "--set", "train.steps=4", "--set", "data.eval_sequences=4",
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "recipe.yaml", "metrics.json"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and 0.0 <= metrics["exact_match"] <= 1.0


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "taa.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "0.1.0" in result.stdout
