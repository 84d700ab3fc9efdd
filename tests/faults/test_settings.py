"""Settings that cannot work are one line before any training: a validation metric the task
does not report (or ranked the wrong way round), optimizer numbers out of their range, data
settings a decoder or a tokenizer cannot use. Memory that runs out while a command works is
one line saying what to lower, and a run keeps the last state it saved, which resumes."""

import json
from pathlib import Path

import pytest

from taa.tasks.copy import CopyBatches
from tests.faults.conftest import COPY, TINY, assert_one_line_error, cli
from tests.faults.language_model import language_model_recipe


def train(*args):
    return cli("train", *args, "--tracking", "none", "--no-progress")


def translation_recipe(folder: Path) -> Path:
    """A translation recipe whose files (in the test's folder) do not exist: nothing is ever
    downloaded, and a run that got past the checks of its settings would stop at them."""
    recipe = folder / "translation.yaml"
    files = "[" + ", ".join(str(folder / name) for name in ("text.de", "text.en")) + "]"
    recipe.write_text(f"task: translation\nmodel:\n  preset: vaswani-tiny\ndata:\n  train_files: {files}\n"
                      f"  valid_files: {files}\n  test_files: {files}\n  bleu_sentences: 10\n", encoding="utf-8")
    return recipe


# ------------------------------------------------------------------ the metric that ranks checkpoints


@pytest.mark.parametrize("recipe, settings, fragment", [
    ("translation", ["train.select_metric=foo"],
     "train.select_metric='foo' is not a validation metric of task='translation': one of val_loss, "
     "val_perplexity, val_bleu"),
    ("translation", ["train.select_metric=val_bleu", "data.bleu_sentences=0"],
     "train.select_metric='val_bleu' is not a validation metric of task='translation': one of val_loss, "
     "val_perplexity"),
    ("translation", ["train.select_metric=val_bleu"],
     "train.select_mode='min': a higher val_bleu is better (set train.select_mode=max)"),
    ("language_model", ["train.select_metric=val_accuracy"],
     "is not a validation metric of task='language_model': one of val_loss, val_perplexity"),
    ("language_model", ["train.select_mode=max"], "a lower val_loss is better (set train.select_mode=min)"),
    ("copy", ["train.select_metric=foo"],
     "train.select_metric='foo': task='copy' has no validation to select weights by"),
], ids=["unknown", "bleu-off", "bleu-min", "lm-accuracy", "lm-loss-max", "copy"])
def test_a_select_metric_the_validation_does_not_report_is_refused_before_training(tmp_path, recipe, settings,
                                                                                    fragment):
    """Found before the data is read (the translation recipe's files do not exist), not at
    the first validation."""
    recipe = {"copy": lambda: COPY, "language_model": lambda: language_model_recipe(tmp_path),
              "translation": lambda: translation_recipe(tmp_path)}[recipe]()
    out = tmp_path / "run"
    result = train(recipe, *[arg for setting in settings for arg in ("--set", setting)], "--out", out)
    assert_one_line_error(result, fragment)
    assert not (out / "state").exists()


def test_a_bad_select_metric_starts_no_tracked_run(tmp_path, monkeypatch):
    """Refused before the tracker starts: no run in the tracking store, let alone a FAILED one
    (the store is not even opened)."""
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    result = cli("train", language_model_recipe(tmp_path), "--set", "train.select_metric=val_accuracy",
                 "--out", tmp_path / "run", "--tracking", "mlflow", "--no-progress")
    assert_one_line_error(result, "train.select_metric='val_accuracy' is not a validation metric", max_lines=1)
    assert not store.exists()


def test_a_select_metric_the_validation_reports_ranks_the_best_weights(tmp_path):
    out = tmp_path / "run"
    result = train(language_model_recipe(tmp_path, steps=4, keep_best=1), "--set",
                   "train.select_metric=val_perplexity", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["metrics"]["best_steps"]) == 1


# ------------------------------------------------------------------ numbers out of range


@pytest.mark.parametrize("setting, fragment", [
    ("train.adam_beta1=1.5", "adam_beta1=1.5 must be in [0, 1)"),
    ("train.adam_beta1=1", "adam_beta1=1.0 must be in [0, 1)"),
    ("train.adam_beta2=-0.5", "adam_beta2=-0.5 must be in [0, 1)"),
    ("train.adam_eps=0", "adam_eps=0.0 must be positive"),
    ("train.weight_decay=-1", "weight_decay=-1.0 must be >= 0"),
    ("train.select_metric=", "select_metric='' is empty"),
], ids=["beta1", "beta1-one", "beta2", "eps", "weight-decay", "select-metric-empty"])
def test_a_training_setting_out_of_range_is_one_line_naming_the_set(tmp_path, setting, fragment):
    result = train(COPY, "--set", setting, "--out", tmp_path / "run")
    assert_one_line_error(result, f"--set {setting}:", fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, fragment", [
    ("data.length_penalty=inf", "length_penalty=inf must be a finite number"),
    ("data.length_penalty=11", "length_penalty=11.0 must be in [0, 10]"),
    ("data.beam=65", "beam=65 must be 1 to 64"),
    ("data.min_frequency=0", "min_frequency=0 must be positive"),
    ("data.max_extra=-1", "max_extra=-1 must be >= 0"),
], ids=["length-penalty-inf", "length-penalty-11", "beam", "min-frequency", "max-extra"])
def test_a_translation_setting_a_decoder_cannot_use_is_one_line(tmp_path, setting, fragment):
    """What the run decodes its test set with, and taa translate with by default: refused
    when the recipe is read, as --beam and --length-penalty are."""
    assert_one_line_error(train(translation_recipe(tmp_path), "--set", setting, "--out", tmp_path / "run"),
                          f"--set {setting}:", fragment)


def test_an_infinite_sample_temperature_is_one_line(tmp_path):
    result = train(language_model_recipe(tmp_path), "--set", "data.temperature=inf", "--out", tmp_path / "run")
    assert_one_line_error(result, "--set data.temperature=inf:", "temperature=inf must be a finite number")


# ------------------------------------------------------------------ memory that runs out


def test_a_batch_that_cannot_fit_in_memory_is_one_line(tmp_path):
    """The first batch alone asks for 8 TB at once: the allocator refuses it (unless the
    system promises any amount of memory it has not got, and kills the process once it is
    touched)."""
    if Path("/proc/sys/vm/overcommit_memory").is_file() and \
            Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1":
        pytest.skip("every allocation succeeds here: the kernel kills the process instead")
    result = train(COPY, *TINY, "--set", "train.batch_size=100000000000", "--out", tmp_path / "run")
    assert_one_line_error(result, "taa train ran out of memory (tried to allocate 8 TB): lower train.batch_size")


def test_memory_that_runs_out_mid_run_keeps_the_last_state_which_resumes(tmp_path, monkeypatch):
    """The 6th batch finds no memory: the state of step 4 stays whole, and the run resumes from it."""
    drawn = CopyBatches.__next__
    calls = []

    def out_of_memory_at_step_6(self):
        calls.append(1)
        if len(calls) == 6:
            raise MemoryError()
        return drawn(self)

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(CopyBatches, "__next__", out_of_memory_at_step_6)
        result = train(COPY, *TINY, "--out", out)
    assert_one_line_error(result, "taa train ran out of memory: lower train.batch_size")
    assert json.loads((out / "state" / "trainer.json").read_text())["trainer"]["step"] == 4
    assert not (out / "run.lock").exists()
    resumed = train("--resume", out, "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["metrics"]["steps"] == 12
