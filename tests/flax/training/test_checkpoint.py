"""taa.flax.training.checkpoint and the Flax trainer's resumable state: a run stopped and
resumed ends with the weights of a run never stopped; its files load in torch; a damaged
state is one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file, save_file

from taa import config as cfg
from taa import folders
from taa.config import TrainConfig
from taa.flax.models.gpt import GPT
from taa.flax.training import Trainer, label_smoothed_cross_entropy
from taa.flax.training.checkpoint import load_weights_file
from taa.flax.weights import state_dict
from taa.folders import CheckpointError
from taa.tasks.language_model import LanguageModelBatches, language_model_loss
from taa.torch.models.gpt import GPT as TorchGPT
from taa.torch.training import checkpoint as torch_ckpt

CONFIG = cfg.preset("gpt-tiny", n_layers=1, max_length=16, dropout=0.1)  # dropout: the random streams must resume
TOKENS = np.tile(np.random.default_rng(0).permutation(64), 50)
LOSS = language_model_loss(0.0, label_smoothed_cross_entropy)
TRAIN = TrainConfig(steps=6, batch_size=4, lr=3e-3, schedule="cosine", warmup_steps=2, log_every=1,
                    checkpoint_every=3, optimizer="muon", weight_decay=0.1)


class Stopped(Exception):
    """The run was stopped (a kill, a preemption) before it read a batch."""


class Stopping:
    """The batch stream, stopping the run when it is asked for batch ``last + 1``."""

    def __init__(self, inner: LanguageModelBatches, last: int) -> None:
        self.inner, self.last, self.count = inner, last, 0

    def __next__(self):
        self.count += 1
        if self.count > self.last:
            raise Stopped
        return next(self.inner)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state) -> None:
        self.inner.load_state_dict(state)


def batches() -> LanguageModelBatches:
    return LanguageModelBatches(TOKENS, 8, 4, seed=0)


def trainer(model, stream, out) -> Trainer:
    return Trainer(model, TRAIN, LOSS, stream, d_model=32, out=out, progress=False)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A run of six steps never stopped: (its folder, its result, its final weights)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    model = GPT(CONFIG, rngs=nnx.Rngs(0))
    result = trainer(model, batches(), out).fit()
    return out, result, state_dict(model)


def test_a_run_stopped_and_resumed_ends_with_the_same_weights(uninterrupted, tmp_path):
    _, expected, weights = uninterrupted
    stopped = trainer(GPT(CONFIG, rngs=nnx.Rngs(0)), Stopping(batches(), last=4), tmp_path)
    with pytest.raises(Stopped):  # during step 5: the state of step 3 is the last saved
        stopped.fit()
    model = GPT(CONFIG, rngs=nnx.Rngs(7))  # other weights and dropout streams: the state brings its own
    resumed = trainer(model, batches(), tmp_path)
    resumed.load_state(tmp_path / folders.STATE)
    assert resumed.state.step == 3
    result = resumed.fit()
    assert result.steps == 6 and result.history == expected.history
    for name, value in state_dict(model).items():
        np.testing.assert_array_equal(value, weights[name], err_msg=name)


def test_the_run_folders_weights_load_in_torch_and_torchs_in_flax(uninterrupted, tmp_path):
    out, _, weights = uninterrupted
    reference = torch_ckpt.load_weights_file(TorchGPT(CONFIG), out / folders.STATE / folders.WEIGHTS)
    for name, value in reference.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), weights[name], err_msg=name)
    torch.manual_seed(1)
    other = TorchGPT(CONFIG)
    torch_ckpt.save_weights(other, tmp_path / "torch.safetensors")  # the tied weight once, under torch's name
    model = load_weights_file(GPT(CONFIG, rngs=nnx.Rngs(0)), tmp_path / "torch.safetensors")
    ids = np.random.default_rng(0).integers(0, 64, (2, 7))
    with torch.no_grad():
        expected = other.eval()(torch.from_numpy(ids)).numpy()
    model.eval()
    np.testing.assert_allclose(np.asarray(model(ids)), expected, atol=1e-5, rtol=0)


def _damaged(uninterrupted, tmp_path, damage) -> str:
    """The message of loading the uninterrupted run's state, copied and damaged by ``damage(folder)``."""
    state = tmp_path / "run" / folders.STATE
    shutil.copytree(uninterrupted[0] / folders.STATE, state)
    damage(state)
    with pytest.raises(CheckpointError) as error:
        trainer(GPT(CONFIG, rngs=nnx.Rngs(0)), batches(), tmp_path / "run").load_state(state)
    return str(error.value)


def test_a_changed_optimizer_setting_is_one_line(uninterrupted, tmp_path):
    def change(state):
        path = state / folders.OPTIMIZER_SETTINGS
        saved = json.loads(path.read_text())
        saved["settings"]["adam_beta2"] = 0.5
        path.write_text(json.dumps(saved))

    message = _damaged(uninterrupted, tmp_path, change)
    assert message.endswith("optimizer.json: settings.adam_beta2=0.5, the recipe's optimizer has 0.98; "
                            "the state is damaged")


def test_a_missing_optimizer_array_or_random_stream_is_one_line(uninterrupted, tmp_path):
    def drop_first(name: str):
        def damage(state):
            arrays = load_file(state / name)
            arrays.pop(sorted(arrays)[0])
            save_file(arrays, state / name)
        return damage

    message = _damaged(uninterrupted, tmp_path, drop_first(folders.OPTIMIZER_TENSORS))
    assert "optimizer.safetensors: no " in message and message.endswith("; the state is damaged")
    message = _damaged(uninterrupted, tmp_path / "again", drop_first(folders.RANDOM_STATE))
    assert "rng.safetensors: no " in message and "random stream" in message


def test_a_best_weights_file_the_state_lists_must_be_there(uninterrupted, tmp_path):
    def list_a_best(state):
        path = state / folders.TRAINER_STATE
        saved = json.loads(path.read_text())
        saved["trainer"]["best"] = [[1.5, 3]]
        path.write_text(json.dumps(saved))

    message = _damaged(uninterrupted, tmp_path, list_a_best)
    assert "best/step-3.safetensors: no such file, though the state in" in message
