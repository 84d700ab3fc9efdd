"""benchmarks/keras_vs_torch.py runs, at tiny sizes (the figures are the lead's to take, not a test's)."""

import torch

from tests.benchmarks.scripts import load_benchmark, unload_benchmark

TINY = ["--layers", "1", "--heads", "2", "--width", "16", "--context", "8", "--batch", "2", "--steps", "2",
        "--warmup", "1", "--gen-layers", "1", "--gen-heads", "2", "--gen-width", "16", "--gen-context", "32",
        "--prompt-tokens", "4", "--new-tokens", "6", "--rounds", "1", "--threads", "1"]


def test_runs_at_tiny_sizes(capsys):
    script, threads = load_benchmark("keras_vs_torch"), torch.get_num_threads()
    try:
        summary = script.main(TINY)
    finally:
        unload_benchmark(script)
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "training step (float32, muon" in printed and "greedy generation of 6 tokens" in printed
    assert summary["train_step"]["ratio"] > 0 and summary["generate"]["same_tokens"]
    assert abs(summary["train_step"]["loss_before"]["torch"] - summary["train_step"]["loss_before"]["keras"]) < 1e-4
