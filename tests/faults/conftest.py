"""What the fault tests share: the command line as a user calls it, and a tiny run."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from taa.cli import main

ROOT = Path(__file__).resolve().parents[2]
COPY = str(ROOT / "recipes" / "copy.yaml")
# A copy-task run of a few seconds: 2 layers of width 64, 12 steps, a checkpoint every 4.
TINY = ("--set", "train.steps=12", "--set", "train.batch_size=8", "--set", "train.eval_every=4",
        "--set", "data.eval_sequences=8", "--set", "train.warmup_steps=2")


QUIET = ("--tracking", "none", "--no-progress")  # no tracking store, no progress bar


def cli(*args: str, input: str | bytes | None = None):
    """``taa ARGS`` in this process; the click result (exit_code, output, exception)."""
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def cli_process(*args: str, input: bytes | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """``python -m taa ARGS`` in a new process, as a shell runs it; stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", "taa", *map(str, args)], input=input, capture_output=True,
                          timeout=timeout)


def assert_one_line_error(result, *fragments: str, max_lines: int = 3) -> str:
    """A non-zero exit with a short message (no traceback) that contains every fragment."""
    output = result.output if hasattr(result, "output") else (result.stdout + result.stderr).decode(errors="replace")
    code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert code != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert 1 <= len(lines) <= max_lines, output
    for fragment in fragments:
        assert fragment in output, (fragment, output)
    if hasattr(result, "exception") and result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return output


@pytest.fixture
def tiny_run(tmp_path):
    """Train the tiny copy run into a folder once; returns the folder."""
    out = tmp_path / "run"
    result = cli("train", COPY, *TINY, "--out", out, "--tracking", "none", "--no-progress")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny copy run (12 steps), trained once for the module that asks for it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = cli("train", COPY, *TINY, "--out", out, *QUIET)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the module's trained run, for a test to train into, resume or damage."""
    return shutil.copytree(trained, tmp_path / "run")


def files(folder: Path) -> dict[Path, bytes]:
    """Every file of a folder and its bytes: what a test compares to show nothing changed."""
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
