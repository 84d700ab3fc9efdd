"""taa.flax.training.loop: the Flax trainer follows the torch trainer's recipe.

Parity: a few steps of both trainers on the same weights and batches give the same losses,
rates and weights. Then what the run does besides: validation, best weights and their
average, early stopping, the time budget, non-finite steps (stop and skip), bfloat16, the
compilations, one-line refusals.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from taa import config as cfg
from taa import folders
from taa.config import ConfigError, TrainConfig
from taa.flax.models.gpt import GPT
from taa.flax.training import Trainer, check_train, fit, label_smoothed_cross_entropy
from taa.flax.training.checkpoint import load_weights_file
from taa.flax.weights import load_state_dict, state_dict
from taa.tasks.language_model import LanguageModelBatch, LanguageModelBatches, language_model_loss
from taa.torch.models.gpt import GPT as TorchGPT
from taa.torch.training import fit as torch_fit
from taa.training.divergence import DivergenceError

CONFIG = cfg.preset("gpt-tiny", n_layers=1, max_length=16)
TOKENS = np.tile(np.random.default_rng(0).permutation(64), 50)  # each token has one successor: learnable fast
FLAX_LOSS = language_model_loss(0.0, label_smoothed_cross_entropy)


def batches(seed: int = 0, batch_size: int = 4, block: int = 8) -> LanguageModelBatches:
    return LanguageModelBatches(TOKENS, block, batch_size, seed)


def twins(config=CONFIG):
    """A Flax GPT and its torch twin on the same weights."""
    torch.manual_seed(0)
    reference = TorchGPT(config)
    model = GPT(config, rngs=nnx.Rngs(0))
    load_state_dict(model, {k: v.detach().numpy().copy() for k, v in reference.state_dict().items()})  # no aliasing
    return model, reference


def train_config(**fields) -> TrainConfig:
    return TrainConfig(**{"steps": 4, "batch_size": 4, "lr": 3e-3, "schedule": "cosine", "warmup_steps": 2,
                          "log_every": 1, **fields})


def flax_fit(model, stream, train: TrainConfig, compute_loss=FLAX_LOSS, **options):
    return Trainer(model, train, compute_loss, stream, d_model=32, progress=False, **options).fit()


@pytest.mark.parametrize("optimizer", [
    dict(optimizer="muon", weight_decay=0.1, grad_clip=0.05, label_smoothing=0.1),
    dict(optimizer="adam", weight_decay=0.1, grad_clip=0.0, adam_beta2=0.99),
    dict(optimizer="adam", grad_accumulation=2, grad_clip=0.5, schedule="constant"),
])
def test_steps_equal_the_torch_trainers(optimizer):
    """Schedule, clipping, smoothing, Muon, AdamW with decoupled decay, gradient
    accumulation: the same losses, rates and weights after four steps, compiled once.
    Adam's epsilon is above the rounding noise of the gradients whose true value is 0 (a key
    projection's bias), or Adam's first steps, about lr * sign(noise), would differ there."""
    model, reference = twins()
    train = train_config(adam_eps=1e-6, **optimizer)
    smoothing = train.label_smoothing
    expected = torch_fit(reference, batches(), train, language_model_loss(smoothing), d_model=32, progress=False)
    result = fit(model, batches(), train, language_model_loss(smoothing, label_smoothed_cross_entropy), d_model=32,
                 progress=False)
    assert result.steps == expected.steps == 4 and result.compiles == 1
    for (step, loss, lr), (step_t, loss_t, lr_t) in zip(result.history, expected.history, strict=True):
        assert step == step_t and loss == pytest.approx(loss_t, abs=1e-5) and lr == pytest.approx(lr_t, rel=1e-6)
    ours = state_dict(model)
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(ours[name], value.numpy(), atol=1e-5, rtol=0, err_msg=name)


def test_validation_keeps_the_best_weights_and_averages_them(tmp_path):
    model = GPT(CONFIG, rngs=nnx.Rngs(0))
    losses = iter([3.0, 1.0, 2.0, 5.0])
    kept = {}

    def evaluate(m):
        value = next(losses)
        kept[value] = state_dict(m)
        return {"val_loss": value}

    train = train_config(eval_every=1, keep_best=2, average_best=True)
    trainer = Trainer(model, train, FLAX_LOSS, batches(), d_model=32, evaluate=evaluate, out=tmp_path, progress=False)
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
    model = GPT(CONFIG, rngs=nnx.Rngs(0))
    stalled = flax_fit(model, batches(), train_config(steps=10, eval_every=1, early_stopping=2),
                       evaluate=lambda m: {"val_loss": 1.0})
    assert stalled.stop_reason == "early_stopping" and stalled.steps == 3
    budget = flax_fit(model, batches(), train_config(steps=1000, max_minutes=1e-4))
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
    import taa.flax.training.loop as loop

    monkeypatch.setattr(loop, "time", Clock(1.5))  # 1.5 s a step: the clock runs 2.5 times faster than the steps
    train = train_config(steps=100, max_minutes=1.0, schedule="cosine", warmup_steps=0, log_every=5)
    trainer = Trainer(GPT(CONFIG, rngs=nnx.Rngs(0)), train, FLAX_LOSS, batches(), d_model=32, progress=False)
    result = trainer.fit()
    assert result.stop_reason == "time_budget" and result.steps == 40  # 60 s
    # step 40 starts at 58.5 s: position 97, as torch's Trainer.learning_rate computes it
    assert result.history[-1][2] == pytest.approx(train.lr * trainer.schedule(97), rel=1e-6)


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
    loss, count = label_smoothed_cross_entropy(model(batch["inputs"]), batch["targets"])
    return loss + jnp.sum(batch["poison"]), count


def test_a_step_that_is_not_finite_stops_the_run_with_the_weights_before_it():
    train = train_config(steps=6, schedule="constant", warmup_steps=0)
    model = GPT(CONFIG, rngs=nnx.Rngs(0))
    start = state_dict(model)
    trainer = Trainer(model, train, poisoned_loss, Poisoned({2}), d_model=32, progress=False)
    with pytest.raises(DivergenceError, match=r"^training diverged at step 2: the loss is nan \(lr [0-9.e-]+\); "
                                              r"lower train.lr or set train.nonfinite: skip$"):
        trainer.fit()
    assert trainer.state.step == 1
    one_step = GPT(CONFIG, rngs=nnx.Rngs(0))
    flax_fit(one_step, Poisoned(set()), dataclasses.replace(train, steps=1), poisoned_loss)
    ours, expected = state_dict(model), state_dict(one_step)
    assert any(not np.array_equal(ours[name], start[name]) for name in start)  # step 1 was applied, not step 2
    for name in start:
        np.testing.assert_array_equal(ours[name], expected[name], err_msg=name)


def test_skipped_steps_change_nothing_and_lower_the_rate():
    train = train_config(steps=4, nonfinite="skip", skip_lr_factor=0.5, schedule="constant", warmup_steps=0)
    result = flax_fit(GPT(CONFIG, rngs=nnx.Rngs(0)), Poisoned({1, 3}), train, poisoned_loss)
    assert result.skipped_steps == [1, 3] and result.steps == 4
    # a step's rate is set before it fails; each skip halves the rate of the steps after it (as torch's trainer)
    assert [lr for _, _, lr in result.history] == pytest.approx([3e-3, 3e-3 * 0.5, 3e-3 * 0.5, 3e-3 * 0.25])
    assert [loss is None for _, loss, _ in result.history] == [True, False, True, False]
    untouched = GPT(CONFIG, rngs=nnx.Rngs(0))
    start = state_dict(untouched)
    trainer = Trainer(untouched, dataclasses.replace(train, steps=1), poisoned_loss, Poisoned({1}), d_model=32,
                      progress=False)
    trainer.fit()
    for name, value in state_dict(untouched).items():
        np.testing.assert_array_equal(value, start[name], err_msg=name)
    assert int(trainer.step.opt_state.count) == 0  # nor the optimizer's state
    spent = dataclasses.replace(train, max_skipped_steps=1)
    with pytest.raises(DivergenceError, match=r"^training diverged at step 3: the loss is nan .*1 step skipped "
                                              r"already \(train.max_skipped_steps=1\)"):
        flax_fit(GPT(CONFIG, rngs=nnx.Rngs(0)), Poisoned({1, 3}), spent, poisoned_loss)


def test_bfloat16_computes_in_bfloat16_with_float32_weights():
    """Mixed precision: the first step's loss near float32's, the weights float32, the loss falling."""
    results = {}
    for dtype in ("float32", "bfloat16"):
        model = GPT(CONFIG, rngs=nnx.Rngs(0))
        results[dtype] = flax_fit(model, batches(), train_config(steps=6, dtype=dtype, lr=1e-2))
        assert {value.dtype for value in state_dict(model).values()} == {np.dtype(np.float32)}
    first32, first16 = results["float32"].history[0][1], results["bfloat16"].history[0][1]
    assert first16 != first32 and first16 == pytest.approx(first32, rel=2e-2)
    assert results["bfloat16"].history[-1][1] < first16


class Lengths:
    """Language-model batches whose length cycles through ``blocks``."""

    def __init__(self, blocks: list[int]) -> None:
        self.blocks, self.count = blocks, 0

    def __next__(self) -> LanguageModelBatch:
        block = self.blocks[self.count % len(self.blocks)]
        self.count += 1
        tokens = torch.from_numpy(TOKENS[self.count: self.count + 4 * (block + 1)].reshape(4, block + 1))
        return LanguageModelBatch(inputs=tokens[:, :-1], targets=tokens[:, 1:])


def test_the_step_compiles_once_per_shape_of_its_batches():
    trainer = Trainer(GPT(CONFIG, rngs=nnx.Rngs(0)), train_config(steps=6), FLAX_LOSS, Lengths([8, 12]), d_model=32,
                      progress=False)
    assert trainer.fit().compiles == trainer.compiles == 2


@pytest.mark.parametrize("field, value, message", [
    ("layer_lr_decay", 0.8, "train.layer_lr_decay=0.8: the Flax trainer has one rate for every layer"),
    ("device", "mps", "train.device='mps': the Flax trainer runs on auto, cpu, cuda or cuda:N"),
])
def test_what_the_flax_trainer_does_not_do_is_one_line(field, value, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")) as error:
        check_train(TrainConfig(**{field: value}))
    assert "\n" not in str(error.value) and "train.framework: torch" in str(error.value)
    with pytest.raises(ConfigError, match="^--nproc 2: train.framework=flax trains on one process"):
        check_train(TrainConfig(), processes=2)
    check_train(TrainConfig(grad_accumulation=2, checkpoint_every=5, threads=1), resume=True)  # what it does
