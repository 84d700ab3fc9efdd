"""``taa train --resume``: a recipe that trains differently from the saved run's is refused
in one line listing the differences, unless ``--resume-changed`` accepts them and the run
folder records them (the original recipe stays recoverable)."""

import json

import pytest
import yaml

from tests.faults.conftest import COPY, QUIET, ROOT, TINY, assert_one_line_error, cli, files
from tests.faults.language_model import language_model_recipe

CHAR = ROOT / "recipes" / "gpt-shakespeare-char.yaml"
# A language model of a few thousand weights on a text file of a few lines: its tokenizer
# fills the model's vocabulary size, so the saved run's recipe is not the one given.
TINY_LM = ("model.n_layers=1", "model.d_model=16", "model.n_heads=2", "model.d_ff=32", "model.max_length=16",
           "train.batch_size=2", "train.steps=4", "train.eval_every=2", "train.max_minutes=0",
           "train.dtype=float32", "data.eval_batches=1", "data.sample_tokens=0")


def test_a_changed_learning_rate_and_batch_size_are_refused_and_nothing_changes(run):
    before = files(run)
    result = cli("train", COPY, *TINY, "--set", "train.lr=0.01", "--set", "train.batch_size=4", "--resume", run,
                 *QUIET)
    assert_one_line_error(result, f"{run / 'state'}: the recipe differs from the saved run's: ",
                          "train.batch_size 8 -> 4", "train.lr 0.003 -> 0.01", "--resume-changed")
    assert files(run) == before


@pytest.mark.parametrize("setting, shown", [
    ("train.steps=16", "train.steps 12 -> 16"),  # more steps: another schedule, other validations
    ("train.seed=1", "train.seed 0 -> 1"),
    ("train.optimizer=muon", "train.optimizer adam -> muon"),
    ("model.dropout=0.1", "model.dropout 0.0 -> 0.1"),
    ("data.length=8", "data.length 10 -> 8"),
])
def test_each_field_that_changes_the_result_is_refused(run, setting, shown):
    result = cli("train", COPY, *TINY, "--set", setting, "--resume", run, *QUIET)
    assert_one_line_error(result, shown, "(resume with --resume-changed to accept)")


def test_the_same_recipe_resumes_and_reporting_settings_may_change(run):
    result = cli("train", COPY, *TINY, "--set", "train.log_every=3", "--set", "train.threads=1",
                 "--set", "train.checkpoint_every=2", "--set", "name=renamed", "--resume", run, *QUIET)
    assert result.exit_code == 0, result.output
    assert not (run / "resume_changes.json").exists()


def test_a_resume_without_a_recipe_continues_the_saved_run(run):
    result = cli("train", "--resume", run, *QUIET, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["name"] == "copy-task"


def test_resume_changed_trains_on_and_records_the_changes_and_the_saved_recipe(run):
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    with pytest.warns(UserWarning, match="resuming with a changed recipe: train.steps 12 -> 16"):
        result = cli("train", COPY, *TINY, "--set", "train.steps=16", "--resume", run, "--resume-changed", *QUIET,
                     "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["metrics"]["steps"] == 16
    [entry] = json.loads((run / "resume_changes.json").read_text())
    assert entry["step"] == 12
    assert entry["changes"] == [{"field": "train.steps", "saved": 12, "now": 16}]
    assert entry["saved_recipe"] == saved  # the run's first recipe, whole
    assert yaml.safe_load((run / "recipe.yaml").read_text())["train"]["steps"] == 16
    # the state now carries the new recipe: resuming with it again is no change
    result = cli("train", COPY, *TINY, "--set", "train.steps=16", "--resume", run, *QUIET)
    assert result.exit_code == 0, result.output
    assert len(json.loads((run / "resume_changes.json").read_text())) == 1


@pytest.mark.parametrize("setting, shown", [
    ("train.optimizer=muon", "train.optimizer adam -> muon"),
    ("train.weight_decay=0.1", "train.weight_decay 0.0 -> 0.1"),
])
def test_a_changed_optimizer_is_one_line_even_when_accepted(run, setting, shown):
    before = files(run)
    result = cli("train", COPY, *TINY, "--set", setting, "--resume", run, "--resume-changed", *QUIET)
    assert_one_line_error(result, shown, "the saved optimizer state cannot carry over", max_lines=1)
    assert files(run) == before


def test_an_accepted_model_that_does_not_fit_the_saved_weights_is_one_line_and_not_recorded(run):
    result = cli("train", COPY, *TINY, "--set", "model.d_model=32", "--resume", run, "--resume-changed", *QUIET)
    output = assert_one_line_error(result, "weights do not fit", max_lines=3)
    assert len(output) < 1000, output
    assert not (run / "resume_changes.json").exists()


def test_a_state_from_before_states_kept_their_recipe_is_compared_with_the_run_folders(run):
    (run / "state" / "given_recipe.yaml").unlink()
    result = cli("train", COPY, *TINY, "--set", "train.lr=0.01", "--resume", run, *QUIET)
    assert_one_line_error(result, "train.lr 0.003 -> 0.01")
    (run / "recipe.yaml").unlink()  # and with no recipe at all: one warning, then it resumes
    with pytest.warns(UserWarning, match="no saved recipe to compare with"):
        result = cli("train", COPY, *TINY, "--resume", run, *QUIET)
    assert result.exit_code == 0, result.output


def test_resume_changed_without_resume_is_one_line(tmp_path):
    result = cli("train", COPY, *TINY, "--out", tmp_path / "run", "--resume-changed", *QUIET)
    assert_one_line_error(result, "--resume-changed goes with --resume DIR", max_lines=1)
    assert not (tmp_path / "run").exists()


def test_the_model_section_a_tokenizer_completed_compares_like_with_like(tmp_path):
    """A language model's vocabulary size comes from its tokenizer: the same recipe resumes,
    whether the state keeps the recipe as given or only the run folder's completed one is left."""
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question\n" * 40)
    settings = [arg for setting in (*TINY_LM, f"data.file={text}") for arg in ("--set", setting)]
    out = tmp_path / "lm"
    result = cli("train", CHAR, *settings, "--out", out, *QUIET)
    assert result.exit_code == 0, result.output
    completed = yaml.safe_load((out / "recipe.yaml").read_text())["model"]["vocab_size"]
    given = yaml.safe_load((out / "state" / "given_recipe.yaml").read_text())["model"]["vocab_size"]
    assert completed != given  # else this test shows nothing
    result = cli("train", CHAR, *settings, "--resume", out, *QUIET)
    assert result.exit_code == 0, result.output
    (out / "state" / "given_recipe.yaml").unlink()
    result = cli("train", CHAR, *settings, "--resume", out, *QUIET)
    assert result.exit_code == 0, result.output
    result = cli("train", CHAR, *settings, "--set", "model.d_ff=64", "--resume", out, *QUIET)
    assert_one_line_error(result, "model.d_ff 32 -> 64")


def test_a_run_resumed_into_another_folder_brings_its_best_weights_and_state_along(tmp_path):
    """``--resume A --out B``: the run ends with the best weights A's state lists, so B gets
    them (and the state) before training; A is only read, and B resumes as a run of its own."""
    recipe = language_model_recipe(tmp_path)  # 8 steps, the best 2 kept
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli("train", recipe, "--out", first, *QUIET).exit_code == 0
    before = files(first)
    result = cli("train", recipe, "--resume", first, "--out", second, *QUIET, "--json")
    assert result.exit_code == 0, result.output
    kept = json.loads(result.stdout.strip().splitlines()[-1])["metrics"]["best_steps"]
    assert len(kept) == 2
    assert sorted(path.name for path in (second / "best").iterdir()) == sorted(f"step-{s}.safetensors" for s in kept)
    assert files(first) == before
    result = cli("train", recipe, "--resume", second, *QUIET)
    assert result.exit_code == 0, result.output
