"""Shared by the tests that kill a training run and resume it."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from safetensors.torch import load_file


def run_and_sigkill(command: list[str], run_folder: Path, after_step: int, timeout: float = 120.0) -> int:
    """Start a training command, SIGKILL it once its saved state reaches ``after_step``; the step it saved."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run_folder / "state" / "trainer.json"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        try:
            if json.loads(state.read_text())["trainer"]["step"] >= after_step:
                break
        except (FileNotFoundError, json.JSONDecodeError, KeyError):  # not written yet, or mid-swap
            pass
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run_folder / "model.safetensors").exists(), "a killed run must not have final weights"
    return json.loads((run_folder / "state" / "trainer.json").read_text())["trainer"]["step"]


def assert_same_weights(expected_file: Path, actual_file: Path) -> None:
    """Two safetensors files hold the same tensors, bit for bit."""
    expected, actual = load_file(str(expected_file)), load_file(str(actual_file))
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


class StepRecorder:
    """A tracker that remembers the steps the trainer logged ``train_loss`` at."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def log_params(self, params) -> None:
        pass

    def log_metrics(self, metrics, step: int) -> None:
        if "train_loss" in metrics:
            self.steps.append(step)

    def log_artifact(self, path, folder=None) -> None:
        pass


def assert_resume_continues(run, recipe, folder: Path, whole: Path, half_steps: int) -> None:
    """Train ``recipe`` for ``half_steps`` into ``folder``, resume it to ``recipe.train.steps``,
    and check the resumed part trained only the remaining steps and ended with the weights of
    the uninterrupted run in ``whole`` (which used ``log_every: 1``)."""
    import dataclasses

    first = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, steps=half_steps))
    run(first, out=folder, progress=False)
    recorder = StepRecorder()
    run(recipe, out=folder, progress=False, resume=folder, tracker=recorder)
    assert recorder.steps == list(range(half_steps + 1, recipe.train.steps + 1)), recorder.steps
    assert_same_weights(whole / "model.safetensors", folder / "model.safetensors")


def assert_optimizers_agree(ours, optimizer, reference, reference_optimizer, x: torch.Tensor, steps: int) -> None:
    """``steps`` steps of the loss mean(model(x)^2) on two models that start equal: their
    weights stay equal to float32 rounding."""
    for _ in range(steps):
        for model, opt in ((ours, optimizer), (reference, reference_optimizer)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for (name, a), (_, b) in zip(ours.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
