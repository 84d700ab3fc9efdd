"""benchmarks/device_train.py: a 2-step copy run on the CPU against the CPU reports every
figure (the machinery, not a speed), and asking for a CUDA GPU where there is none stops
with taa's one-line message. No timing is checked."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.benchmarks.scripts import load_benchmark, unload_benchmark

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "device_train.py"


@pytest.fixture(scope="module")
def bench():
    module = load_benchmark("device_train")
    yield module
    unload_benchmark(module)


@pytest.fixture(scope="module")
def smoke():
    """One run of the script (copy, 2 steps, CPU then CPU, 1 thread): its JSON."""
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--recipes", "copy", "--steps", "2",
               "--cpu-threads", "1", "--json"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return json.loads(finished.stdout)  # stdout: one JSON object; the progress lines go to stderr


@pytest.mark.slow
def test_the_json_holds_every_figure(smoke) -> None:
    assert smoke["benchmark"] == "device_train" and smoke["device"] == "cpu"
    machine = smoke["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["torch"]
    assert "gpu" in machine and (machine["gpu"] is None) == (not torch.cuda.is_available())
    assert smoke["threads"] == 1 and smoke["threads_given"]
    (result,) = smoke["results"]
    assert result["recipe"] == "copy" and result["steps"] == 2
    for run in (result["cpu"], result["device"]):
        assert "error" not in run, run
        assert run["device"] == "cpu" and run["threads"] == 1 and run["steps"] == 2
        for key in ("wall_seconds", "train_seconds", "step_seconds", "tokens_per_second", "final_train_loss"):
            assert isinstance(run[key], float) and math.isfinite(run[key]) and run[key] > 0, (key, run)
        assert run["step_seconds"] == pytest.approx(run["train_seconds"] / 2)
        assert "train.device=cpu" in run["command"] and "train.steps=2" in run["command"]
        assert "train.threads=1" in run["command"] and "--nproc" not in run["command"]
    ratio = result["device"]["tokens_per_second"] / result["cpu"]["tokens_per_second"]
    assert result["speedup"] == pytest.approx(ratio)
    # The same run twice on the CPU: the same numbers.
    assert result["device"]["final_train_loss"] == pytest.approx(result["cpu"]["final_train_loss"], rel=1e-6)
    assert 0 <= result["loss_relative_difference"] <= 1e-6


@pytest.mark.slow
def test_the_printed_report_holds_every_row(bench, smoke) -> None:
    text = bench.report(smoke)
    lines = text.splitlines()
    assert lines[1].startswith("machine") and smoke["machine"]["torch"] in lines[1]
    assert lines[2].startswith("gpu") and lines[3] == "threads         1 for each run (--cpu-threads)"
    for label in ("wall time (s)", "step time (ms)", "tokens/s", "final train loss", "loss rel. diff."):
        assert any(line.startswith(label) for line in lines), (label, text)
    assert next(line for line in lines if line.startswith("tokens/s")).endswith("x")
    assert "not checked" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here")
def test_no_gpu_stops_with_one_line() -> None:
    finished = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda", "--recipes", "copy", "--steps", "2"],
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 1 and finished.stdout == ""
    (line,) = finished.stderr.splitlines()
    assert line.startswith("train.device=cuda: no CUDA GPU here"), line


def test_the_runs_differ_by_the_device_alone(bench, tmp_path, monkeypatch) -> None:
    calls = []

    def fake_run_once(recipe, out, nproc, threads, steps, overrides):
        calls.append((nproc, threads, steps, overrides))
        return {"nproc": nproc, "threads": threads, "wall_seconds": 1.0, "steps": steps, "train_seconds": 2.0,
                "tokens_per_second": 100.0 if "train.device=cpu" in overrides else 400.0, "final_train_loss": 1.0}

    monkeypatch.setattr(bench, "run_once", fake_run_once)
    args = bench.parse_args(["--recipes", "copy", "--set", "train.lr=0.01"])
    result = bench.compare("copy", tmp_path, args, 3, lambda *a: None)
    assert calls == [(1, 3, 1000, ["train.device=cpu", "train.lr=0.01"]),
                     (1, 3, 1000, ["train.device=cuda", "train.lr=0.01"])]
    assert result["speedup"] == pytest.approx(4.0) and result["loss_relative_difference"] == 0.0
    assert result["cpu"]["step_seconds"] == pytest.approx(0.002) and "nproc" not in result["device"]
