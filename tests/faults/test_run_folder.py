"""Where a run goes and what is already there: a recipe's name is one plain folder name
under ``runs/``; a folder that holds a run or a model is never trained or converted over
without a word (``--resume`` continues a run, ``--overwrite`` replaces it, every file of
the earlier run and its task, and only once the new run has saved a state: one that fails
or is killed before that leaves the earlier run as it was); an entry of the run folder of
the wrong kind, or one that takes no file, is one line before training, not a traceback
after it."""

import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from taa import folders
from taa.tasks.copy import CopyTask
from tests.checkpoints import language_model_run, translation_run
from tests.faults.conftest import COPY, QUIET, TINY, assert_one_line_error, cli, files
from tests.faults.test_divergence import nan_loss_at


# ------------------------------------------------------------------ the recipe's name


@pytest.mark.parametrize("name, problem", [
    ("../../escaped", "it holds a path separator"),
    ("{tmp}/absolute", "it holds a path separator"),
    ("a/b", "it holds a path separator"),
    ("a\\b", "it holds a path separator"),
    ("..", "it names runs/ or the folder above it"),
    (".", "it names runs/ or the folder above it"),
    ("a\0b", "it holds a NUL character"),
])
def test_a_name_that_is_not_one_folder_name_is_refused(tmp_path, monkeypatch, name, problem):
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    name = name.format(tmp=tmp_path)
    result = cli("train", COPY, *TINY, "--set", f"name={name}", *QUIET)
    assert_one_line_error(result, f"name={name!r} is not one plain folder name ({problem})", max_lines=1)
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []  # nothing written anywhere


def test_a_recipe_without_a_name_whose_file_name_is_no_folder_name_is_refused(tmp_path, monkeypatch):
    """Without a name the run folder is runs/<the recipe file's name>: ``..yaml`` would be runs/."""
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "..yaml"
    recipe.write_text(Path(COPY).read_text() + "\nname: ''\n")
    result = cli("train", recipe, *TINY, *QUIET)
    assert_one_line_error(result, "a recipe without a name is run in runs/<its file's name>", "give it a name",
                          max_lines=1)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ a folder that holds a run or a model


def test_training_into_a_finished_run_is_refused_and_it_is_kept(run):
    before = files(run)
    result = cli("train", COPY, *TINY, "--out", run, *QUIET)
    assert_one_line_error(result, f"--out {run} holds a training run already: continue it with --resume {run}",
                          "--overwrite", max_lines=1)
    assert files(run) == before


def test_the_default_folder_is_runs_name_and_not_trained_over_a_second_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    named = ("--set", "train.steps=1", "--set", "name=my run")
    assert cli("train", COPY, *TINY, *named, *QUIET).exit_code == 0
    assert (tmp_path / "runs" / "my run" / "model.safetensors").is_file()
    before = files(tmp_path / "runs")
    result = cli("train", COPY, *TINY, *named, *QUIET)
    assert_one_line_error(result, "run folder runs/my run holds a training run already", max_lines=1)
    assert files(tmp_path / "runs") == before


def test_overwrite_replaces_the_earlier_run_and_leaves_none_of_its_files(run):
    (run / "best").mkdir()
    (run / "best" / "step-99.safetensors").write_bytes(b"an earlier run's best weights")
    (run / "resume_changes.json").write_text("[]\n")
    (run / "notes.txt").write_text("mine\n")
    result = cli("train", COPY, *TINY, "--set", "train.steps=2", "--out", run, "--overwrite", *QUIET)
    assert result.exit_code == 0, result.output
    assert not (run / "best" / "step-99.safetensors").exists()
    assert not (run / "resume_changes.json").exists()
    assert (run / "notes.txt").read_text() == "mine\n"  # not a run's file: left alone
    assert '"steps": 2' in (run / "metrics.json").read_text()
    assert sorted(path.name for path in run.iterdir() if path.name.startswith(".")) == []  # nothing set aside stays


@pytest.mark.parametrize("damage", [None, "recipe.yaml"])
def test_overwrite_replaces_the_files_of_the_earlier_run_s_task_too(tmp_path, damage):
    """A copy run over a translation run: the translation's hypotheses go with the rest,
    even when the earlier run's recipe cannot be read to tell its task."""
    earlier = translation_run(tmp_path / "tr")
    (earlier / "test_hypotheses.txt").write_text("a dog runs .\n")
    (earlier / "notes.txt").write_text("mine\n")
    if damage:
        (earlier / damage).write_text("task: [unclosed\n")
    result = cli("train", COPY, *TINY, "--set", "train.steps=2", "--out", earlier, "--overwrite", *QUIET)
    assert result.exit_code == 0, result.output
    assert not (earlier / "test_hypotheses.txt").exists()
    assert not (earlier / "tokenizer").exists()  # the translation run's; a copy run has none
    assert (earlier / "notes.txt").read_text() == "mine\n"
    assert sorted(path.name for path in earlier.iterdir() if path.name.startswith(".")) == []


def fail_at_step(monkeypatch, step: int, failure: BaseException) -> None:
    """The copy task's loss raises ``failure`` at optimizer step ``step`` (one batch a step)."""
    make_loss = CopyTask.loss

    def loss(self):
        compute, calls = make_loss(self), itertools.count(1)

        def failing(model, batch):
            if next(calls) == step:
                raise failure
            return compute(model, batch)

        return failing

    monkeypatch.setattr(CopyTask, "loss", loss)


@pytest.mark.parametrize("failure", ["diverged", "ctrl-c"])
def test_a_run_that_fails_before_its_first_state_leaves_the_run_it_would_replace(run, monkeypatch, failure):
    """--overwrite sets the earlier run aside; a new run that fails before it has saved a
    state (a divergence at step 2, Ctrl-C; its first state is at step 4) puts it
    back as it was, and it resumes."""
    before = files(run)
    if failure == "diverged":
        nan_loss_at(monkeypatch, CopyTask, 2)
    else:
        fail_at_step(monkeypatch, 2, KeyboardInterrupt())
    result = cli("train", COPY, *TINY, "--set", "train.seed=7", "--out", run, "--overwrite", *QUIET)
    assert result.exit_code != 0, result.output
    assert files(run) == before
    assert sorted(path.name for path in run.iterdir() if path.name.startswith(".")) == []
    monkeypatch.undo()
    result = cli("train", "--resume", run, "--resume-changed", "--set", "train.steps=16", *QUIET)
    assert result.exit_code == 0, result.output
    assert '"steps": 16' in (run / "metrics.json").read_text()


def test_a_run_that_fails_after_its_first_state_has_replaced_the_earlier_run(run, monkeypatch):
    """Once the new run has a state, the earlier run is gone: the new one is what resumes."""
    nan_loss_at(monkeypatch, CopyTask, 6)  # a state at step 4 came first
    result = cli("train", COPY, *TINY, "--set", "train.seed=7", "--out", run, "--overwrite", *QUIET)
    assert_one_line_error(result, "training diverged at step 6", max_lines=1)
    assert sorted(path.name for path in run.iterdir() if path.is_file() or path.name.startswith(".")) == []
    assert json.loads((run / "state" / "trainer.json").read_text())["trainer"]["step"] == 4
    assert "seed: 7" in (run / "state" / "given_recipe.yaml").read_text()  # the new run's


def killed_at(monkeypatch, step: int, *args) -> None:
    """``taa ARGS`` killed at optimizer step ``step``: the run folder as a kill leaves it. In
    this process, so the run's way out does nothing a killed process could: the earlier run
    set aside stays so, and the next start is as a new process's."""
    fail_at_step(monkeypatch, step, RuntimeError("killed"))
    monkeypatch.setattr(folders.ReplacedRun, "__exit__", lambda self, *error: folders._SET_ASIDE_HERE.clear())
    assert cli(*args).exit_code != 0
    monkeypatch.undo()


def test_a_run_killed_before_its_first_state_gets_the_earlier_run_back_at_the_next_start(run, monkeypatch):
    before = files(run)
    killed_at(monkeypatch, 2, "train", COPY, *TINY, "--out", run, "--overwrite", *QUIET)
    assert (run / ".earlier-run" / "state").is_dir() and not (run / "state").exists()
    result = cli("train", COPY, *TINY, "--out", run, *QUIET)  # puts it back, then refuses to train over it
    assert_one_line_error(result, f"--out {run} holds a training run already", max_lines=1)
    assert files(run) == before
    killed_at(monkeypatch, 2, "train", COPY, *TINY, "--out", run, "--overwrite", *QUIET)
    result = cli("train", "--resume", run, "--resume-changed", "--set", "train.steps=16", *QUIET)
    assert result.exit_code == 0, result.output
    assert '"steps": 16' in (run / "metrics.json").read_text() and not (run / ".earlier-run").exists()


def test_a_run_killed_after_its_first_state_has_replaced_the_earlier_run_at_the_next_start(run, monkeypatch):
    killed_at(monkeypatch, 6, "train", COPY, *TINY, "--set", "train.seed=7", "--out", run, "--overwrite", *QUIET)
    assert (run / ".earlier-run").is_dir()
    result = cli("train", "--resume", run, *QUIET)
    assert result.exit_code == 0, result.output
    assert not (run / ".earlier-run").exists()
    assert "seed: 7" in (run / "recipe.yaml").read_text()


def test_overwrite_is_refused_with_a_resume_of_the_same_folder(run):
    before = files(run)
    result = cli("train", COPY, *TINY, "--resume", run, "--overwrite", *QUIET)
    assert_one_line_error(result, "--overwrite would delete the run --resume continues", max_lines=1)
    assert files(run) == before


@pytest.mark.parametrize("marker, held", [("config.json", "a Hugging Face model"),
                                          ("model.yaml", "a converted taa model")])
@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)])
def test_a_model_folder_is_never_trained_over(tmp_path, marker, held, overwrite):
    model = tmp_path / "model"
    model.mkdir()
    (model / marker).write_text("{}\n")
    (model / "model.safetensors").write_bytes(b"weights")
    before = files(model)
    result = cli("train", COPY, *TINY, "--out", model, *overwrite, *QUIET)
    assert_one_line_error(result, f"--out {model} holds {held}: train into another --out", max_lines=1)
    assert files(model) == before


@pytest.fixture
def gpt_run(tmp_path):
    """A GPT run folder (written, not trained): one that converts to Hugging Face."""
    return language_model_run(tmp_path / "gpt")


def test_convert_into_a_run_folder_is_refused_and_it_is_kept(gpt_run, run):
    before = files(run)
    result = cli("convert", "--to-hf", gpt_run, "--out", run)
    assert_one_line_error(result, f"--out {run} holds a training run already", "--overwrite", max_lines=1)
    assert files(run) == before


def test_convert_into_a_folder_of_other_files_is_refused_even_with_overwrite(gpt_run, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    for overwrite in ((), ("--overwrite",)):
        result = cli("convert", "--to-hf", gpt_run, "--out", other, *overwrite)
        assert_one_line_error(result, f"--out {other} is not empty and holds no model", max_lines=1)
    assert files(other) == {Path("notes.txt"): b"mine\n"}


def test_convert_overwrite_replaces_a_model_whole_and_a_failure_keeps_it(gpt_run, run, tmp_path):
    hf = tmp_path / "hf"
    assert cli("convert", "--to-hf", gpt_run, "--out", hf).exit_code == 0
    result = cli("convert", "--to-hf", gpt_run, "--out", hf)
    assert_one_line_error(result, f"--out {hf} holds a Hugging Face model already", "--overwrite", max_lines=1)
    (hf / "README.md").write_text("an earlier model's card\n")
    before = files(hf)
    # a copy-task Transformer has no Hugging Face class: the conversion fails, the folder stays
    result = cli("convert", "--to-hf", run, "--out", hf, "--overwrite")
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert files(hf) == before
    assert not [path for path in hf.iterdir() if path.name.startswith(".")]  # no staging folder left
    result = cli("convert", "--to-hf", gpt_run, "--out", hf, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (hf / "README.md").exists() and (hf / "config.json").is_file()


@pytest.mark.parametrize("spelling", ["{run}/state", "{run}/", "{link}"])
def test_the_same_run_spelt_another_way_is_still_the_run_resumed(run, tmp_path, spelling):
    """``--resume RUN/state --out RUN`` (or a link to RUN) continues RUN: it is not another
    run to refuse, and --overwrite would delete the best weights its state lists."""
    (tmp_path / "link").symlink_to(run)
    resume = spelling.format(run=run, link=tmp_path / "link")
    result = cli("train", "--resume", resume, "--out", run, "--overwrite", *QUIET)
    assert_one_line_error(result, "--overwrite would delete the run --resume continues", max_lines=1)
    result = cli("train", "--resume", resume, "--out", run, "--resume-changed", "--set", "train.steps=16", *QUIET)
    assert result.exit_code == 0, result.output
    result = cli("train", "--resume", run, "--resume-changed", "--set", "train.steps=20", *QUIET)
    assert result.exit_code == 0, result.output  # every best file its state lists is still there


def test_a_state_folder_given_as_resume_keeps_its_run_folder(run):
    """``--resume RUN/state`` without --out trains in RUN, not in RUN/state."""
    result = cli("train", "--resume", run / "state", "--resume-changed", "--set", "train.steps=16", *QUIET)
    assert result.exit_code == 0, result.output
    assert '"steps": 16' in (run / "metrics.json").read_text()
    assert not (run / "state" / "metrics.json").exists()


def test_convert_never_writes_over_the_folder_it_converts(gpt_run, tmp_path):
    """The source inside --out: replacing what --out holds would delete the source."""
    outer = tmp_path / "outer"
    assert cli("convert", "--to-hf", gpt_run, "--out", outer).exit_code == 0
    inner = outer / "gpt"
    shutil.copytree(gpt_run, inner)
    result = cli("convert", "--to-hf", inner, "--out", outer, "--overwrite")
    assert_one_line_error(result, f"--out {outer} holds the folder being converted", max_lines=1)
    assert (inner / "model.safetensors").is_file()


# ------------------------------------------------------------------ entries of the wrong kind


@pytest.mark.parametrize("name, kind", [
    ("best", "a file"), ("state", "a file"), ("tokenizer", "a file"),
    ("metrics.json", "a folder"), ("model.safetensors", "a folder"), ("recipe.yaml", "a folder"),
    ("training_curves.png", "a folder"),
])
def test_an_entry_of_the_wrong_kind_is_one_line_before_training(tmp_path, name, kind):
    out = tmp_path / "run"
    out.mkdir()
    entry = out / name
    entry.write_text("x") if kind == "a file" else entry.mkdir()
    writes = "a folder" if kind == "a file" else "a file"
    result = cli("train", COPY, *TINY, "--out", out, *QUIET)
    assert_one_line_error(result, f"{entry}: {kind} where the run writes {writes}", max_lines=1)
    assert [path.name for path in out.iterdir()] == [name]  # nothing trained, nothing written


def test_an_entry_of_the_wrong_kind_is_found_on_resume_too(run):
    (run / "metrics.json").unlink()
    (run / "metrics.json").mkdir()
    before = files(run)
    result = cli("train", COPY, *TINY, "--resume", run, *QUIET)
    assert_one_line_error(result, f"{run / 'metrics.json'}: a folder where the run writes a file", max_lines=1)
    assert files(run) == before


def test_a_state_folder_that_takes_no_file_is_one_line_before_resuming(run):
    state = run / "state"
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(state)], capture_output=True)
        if made.returncode != 0:
            pytest.skip("running as root, and the file system cannot make a folder immutable")
        undo = ["chattr", "-i", str(state)]
    else:
        state.chmod(0o500)
        undo = ["chmod", "700", str(state)]
    try:
        before = files(run)
        result = cli("train", COPY, *TINY, "--set", "train.steps=16", "--resume", run, "--resume-changed", *QUIET)
        assert_one_line_error(result, f"cannot write in {state} (", max_lines=1)
        assert files(run) == before
    finally:
        subprocess.run(undo, check=True)
