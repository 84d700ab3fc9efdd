"""benchmarks/device_check.py: its quick run on the CPU with tiny models, a failing check, a missing GPU."""

from pathlib import Path

import torch

from tests.benchmarks.scripts import load_benchmark

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "device_check.py"


def _script():
    return load_benchmark("device_check")




def test_device_check_runs_on_the_cpu(capsys, one_thread) -> None:
    device_check = _script()
    models = ["vaswani-tiny:relative", "gpt-tiny:alibi", "bert-tiny", "t5-v1_1-tiny"]
    assert device_check.main(["--device", "cpu", "--models", *models]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "taa device check: cpu against cpu, float32, tolerance 0.0001"
    assert lines[-1] == "all checks passed"
    checks = lines[1:-1]
    assert all(line.startswith("ok  ") for line in checks), checks
    for wanted in ("vaswani-tiny:relative beam decoding", "gpt-tiny:alibi greedy decoding, left-padded",
                   "bert-tiny forward+backward", "t5-v1_1-tiny beam scores", "gpt-tiny checkpoint from cpu"):
        assert any(wanted in line for line in checks), wanted
    assert not any("bert-tiny greedy" in line for line in checks)  # BERT does not decode
    # A check that fails says so on its line, and in the exit status
    assert device_check.main(["--device", "cpu", "--models", "gpt-tiny", "--tolerance", "-1"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].endswith("checks failed") and any(line.startswith("FAIL  gpt-tiny forward+backward") for line in out)


def test_device_check_refuses_a_missing_gpu_in_one_line(capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _script().main(["--device", "cuda"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("--device=cuda: no CUDA GPU here")
