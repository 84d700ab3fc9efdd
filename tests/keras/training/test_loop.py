"""taa.keras.training.loop: the Keras trainer follows the torch trainer's recipe.

Parity: a few steps of both trainers on the same weights and batches give the same weights.
Then what the run does besides: validation, best weights and their average, early
stopping, the time budget, non-finite steps (stop and skip), one-line refusals.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import torch

from taa import config as cfg
from taa import folders
from taa.config import ConfigError, TrainConfig
from taa.keras.models.gpt import GPT
from taa.keras.training import Trainer, check_train, fit, label_smoothed_cross_entropy, setup_parallel
from taa.keras.training.checkpoint import load_weights_file
from taa.keras.weights import ensure_built, load_state_dict, state_dict
from taa.tasks.language_model import LanguageModelBatches, language_model_loss
from taa.torch.models.gpt import GPT as TorchGPT
from taa.torch.training import fit as torch_fit
from taa.training.divergence import DivergenceError

CONFIG = cfg.preset("gpt-tiny", n_layers=1, max_length=16)
TOKENS = np.tile(np.random.default_rng(0).permutation(64), 50)  # each token has one successor: learnable fast
KERAS_LOSS = language_model_loss(0.0, label_smoothed_cross_entropy)


def batches(seed: int = 0, batch_size: int = 4, block: int = 8) -> LanguageModelBatches:
    return LanguageModelBatches(TOKENS, block, batch_size, seed)


def twins():
    """A Keras GPT and its torch twin on the same weights."""
    torch.manual_seed(0)
    reference = TorchGPT(CONFIG)
    model = ensure_built(GPT(CONFIG))
    load_state_dict(model, {k: v.detach().numpy().copy() for k, v in reference.state_dict().items()})  # no aliasing
    return model, reference


def graph_fit(model, stream, train: TrainConfig, compute_loss, **options):
    """:func:`fit` with the step compiled as a TensorFlow graph, not by XLA: quicker to make,
    for the tests of what the host does (the others compile as a run does)."""
    return Trainer(model, train, compute_loss, stream, d_model=32, progress=False, jit_compile=False,
                   **options).fit()


def train_config(**fields) -> TrainConfig:
    return TrainConfig(**{"steps": 4, "batch_size": 4, "lr": 3e-3, "schedule": "cosine", "warmup_steps": 2,
                          "log_every": 1, **fields})


@pytest.mark.parametrize("optimizer", [
    dict(optimizer="muon", weight_decay=0.1, grad_clip=0.05, label_smoothing=0.1),
    dict(optimizer="adam", weight_decay=0.1, grad_clip=0.0, adam_beta2=0.99),
])
def test_steps_equal_the_torch_trainers(optimizer):
    """Schedule, clipping, smoothing, Muon and AdamW with decoupled decay: the same weights
    after four steps. Adam's epsilon is above the rounding noise of the gradients whose true
    value is 0 (a key projection's bias: softmax ignores what it adds to every logit), or
    Adam's first steps, about lr * sign(noise), would differ in those weights."""
    model, reference = twins()
    train = train_config(adam_eps=1e-6, **optimizer)
    smoothing = train.label_smoothing
    expected = torch_fit(reference, batches(), train, language_model_loss(smoothing), d_model=32, progress=False)
    result = fit(model, batches(), train, language_model_loss(smoothing, label_smoothed_cross_entropy), d_model=32,
                 progress=False)
    assert result.steps == expected.steps == 4
    for (step, loss, lr), (step_t, loss_t, lr_t) in zip(result.history, expected.history):
        assert step == step_t and loss == pytest.approx(loss_t, abs=1e-5) and lr == pytest.approx(lr_t, rel=1e-6)
    ours = state_dict(model)
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(ours[name], value.numpy(), atol=1e-5, rtol=0, err_msg=name)


def test_validation_keeps_the_best_weights_and_averages_them(tmp_path):
    model = ensure_built(GPT(CONFIG))
    losses = iter([3.0, 1.0, 2.0, 5.0])
    kept = {}

    def evaluate(m):
        value = next(losses)
        kept[value] = state_dict(m)
        return {"val_loss": value}

    train = train_config(eval_every=1, keep_best=2, average_best=True)
    trainer = Trainer(model, train, KERAS_LOSS, batches(), d_model=32, evaluate=evaluate, out=tmp_path,
                      progress=False)
    result = trainer.fit()
    assert [e["val_loss"] for e in result.evaluations] == [3.0, 1.0, 2.0, 5.0]
    assert trainer.state.best == [(1.0, 2), (2.0, 3)]
    assert sorted(p.name for p in (tmp_path / folders.BEST).iterdir()) == ["step-2.safetensors", "step-3.safetensors"]
    final = state_dict(model)
    for name in final:
        np.testing.assert_allclose(final[name], (kept[1.0][name] + kept[2.0][name]) / 2, atol=1e-7, err_msg=name)
    load_weights_file(model, folders.best_weights(tmp_path, 2))
    np.testing.assert_array_equal(state_dict(model)["blocks.final_norm.weight"], kept[1.0]["blocks.final_norm.weight"])


def test_early_stopping_and_the_time_budget():
    model = ensure_built(GPT(CONFIG))
    stalled = graph_fit(model, batches(), train_config(steps=10, eval_every=1, early_stopping=2), KERAS_LOSS,
                        evaluate=lambda m: {"val_loss": 1.0})
    assert stalled.stop_reason == "early_stopping" and stalled.steps == 3
    budget = graph_fit(model, batches(), train_config(steps=1000, max_minutes=1e-4), KERAS_LOSS)
    assert budget.stop_reason == "time_budget" and budget.steps < 1000
    assert budget.history[-1][0] == budget.steps  # the last interval is logged


class Clock:
    """A stand-in for the time module: every reading is ``tick`` seconds after the one before."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_within_a_time_budget_the_clock_drives_the_schedule(monkeypatch):
    """As the torch trainer: the schedule runs at the step or at the clock's position
    (steps x seconds / budget), whichever is further along, and completes by the deadline."""
    import taa.keras.training.loop as loop

    monkeypatch.setattr(loop, "time", Clock(1.5))  # 1.5 s a step: the clock runs 2.5 times faster than the steps
    train = train_config(steps=100, max_minutes=1.0, schedule="cosine", warmup_steps=0, log_every=5)
    trainer = Trainer(ensure_built(GPT(CONFIG)), train, KERAS_LOSS, batches(), d_model=32, progress=False)
    result = trainer.fit()
    assert result.stop_reason == "time_budget" and result.steps == 40  # 60 s
    # step 40 (index 39) starts at 58.5 s: position 97, as torch's Trainer.learning_rate computes it
    assert result.history[-1][2] == pytest.approx(train.lr * trainer.schedule(97), rel=1e-4)
    assert result.history[-1][2] < 0.01 * train.lr


class Poisoned:
    """Batches as dicts with a ``poison`` added to the loss: nan at the steps given (1-based)."""

    def __init__(self, steps: set[int]) -> None:
        self.inner, self.steps, self.count = batches(), steps, 0

    def __next__(self) -> dict:
        self.count += 1
        batch = next(self.inner)
        poison = np.float32("nan") if self.count in self.steps else np.float32(0)
        return {"inputs": batch.inputs, "targets": batch.targets, "poison": np.full((1,), poison)}


def poisoned_loss(model, batch):
    logits = model(batch["inputs"])
    loss, count = label_smoothed_cross_entropy(logits, batch["targets"])
    return loss + keras.ops.sum(batch["poison"]), count


def test_a_step_that_is_not_finite_stops_the_run_with_the_weights_before_it():
    start = state_dict(ensure_built(GPT(CONFIG)))
    weights = {}
    for log_every in (1, 3):  # the host learns it at once, or when it next logs (the device ran step 3 as a no-op)
        model = ensure_built(GPT(CONFIG))
        load_state_dict(model, start)
        trainer = Trainer(model, train_config(steps=6, log_every=log_every), poisoned_loss, Poisoned({2}),
                          d_model=32, progress=False, jit_compile=False)
        with pytest.raises(DivergenceError, match=r"^training diverged at step 2: the loss is nan \(lr [0-9.e-]+\); "
                                                  r"lower train.lr or set train.nonfinite: skip$"):
            trainer.fit()
        assert trainer.state.step == max(2, log_every)
        weights[log_every] = state_dict(model)
    assert any(not np.array_equal(weights[1][name], start[name]) for name in start)  # step 1 was applied
    for name in start:
        np.testing.assert_array_equal(weights[3][name], weights[1][name], err_msg=name)


def test_skipped_steps_change_nothing_and_lower_the_rate():
    train = train_config(steps=4, nonfinite="skip", skip_lr_factor=0.5, schedule="constant", warmup_steps=0)
    model = ensure_built(GPT(CONFIG))
    result = graph_fit(model, Poisoned({1, 3}), train, poisoned_loss)
    assert result.skipped_steps == [1, 3] and result.steps == 4
    # a step's rate is set before it fails; each skip halves the rate of the steps after it (as torch's trainer)
    assert [lr for _, _, lr in result.history] == pytest.approx([3e-3, 3e-3 * 0.5, 3e-3 * 0.5, 3e-3 * 0.25])
    assert [loss is None for _, loss, _ in result.history] == [True, False, True, False]
    untouched = ensure_built(GPT(CONFIG))
    start = state_dict(untouched)
    graph_fit(untouched, Poisoned({1}), dataclasses.replace(train, steps=1), poisoned_loss)
    for name, value in state_dict(untouched).items():  # weights (and their moments) as they were
        np.testing.assert_array_equal(value, start[name], err_msg=name)
    spent = dataclasses.replace(train, max_skipped_steps=1)
    with pytest.raises(DivergenceError, match=r"^training diverged at step 3: the loss is nan .*1 step skipped "
                                              r"already \(train.max_skipped_steps=1\)"):
        graph_fit(ensure_built(GPT(CONFIG)), Poisoned({1, 3}), spent, poisoned_loss)


@pytest.mark.parametrize("field, value, message", [
    ("grad_accumulation", 2, "train.grad_accumulation=2: the Keras trainer takes one batch a step"),
    ("layer_lr_decay", 0.8, "train.layer_lr_decay=0.8: the Keras trainer has one rate for every layer"),
    ("threads", 1, "train.threads=1: the Keras backend chooses its threads"),
    ("checkpoint_every", 5, "train.checkpoint_every=5: a Keras run saves no resumable state"),
    ("device", "mps", "train.device='mps': the Keras trainer runs on auto, cpu, cuda or cuda:N"),
])
def test_what_the_keras_trainer_does_not_do_is_one_line(field, value, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")) as error:
        check_train(TrainConfig(**{field: value}))
    assert "\n" not in str(error.value) and "train.framework: torch" in str(error.value)
    with pytest.raises(ConfigError, match="^--resume: a train.framework=keras run saves no resumable state"):
        check_train(TrainConfig(), resume=True)
    with pytest.raises(ConfigError, match="^--nproc 2: train.framework=keras trains on one process"):
        check_train(TrainConfig(), processes=2)


@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_a_gpu_the_backend_does_not_see_is_one_line(device, monkeypatch):
    from taa.keras.training import distributed

    monkeypatch.setattr(distributed, "gpu_count", lambda: 0)
    with pytest.raises(ConfigError, match=f"^train.device={device}: Keras's .* backend sees no GPUs here; "
                                          "use train.device=auto or cpu$"):
        check_train(TrainConfig(device=device))
    monkeypatch.setattr(distributed, "gpu_count", lambda: 4)
    check_train(TrainConfig(device=device))  # there: no refusal


def test_bfloat16_is_keras_mixed_precision_and_the_policy_comes_back():
    before = keras.config.dtype_policy().name
    parallel = setup_parallel(TrainConfig(dtype="bfloat16"))
    try:
        model = ensure_built(GPT(CONFIG))
        assert (model.compute_dtype, model.variable_dtype) == ("bfloat16", "float32")
        result = fit(model, batches(), train_config(steps=6, dtype="bfloat16", lr=1e-2), KERAS_LOSS, d_model=32,
                     progress=False)
        assert result.history[-1][1] < result.history[0][1]
    finally:
        parallel.close()
    assert keras.config.dtype_policy().name == before
    with pytest.raises(ValueError, match=r"^train.dtype=bfloat16: the model computes in float32; make it under "):
        Trainer(ensure_built(GPT(CONFIG)), TrainConfig(dtype="bfloat16"), KERAS_LOSS, batches(), d_model=32)
