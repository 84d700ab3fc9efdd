"""A run killed at the exact moments its bookkeeping of best weights is most fragile never
strands: the saved state lists only files that exist, and what the kill left behind (a best
file no state lists, a staging folder, temporary files, ``state.new``/``state.old``) is
removed when the run resumes, which then ends normally.

The kills are injected: a process that calls ``os._exit`` at one point of step 4, after
which nothing runs, as after a SIGKILL. Every validation improves (keep_best 1), so
at step 4 the weights of step 4 replace those of step 2."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.faults.conftest import assert_one_line_error, cli
from tests.faults.language_model import language_model_recipe

QUIET = ("--tracking", "none", "--no-progress")

# python -c KILL POINT TAA-ARGS...: `taa TAA-ARGS...`, killed as it calls the Trainer's method
# POINT for the second state it saves, at step 4.
KILL = """
import itertools, os, sys
from taa.tasks.language_model import LanguageModelTask
from taa.torch.training.loop import Trainer

point, *args = sys.argv[1:]
losses = itertools.count()
LanguageModelTask.evaluate = lambda self, model: {"val_loss": 10.0 - next(losses)}  # each validation improves
original, calls = getattr(Trainer, point), itertools.count(1)

def killed(*arguments, **options):
    if next(calls) == 2:
        os._exit(137)
    return original(*arguments, **options)

setattr(Trainer, point, killed)
from taa.cli import main
main(args, prog_name="taa")
"""

# Where each kill falls in step 4, after its validation wrote best/step-4.safetensors:
BETWEEN_STATE_AND_DELETION = "_remove_dropped_best"  # the state lists step 4 only; step 2's file not yet deleted
BEFORE_THE_STATE = "save_state"  # the state still lists step 2; step 4's file already written


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory) -> dict[str, Path]:
    """A run killed at each point, in parallel (the processes, not the tests): its folder."""
    folder = tmp_path_factory.mktemp("killed")
    recipe = language_model_recipe(folder, keep_best=1)
    processes = {}
    for point in (BETWEEN_STATE_AND_DELETION, BEFORE_THE_STATE):
        command = [sys.executable, "-c", KILL, point, "train", str(recipe), "--out", str(folder / point), *QUIET]
        processes[point] = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for point, process in processes.items():
        output = process.communicate(timeout=120)[0].decode(errors="replace")
        assert process.returncode == 137, (point, output)
    return {point: folder / point for point in processes}


def copy_of(run: Path, tmp_path: Path) -> Path:
    """The killed run copied into the test's folder (its recipe names the text by full path),
    without the killed process's lock on its folder: the copy is a folder no run ever held."""
    shutil.copy(run.parent / "recipe.yaml", tmp_path / "recipe.yaml")
    return Path(shutil.copytree(run, tmp_path / run.name, ignore=shutil.ignore_patterns("*.lock")))


def saved(out) -> dict:
    return json.loads((out / "state" / "trainer.json").read_text())["trainer"]


def best_files(out) -> list[str]:
    return sorted(path.name for path in (out / "best").iterdir())


def listed(out) -> list[str]:
    return sorted(f"step-{step}.safetensors" for _, step in saved(out)["best"])


def test_a_kill_at_any_point_of_the_bookkeeping_leaves_a_state_whose_files_exist_and_resumes(tmp_path, killed_runs):
    runs = {point: copy_of(run, tmp_path) for point, run in killed_runs.items()}

    out = runs[BETWEEN_STATE_AND_DELETION]
    assert saved(out)["step"] == 4 and listed(out) == ["step-4.safetensors"]
    assert best_files(out) == ["step-2.safetensors", "step-4.safetensors"]  # step 2's: stale, listed by no state

    out = runs[BEFORE_THE_STATE]  # the order this fixes: the dropped file was deleted before the state
    assert saved(out)["step"] == 2 and listed(out) == ["step-2.safetensors"]
    assert best_files(out) == ["step-2.safetensors", "step-4.safetensors"]

    for point, out in runs.items():
        result = cli("train", tmp_path / "recipe.yaml", "--resume", out, *QUIET)
        assert result.exit_code == 0, (point, result.output)
        assert saved(out)["step"] == 8 and best_files(out) == listed(out), point
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")], point


def test_what_a_kill_leaves_is_cleaned_when_the_run_resumes(tmp_path, killed_runs):
    out = copy_of(killed_runs[BETWEEN_STATE_AND_DELETION], tmp_path)
    # What kills elsewhere would have left: temporary files of ours (named as taa.folders names
    # them) and of safetensors, a half-filled staging folder, and both halves of a folder swap
    # (write_folder_atomically killed between its renames).
    for folder, prefix in ((out, ".model.safetensors.tmp-"), (out / "best", ".step-6.safetensors.tmp-")):
        os.close(tempfile.mkstemp(prefix=prefix, dir=folder)[0])
    for path in (out / ".tmpAbC123", out / "best" / ".tmp0q2W8e"):
        path.write_bytes(b"half")
    staging = Path(tempfile.mkdtemp(prefix=".state.tmp-", dir=out))
    (staging / "model.safetensors").write_bytes(b"half")
    shutil.copytree(out / "state", out / "state.old")
    (out / "state").rename(out / "state.new")

    result = cli("train", tmp_path / "recipe.yaml", "--resume", out, *QUIET)
    assert result.exit_code == 0, result.output
    assert saved(out)["step"] == 8 and best_files(out) == listed(out)
    assert not (out / "state.new").exists() and not (out / "state.old").exists()
    assert not [p.name for p in (*out.iterdir(), *(out / "best").iterdir()) if p.name.startswith(".")]


def test_a_state_that_lists_a_best_file_that_is_gone_is_one_line(tmp_path, killed_runs):
    out = copy_of(killed_runs[BETWEEN_STATE_AND_DELETION], tmp_path)
    (out / "best" / "step-4.safetensors").unlink()
    result = cli("train", tmp_path / "recipe.yaml", "--resume", out, *QUIET)
    assert_one_line_error(result, f"{out / 'best' / 'step-4.safetensors'}: no such file, though the state in "
                                  f"{out / 'state'} (step 4) lists it among the best weights", max_lines=1)
