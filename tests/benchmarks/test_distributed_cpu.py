"""benchmarks/distributed_cpu.py: a 3-step copy run on 1 and on 2 processes reports every
figure, and the two runs end at the same loss. No timing is checked."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks.scripts import load_benchmark, unload_benchmark

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "distributed_cpu.py"


@pytest.fixture(scope="module")
def bench():
    module = load_benchmark("distributed_cpu")
    yield module
    unload_benchmark(module)


@pytest.fixture(scope="module")
def smoke():
    """One run of the script (copy, 3 steps, 1 then 2 processes of 1 thread): its JSON."""
    command = [sys.executable, str(SCRIPT), "--recipes", "copy", "--steps", "3", "--threads", "1", "--json"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return json.loads(finished.stdout)  # stdout: one JSON object; the progress lines go to stderr


@pytest.mark.slow
def test_the_json_holds_every_figure(smoke) -> None:
    assert smoke["benchmark"] == "distributed_cpu" and smoke["nproc"] == 2
    machine = smoke["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["torch"]
    assert smoke["threads"] == {"1": 1, "2": 1} and smoke["threads_given"]
    (result,) = smoke["results"]
    assert result["recipe"] == "copy" and result["steps"] == 3
    for run, nproc in ((result["one_process"], 1), (result["n_processes"], 2)):
        assert "error" not in run, run
        assert run["nproc"] == nproc and run["threads"] == 1 and run["steps"] == 3
        for key in ("wall_seconds", "train_seconds", "tokens_per_second", "final_train_loss"):
            assert isinstance(run[key], float) and math.isfinite(run[key]) and run[key] > 0, (key, run)
        assert ("--nproc 2" in run["command"]) == (nproc == 2)
        assert "train.threads=1" in run["command"] and "train.steps=3" in run["command"]
    ratio = result["n_processes"]["tokens_per_second"] / result["one_process"]["tokens_per_second"]
    assert result["tokens_per_second_ratio"] == pytest.approx(ratio)


@pytest.mark.slow
def test_one_and_two_processes_end_at_the_same_loss(smoke) -> None:
    (result,) = smoke["results"]
    one, two = result["one_process"]["final_train_loss"], result["n_processes"]["final_train_loss"]
    assert two == pytest.approx(one, rel=1e-5)
    assert result["loss_relative_difference"] <= 1e-5 and result["losses_agree"]


@pytest.mark.slow
def test_the_printed_report_holds_every_row(bench, smoke) -> None:
    text = bench.report(smoke)
    assert text.splitlines()[1].startswith("machine") and smoke["machine"]["torch"] in text
    assert "1 process x 1, 2 processes x 1 each (--threads)" in text
    for label in ("wall time (s)", "train_seconds", "tokens/s", "final train loss", "loss rel. diff."):
        assert any(line.startswith(label) for line in text.splitlines()), (label, text)
    assert "agree" in text and "x" in next(line for line in text.splitlines() if line.startswith("tokens/s"))


def test_default_threads_split_the_cores(bench, monkeypatch) -> None:
    monkeypatch.setattr(bench, "usable_cores", lambda: 8)
    assert bench.thread_plan(bench.parse_args([])) == {1: 8, 2: 4}
    assert bench.thread_plan(bench.parse_args(["--nproc", "3"])) == {1: 8, 3: 2}
    monkeypatch.setattr(bench, "usable_cores", lambda: 2)
    assert bench.thread_plan(bench.parse_args(["--nproc", "4"])) == {1: 2, 4: 1}
    assert bench.thread_plan(bench.parse_args(["--threads", "3"])) == {1: 3, 2: 3}


def test_the_command_sets_threads_steps_and_passes_settings_last(bench, tmp_path) -> None:
    command = bench.command_for("copy", tmp_path, 2, 1, 5, ["train.lr=0.01"])
    assert command[1:4] == ["-m", "taa", "train"]
    assert command[command.index("--nproc") + 1] == "2"
    settings = [command[i + 1] for i, item in enumerate(command) if item == "--set"]
    assert settings == ["train.threads=1", "train.max_minutes=0", "train.steps=5", "train.lr=0.01"]
    assert "--nproc" not in bench.command_for("copy", tmp_path, 1, 2, None, [])
    assert bench.recipe_path("copy").endswith("recipes/copy.yaml")
