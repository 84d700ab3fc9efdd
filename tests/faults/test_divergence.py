"""A run whose loss, gradient or weights stop being finite: it stops with one line naming the
step (``train.nonfinite: stop``) or skips the step at a lower rate (``skip``); no file it
writes ever holds an inf or a nan (JSON: null, never NaN), a non-finite checkpoint never
becomes a best, the last good state resumes, and a state saved just before the step is not
called good (resuming it meets the same step again, whatever the rate)."""

import itertools
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from taa.config import RecipeConfig
from taa.tasks.copy import CopyTask
from taa.tasks.language_model import LanguageModelTask
from taa.torch.training import loop
from taa.training.schedules import schedule_from_config
from tests.faults.conftest import COPY, TINY, assert_one_line_error, cli
from tests.faults.language_model import language_model_recipe
from tests.helpers import assert_same_weights

QUIET = ("--tracking", "none", "--no-progress")


def assert_finite(path) -> None:
    for name, tensor in load_file(str(path)).items():
        assert torch.isfinite(tensor).all(), (path, name)


def trainer_state(run) -> dict:
    return json.loads((run / "state" / "trainer.json").read_text())["trainer"]


def nan_loss_at(monkeypatch, task_class, *steps: int) -> None:
    """The task's loss is nan at these steps (one batch a step), and so is its gradient."""
    make_loss = task_class.loss

    def loss(self):
        compute, calls = make_loss(self), itertools.count(1)

        def poisoned(model, batch):
            loss_sum, n_tokens = compute(model, batch)
            return (loss_sum * math.nan if next(calls) in steps else loss_sum), n_tokens

        return poisoned

    monkeypatch.setattr(task_class, "loss", loss)


def strict_json(text: str):
    """JSON as every reader takes it: ``NaN`` and ``Infinity`` are not JSON."""

    def refuse(constant):
        raise AssertionError(f"{constant} in JSON")

    return json.loads(text, parse_constant=refuse)


def train_at_1e6(out) -> tuple[str, int]:
    """A tiny run at a rate of 1e6 with a state after every step, into ``out``: its error
    message and the step it diverged at."""
    result = cli("train", COPY, *TINY, "--set", "train.lr=1e6", "--set", "train.checkpoint_every=1", "--out", out,
                 *QUIET)
    output = assert_one_line_error(result, "training diverged at step ", "(lr ", "lower train.lr",
                                   "train.nonfinite: skip", max_lines=1)
    return output, int(output.split("training diverged at step ")[1].split(":")[0])


def test_a_rate_of_1e6_stops_at_the_step_it_diverges_and_writes_no_nan(tmp_path):
    """The state saved just before the step holds the weights the step started from: the
    message does not call it good, and rightly: resuming it with a far lower rate meets the
    same non-finite step at once. Its weights came from updates at 1e6, so the message puts
    a new run with a lower rate first."""
    out = tmp_path / "run"
    output, step = train_at_1e6(out)
    assert 1 < step <= 12 and "last good state" not in output, output
    assert (f"the last state, in {out / 'state'} (step {step - 1}), holds the weights this step started from: "
            "resuming it meets the same batch again whatever train.lr, and those weights may already be spoiled by "
            "too high a rate in the updates that made them; start again with a lower train.lr (no earlier state is "
            "kept); or, if that batch alone is at fault, resume it with train.nonfinite: skip (--resume-changed) to "
            "skip it") in output, output
    assert not (out / "model.safetensors").exists()  # no final model
    assert trainer_state(out)["step"] == step - 1
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert_finite(out / "state" / name)
    lower = cli("train", COPY, *TINY, "--set", "train.lr=1e-3", "--set", "train.checkpoint_every=1", "--resume", out,
                "--resume-changed", *QUIET)
    assert_one_line_error(lower, f"training diverged at step {step}: ", max_lines=2)  # and the changes warning


def test_skipping_after_a_rate_of_1e6_blames_the_weights_not_a_batch(tmp_path):
    """Following the advice's second half: every batch fails from the weights the 1e6 updates
    left, so once the skips run out the message says the weights are at fault and advises a
    new run, not more skips (which would skip batch after batch, and again)."""
    out = tmp_path / "run"
    _, step = train_at_1e6(out)
    skipping = cli("train", COPY, *TINY, "--set", "train.lr=1e-3", "--set", "train.checkpoint_every=1", "--set",
                   "train.nonfinite=skip", "--set", "train.max_skipped_steps=2", "--resume", out, "--resume-changed",
                   *QUIET)
    last = step + 2
    output = assert_one_line_error(
        skipping, f"training diverged at step {last}: the loss is nan (lr ", f"; steps {step} to {last} all failed "
        f"from the same weights, each on its own batch (no update was applied after step {step - 1}): the weights are at "
        f"fault, not a batch; the last state, in {out / 'state'} (step {last - 1}), holds those weights; 2 steps "
        "skipped already (train.max_skipped_steps=2); start again with a lower train.lr (a new run: skipping more "
        "steps meets the same failure)", max_lines=2)
    assert "max_skipped_steps (--resume-changed)" not in output and "to skip" not in output


@pytest.mark.parametrize("setting", ["train.lr=inf", "train.lr=nan", "train.grad_clip=inf", "train.adam_eps=nan",
                                     "train.max_minutes=inf"])
def test_a_rate_or_bound_that_is_not_a_finite_number_is_refused_when_the_recipe_is_read(tmp_path, setting):
    name, value = setting.split("=")
    result = cli("train", COPY, "--set", setting, "--out", tmp_path / "run", *QUIET)
    assert_one_line_error(result, f"train: {name.split('.')[1]}={value} must be a finite number", max_lines=1)
    assert not (tmp_path / "run").exists()


def test_a_nan_loss_stops_the_run_and_the_last_good_state_resumes_as_if_nothing_happened(tmp_path, monkeypatch,
                                                                                        tiny_run):
    out = tmp_path / "diverged"
    with monkeypatch.context() as patch:
        nan_loss_at(patch, CopyTask, 7)
        result = cli("train", COPY, *TINY, "--out", out, *QUIET)
    assert_one_line_error(result, "training diverged at step 7: the loss is nan (lr ",
                          f"the last good state is in {out / 'state'} (step 4); lower train.lr or set "
                          "train.nonfinite: skip, and resume it with --resume-changed", max_lines=1)
    assert not (out / "model.safetensors").exists() and trainer_state(out)["step"] == 4
    resumed = cli("train", COPY, *TINY, "--resume", out, *QUIET)
    assert resumed.exit_code == 0, resumed.output
    assert_same_weights(tiny_run / "model.safetensors", out / "model.safetensors")  # the nan step left no trace


def test_skip_drops_each_non_finite_step_lowers_the_rate_and_records_the_steps(tmp_path, monkeypatch):
    out = tmp_path / "skipped"
    nan_loss_at(monkeypatch, CopyTask, 3, 6)
    settings = ("--set", "train.nonfinite=skip", "--set", "train.max_skipped_steps=2", "--set", "train.log_every=1")
    result = cli("train", COPY, *TINY, *settings, "--out", out, *QUIET)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_steps"] == [3, 6] and metrics["steps"] == 12 and math.isfinite(metrics["final_train_loss"])
    assert_finite(out / "model.safetensors")
    assert trainer_state(out)["skipped_steps"] == [3, 6]  # a resumed run keeps the lowered rate
    recipe = RecipeConfig.load(COPY, [s for s in (*TINY, *settings) if s != "--set"])
    scheduled = schedule_from_config(recipe.train, recipe.model.d_model)
    history = trainer_state(out)["history"]  # step s runs at the rate the schedule gives after s - 1 steps
    rates = {step: lr / (recipe.train.lr * scheduled(step - 1)) for step, _, lr in history if step < 12}
    # a skipped step is logged at the rate it would have used; the steps after it at a lower one
    assert [rates[s] for s in (2, 3, 4, 6, 7, 11)] == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])


@pytest.mark.parametrize("most, poisoned", [(2, (3, 6, 8)), (1, (3, 6))])  # step 5 applied after the state of 4
def test_skip_stops_the_run_once_it_skipped_max_skipped_steps(tmp_path, monkeypatch, most, poisoned):
    out = tmp_path / "run"
    nan_loss_at(monkeypatch, CopyTask, *poisoned)
    result = cli("train", COPY, *TINY, "--set", "train.nonfinite=skip", "--set", f"train.max_skipped_steps={most}",
                 "--out", out, *QUIET)
    skipped = "1 step" if most == 1 else f"{most} steps"
    assert_one_line_error(result, f"training diverged at step {poisoned[-1]}: the loss is nan",
                          f"the last good state is in {out / 'state'} (step 4); {skipped} skipped already "
                          f"(train.max_skipped_steps={most}); lower train.lr", max_lines=1)
    assert trainer_state(out)["step"] == 4 and trainer_state(out)["skipped_steps"] == [3]
    assert not (out / "model.safetensors").exists()


def test_a_state_followed_only_by_skipped_steps_is_not_called_good(tmp_path, monkeypatch):
    """Step 5 is skipped and step 6 stops the run: no update was applied after the state of
    step 4, so step 6 started from its weights, and resuming it meets the same steps again.
    Two batches in a row failed from those weights: the weights are blamed, not a batch."""
    out = tmp_path / "run"
    nan_loss_at(monkeypatch, CopyTask, 5, 6)
    result = cli("train", COPY, *TINY, "--set", "train.nonfinite=skip", "--set", "train.max_skipped_steps=1",
                 "--out", out, *QUIET)
    assert_one_line_error(result, "training diverged at step 6: the loss is nan (lr ", "; steps 5 to 6 all failed "
                          "from the same weights, each on its own batch (no update was applied after step 4): the "
                          f"weights are at fault, not a batch; the last state, in {out / 'state'} (step 4), holds "
                          "those weights; 1 step skipped already (train.max_skipped_steps=1); start again with a "
                          "lower train.lr", max_lines=1)


def test_failures_in_a_row_after_updates_since_the_state_point_to_the_state(tmp_path, monkeypatch):
    """Steps 6 and 7 fail from the weights step 5 made after the state of step 4: the
    weights are blamed, and the state before the update that made them is called good."""
    out = tmp_path / "run"
    nan_loss_at(monkeypatch, CopyTask, 6, 7)
    result = cli("train", COPY, *TINY, "--set", "train.nonfinite=skip", "--set", "train.max_skipped_steps=1",
                 "--out", out, *QUIET)
    assert_one_line_error(result, "training diverged at step 7: the loss is nan (lr ", "; steps 6 to 7 all failed "
                          "from the same weights, each on its own batch (no update was applied after step 5): the "
                          f"weights are at fault, not a batch; the last good state is in {out / 'state'} (step 4); "
                          "1 step skipped already (train.max_skipped_steps=1); lower train.lr, and resume it with "
                          "--resume-changed", max_lines=1)


def test_a_last_interval_of_skipped_steps_has_no_training_loss_and_every_json_stays_json(tmp_path, monkeypatch):
    """Steps 9 to 12, the last logging interval, are all skipped: its training loss is null in
    ``taa train --json``, metrics.json and the state (never NaN), and that state resumes."""
    out = tmp_path / "run"
    settings = ("--set", "train.nonfinite=skip", "--set", "train.log_every=4")
    with monkeypatch.context() as patch:
        nan_loss_at(patch, CopyTask, 9, 10, 11, 12)
        result = cli("train", COPY, *TINY, *settings, "--out", out, "--json", *QUIET)
    assert result.exit_code == 0, result.output
    printed = strict_json(result.stdout)
    assert printed["metrics"]["final_train_loss"] is None and printed["metrics"]["skipped_steps"] == [9, 10, 11, 12]
    assert strict_json((out / "metrics.json").read_text())["final_train_loss"] is None
    history = strict_json((out / "state" / "trainer.json").read_text())["trainer"]["history"]
    assert [loss is None for _, loss, _ in history] == [False, False, True]
    longer = cli("train", COPY, *TINY, *settings, "--set", "train.steps=16", "--resume", out, "--resume-changed",
                 "--json", *QUIET)
    assert longer.exit_code == 0, longer.output
    assert math.isfinite(strict_json(longer.stdout)["metrics"]["final_train_loss"])


def test_a_non_finite_checkpoint_never_becomes_a_best(tmp_path, monkeypatch):
    """Weights that overflow in an update (the loss and gradient of that step were finite)
    are caught before they are written: the validation at that step ranks nothing, the state
    is not saved, the run stops; the best weights and the state kept are finite."""
    recipe = language_model_recipe(tmp_path)
    out = tmp_path / "run"
    make_optimizer = loop.make_optimizer

    def overflowing(model, train):  # the 4th update sends one weight to inf
        optimizer, updates = make_optimizer(model, train), itertools.count(1)

        def overflow(optimizer, args, kwargs):
            if next(updates) == 4:
                with torch.no_grad():
                    next(model.parameters()).view(-1)[0] = math.inf

        optimizer.register_step_post_hook(overflow)
        return optimizer

    monkeypatch.setattr(loop, "make_optimizer", overflowing)
    result = cli("train", recipe, "--out", out, *QUIET)
    assert_one_line_error(result, "training diverged at step 4: the weights are no longer finite",
                          f"the last good state is in {out / 'state'} (step 2)", max_lines=1)
    state = trainer_state(out)
    assert state["step"] == 2 and [step for _, step in state["best"]] == [2]
    assert sorted(p.name for p in (out / "best").iterdir()) == ["step-2.safetensors"]
    assert_finite(out / "best" / "step-2.safetensors")
    assert_finite(out / "state" / "model.safetensors")


def test_a_validation_metric_that_is_not_finite_never_ranks(tmp_path, monkeypatch):
    recipe = language_model_recipe(tmp_path, steps=6, keep_best=3)
    evaluate, calls = LanguageModelTask.evaluate, itertools.count(1)

    def nan_at_the_second(self, model):
        metrics = evaluate(self, model)
        return {**metrics, "val_loss": math.nan} if next(calls) == 2 else metrics

    monkeypatch.setattr(LanguageModelTask, "evaluate", nan_at_the_second)
    result = cli("train", recipe, "--out", tmp_path / "run", *QUIET)
    assert result.exit_code == 0, result.output
    metrics = strict_json((tmp_path / "run" / "metrics.json").read_text())
    assert sorted(metrics["best_steps"]) == [2, 6]  # step 4 evaluated to nan
    evaluations = strict_json((tmp_path / "run" / "state" / "trainer.json").read_text())["trainer"]["evaluations"]
    assert [e["val_loss"] is None for e in evaluations] == [False, True, False]  # null in JSON
    assert sorted(p.name for p in (tmp_path / "run" / "best").iterdir()) == ["step-2.safetensors", "step-6.safetensors"]
