"""benchmarks/decision_transformer.py: a tiny Decision Transformer and behaviour cloning on
the same generated CartPole data, one seed, and the curve over two targets. No figure's
size is checked: only that every one is reported and the runs differ in their inputs."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.scripts import load_benchmark, unload_benchmark

pytest.importorskip("gymnasium")

TINY = ["model.d_model=16", "model.n_heads=2", "model.d_ff=32", "model.n_layers=1", "model.context=4",
        "train.steps=10", "train.warmup_steps=2", "train.threads=1", "train.batch_size=8", "data.episodes=12",
        "data.eval_episodes=2"]


def test_both_runs_and_the_curve_are_reported(tmp_path, capsys):
    bench = load_benchmark("decision_transformer")
    try:
        args = ["--seeds", "0", "--targets", "20,500", "--curve-episodes", "2", "--out", str(tmp_path),
                "--plot", str(tmp_path / "curve.png"), "--json"]
        for setting in TINY:
            args += ["--set", setting]
        figures = bench.main(args)
    finally:
        unload_benchmark(bench)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(figures))
    assert set(figures["runs"]) == {"dt-0", "bc-0"}
    for run in figures["runs"].values():
        assert run["steps"] == 10 and {"eval_mean_return", "eval_std_return", "train_seconds"} <= set(run)
    assert figures["data"]["data_episodes"] == 12 and figures["data"]["data_max_return"] > 0
    assert [point["target_return"] for point in figures["curve"]] == [20.0, 500.0]
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "dt-0" / "offline_rl.json").read_text())["returns_to_go"]
    assert not json.loads((tmp_path / "bc-0" / "offline_rl.json").read_text())["returns_to_go"]
