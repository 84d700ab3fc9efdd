"""Standard output that takes no more: a full disk (``> /dev/full``) or a reader that left
the pipe (``taa ... | head -1``). A full one is one line on standard error and exit status
1; a closed pipe ends quietly with status 1, as Unix commands end; never a traceback, nor
Python's "Exception ignored" at exit. What the command wrote elsewhere (a run folder) is
whole. And standard error holds taa's lines only: no INFO lines of a library."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taa.folders import METRICS, RECIPE, RUN_LOCK, WEIGHTS
from tests.checkpoints import language_model_run, translation_run
from tests.faults.conftest import COPY, TINY, cli

FULL = b"taa: cannot write to standard output: No space left on device\n"


def taa(*args, stdout, input: bytes | None = None) -> subprocess.CompletedProcess:
    """``python -m taa ARGS`` with standard output on ``stdout`` (a file, a pipe's end);
    standard error is kept."""
    return subprocess.run([sys.executable, "-m", "taa", *map(str, args)], stdout=stdout, stderr=subprocess.PIPE,
                          input=input, timeout=120)


def into_closed_pipe(*args, input: bytes | None = None) -> subprocess.CompletedProcess:
    """``taa ARGS | head -0``: standard output is a pipe whose reader has gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        return taa(*args, stdout=write, input=input)
    finally:
        os.close(write)


@pytest.fixture
def full():
    """/dev/full opened for writing: every write fails with ENOSPC."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "wb") as stream:
        yield stream


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("output")
    return {"lm": language_model_run(root / "lm"), "tr": translation_run(root / "tr")}


@pytest.mark.parametrize("args", [
    ["models"], ["models", "--json"], ["--help"],
    ["generate", "--checkpoint", "lm", "--prompt", "to be", "--max-new-tokens", "3"],
], ids=["models-table", "models-json", "help", "generate-stream"])
def test_a_full_standard_output_is_one_line(runs, full, args):
    result = taa(*[runs.get(arg, arg) for arg in args], stdout=full)
    assert (result.returncode, result.stderr) == (1, FULL)


def test_a_run_whose_summary_cannot_be_printed_is_whole(tmp_path, full):
    """Training ends, the run folder is written and unlocked, and only then is the summary
    printed: a full standard output costs the summary, not the run."""
    out = tmp_path / "run"
    result = taa("train", COPY, *TINY, "--out", out, "--tracking", "none", "--no-progress", "--json", stdout=full)
    assert (result.returncode, result.stderr) == (1, FULL)
    assert all((out / name).is_file() for name in (RECIPE, WEIGHTS, METRICS)) and not (out / RUN_LOCK).exists()
    assert cli("generate", "--checkpoint", out, "--prompt-ids", "5 6", "--max-new-tokens", "2").exit_code == 0


@pytest.mark.parametrize("args", [
    ["models"],
    ["translate", "--checkpoint", "tr", "--beam", "1"],
], ids=["models", "translate"])
def test_a_closed_pipe_ends_quietly(runs, args):
    result = into_closed_pipe(*[runs.get(arg, arg) for arg in args], input=b"ein hund .\n" * 50)
    assert (result.returncode, result.stderr.decode()) == (1, "")


def test_a_new_mlflow_store_prints_no_info_lines(tmp_path, monkeypatch):
    """MLflow says "Creating initial MLflow database tables..." (INFO) on a new sqlite store:
    not among taa's lines. Its warnings still show."""
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    result = cli("train", COPY, *TINY, "--out", tmp_path / "run", "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert logging.getLogger("mlflow.store.db.utils").isEnabledFor(logging.WARNING)
