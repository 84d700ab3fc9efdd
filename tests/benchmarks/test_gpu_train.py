"""benchmarks/gpu_train.py: the CPU smoke run, the FLOPs count against a hand count, the peak table."""

from __future__ import annotations

import json
import math
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from taa import config as cfg
from taa.torch.models.gpt import GPT

from tests.benchmarks.scripts import load_benchmark, unload_benchmark

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_train.py"


@pytest.fixture(scope="module")
def bench():
    module = load_benchmark("gpu_train")
    yield module
    unload_benchmark(module)




# The smoke shape: 2 layers, d 64, 4 heads, d_ff 256, context 64, batch 2; vocabulary 96.
SMOKE = ["--device", "cpu", "--smoke", "--vocab-size", "96"]
L, D, FF, V, T, B = 2, 64, 256, 96, 64, 2


def hand_count_n() -> int:
    """The weights in products, counted by hand: GPT-2's layer has biases everywhere."""
    attention = 4 * (D * D + D)  # q, k, v, out projections
    feed_forward = (D * FF + FF) + (FF * D + D)  # W1, b1, W2, b2
    norms = 2 * 2 * D  # two LayerNorms, gain and bias
    return L * (attention + feed_forward + norms) + 2 * D + V * D  # + final norm + tied token embedding


def test_smoke_run_on_a_cpu_prints_every_field(bench, capsys, one_thread) -> None:
    bench.main(SMOKE)
    out = capsys.readouterr().out
    for label in ("device", "parameters", "tokens/step", "step time", "tokens/s", "FLOPs/token", "MFU",
                  "peak memory", "loss", "nanoGPT anchor", "goal"):
        assert any(line.startswith(label) for line in out.splitlines()), (label, out)
    assert "MFU             n/a with the attention term, n/a without" in out  # no peak on a CPU
    assert f"N = {hand_count_n():,}" in out
    assert "6N + 12*L*d*T" in out


def test_flops_and_mfu_against_a_hand_count(bench, capsys, one_thread) -> None:
    summary = bench.main([*SMOKE, "--peak-tflops", "2", "--json"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(summary))  # one JSON object
    n = hand_count_n()
    assert n == 106_240
    assert summary["matmul_parameters"] == n
    assert summary["parameters"] == n + T * D  # the position table is the only one left out
    assert summary["tokens_per_step"] == B * T
    assert summary["flops_per_token_without_attention"] == 6 * n == 637_440
    assert summary["flops_per_token"] == 6 * n + 12 * L * D * T == 735_744
    assert summary["flops_per_step"] == 735_744 * B * T
    seconds = summary["step_ms_median"] / 1000
    assert summary["tokens_per_s"] == pytest.approx(B * T / seconds)
    assert summary["mfu"] == pytest.approx(735_744 * B * T / seconds / 2e12)
    assert summary["mfu_without_attention"] == pytest.approx(637_440 * B * T / seconds / 2e12)
    assert math.isfinite(summary["loss_last"]) and summary["max_memory_allocated_gib"] is None


def test_gpt2_small_counts_as_nanogpt_does(bench) -> None:
    """N leaves out the position table alone; an untied head counts instead of the lookup."""
    with torch.device("meta"):  # shapes only
        tied = GPT(cfg.preset("gpt2-small"))
        untied = GPT(cfg.preset("gpt2-small", tie_output=False))
    n = 124_439_808 - 1024 * 768
    assert bench.matmul_parameters(tied) == bench.matmul_parameters(untied) == n
    assert bench.flops_per_token(n, 12, 768, 1024) == 6 * n + 12 * 12 * 768 * 1024
    assert bench.flops_per_token(n, 12, 768, 1024, attention=False) == 6 * n


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-40GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0),
    ("NVIDIA L4", 121.0), ("NVIDIA A10G", 125.0), ("NVIDIA L40S", None), ("Tesla V100-SXM2-16GB", None),
])
def test_peak_table(bench, name, tflops) -> None:
    found = bench.table_peak(name)
    if tflops is None:
        assert found is None
    else:
        assert found is not None and found[0] == tflops


def test_an_unknown_gpu_needs_the_flag_in_one_line(bench, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench, "gpu_name", lambda device: "NVIDIA Mystery X1")
    with pytest.raises(SystemExit) as raised:
        bench.main(["--device", "cuda"])
    message = str(raised.value.code)
    assert "\n" not in message and "--peak-tflops" in message and "NVIDIA Mystery X1" in message
    args = Namespace(peak_tflops=100.0)
    assert bench.device_and_peak(args, torch.device("cuda")) == ("NVIDIA Mystery X1", 100.0, "--peak-tflops")
