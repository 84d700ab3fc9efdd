"""One run per folder: a second ``taa train`` into a folder a live run holds is refused at
once; the lock goes when the run ends (Ctrl-C too); a lock left by a dead process is
taken over with one warning."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.faults.conftest import COPY, ROOT, TINY, assert_one_line_error, cli, cli_process

QUIET = ("--tracking", "none", "--no-progress")
CHAR = ROOT / "recipes" / "gpt-shakespeare-char.yaml"


def write_lock(folder: Path, pid: int, host: str = "", **more) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "run.lock"
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                "started": datetime.now().astimezone().isoformat(), **more}))
    return lock


def finished_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                             check=True)
    return int(process.stdout)


def test_a_second_run_into_a_live_runs_folder_is_refused_and_ctrl_c_releases_it(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "taa", "train", COPY, *TINY, "--set", "train.steps=100000", "--out", str(out), *QUIET],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        lock = out / "run.lock"
        deadline = time.time() + 60
        while not (out / "state").is_dir() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)  # the first run is training once it has saved a state
        assert first.poll() is None, first.stderr.read().decode()
        holder = json.loads(lock.read_text())
        assert holder["pid"] == first.pid

        second = cli("train", COPY, *TINY, "--out", out, *QUIET)
        assert_one_line_error(second, f"{out}: another taa run (pid {first.pid}, started", max_lines=1)
        assert json.loads(lock.read_text()) == holder  # the first run still holds its folder
        assert not (out / "model.safetensors").exists()

        first.send_signal(signal.SIGINT)  # Ctrl-C
        first.wait(timeout=60)
        assert not lock.exists()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_warning(tmp_path):
    out = tmp_path / "run"
    write_lock(out, finished_pid())
    with pytest.warns(UserWarning, match="taking over the lock of a run that no longer runs"):
        result = cli("train", COPY, *TINY, "--out", out, *QUIET)
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file()
    assert not (out / "run.lock").exists()


def test_a_lock_whose_pid_now_names_another_process_is_stale(tmp_path):
    if not Path(f"/proc/{os.getpid()}/stat").is_file():
        pytest.skip("which process a pid names is read from Linux's /proc")
    out = tmp_path / "run"
    write_lock(out, os.getpid(), process="an-earlier-boot/1234")  # this pid, another process
    with pytest.warns(UserWarning, match="taking over the lock"):
        result = cli("train", COPY, *TINY, "--set", "train.steps=1", "--out", out, *QUIET)
    assert result.exit_code == 0, result.output


def test_a_lock_held_by_a_live_process_of_this_host_is_refused(tmp_path):
    out = tmp_path / "run"
    lock = write_lock(out, os.getpid())
    before = lock.read_text()
    result = cli("train", COPY, *TINY, "--out", out, *QUIET)
    assert_one_line_error(result, f"another taa run (pid {os.getpid()}", max_lines=1)
    assert lock.read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["run.lock"]


def test_a_lock_from_another_host_is_refused_naming_the_file_to_delete(tmp_path):
    out = tmp_path / "run"
    lock = write_lock(out, 1, host="elsewhere.example")
    result = cli("train", COPY, *TINY, "--out", out, *QUIET)
    assert_one_line_error(result, "a run on host elsewhere.example (pid 1", f"if it has ended, delete {lock}",
                          max_lines=1)
    assert lock.exists()


def test_the_lock_goes_when_a_run_ends_or_fails(tmp_path):
    out = tmp_path / "run"
    result = cli("train", COPY, *TINY, "--set", "train.steps=2", "--out", out, *QUIET)
    assert result.exit_code == 0, result.output
    assert not (out / "run.lock").exists()
    # a failure inside the locked part (the resumed recipe differs) releases it too
    result = cli("train", COPY, *TINY, "--resume", out, *QUIET)
    assert_one_line_error(result, "the recipe differs from the saved run's")
    assert not (out / "run.lock").exists()
    # a run that fails before writing anything (its data file is missing) leaves no folder behind
    missing = tmp_path / "missing.txt"
    result = cli("train", CHAR, "--set", f"data.file={missing}", "--out", tmp_path / "new", *QUIET)
    assert_one_line_error(result, str(missing))
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("age", [0, 3600])  # a lock being written; one whose owner died long ago
def test_a_lock_that_is_a_folder_is_one_line_and_stays(tmp_path, age):
    out = tmp_path / "run"
    lock = out / "run.lock"
    lock.mkdir(parents=True)
    os.utime(lock, (time.time() - age, time.time() - age))
    result = cli_process("train", COPY, *TINY, "--out", out, *QUIET, timeout=60)
    assert_one_line_error(result, f"{lock}: a folder, not a run's lock file", max_lines=1)
    assert [path.name for path in out.iterdir()] == ["run.lock"] and lock.is_dir()  # not moved aside


def test_convert_never_replaces_a_folder_a_live_run_holds(tmp_path):
    """``taa convert --overwrite`` into a folder a run is writing would delete the run's
    files under it: refused while the lock's owner lives (here, this test's process)."""
    from taa import folders
    from tests.checkpoints import language_model_run

    gpt = language_model_run(tmp_path / "gpt")
    out = tmp_path / "hf"
    assert cli("convert", "--to-hf", gpt, "--out", out).exit_code == 0
    before = sorted(path.name for path in out.iterdir())
    with folders.run_folder_lock(out):
        result = cli("convert", "--to-hf", gpt, "--out", out, "--overwrite")
        assert_one_line_error(result, f"{out}: another taa run (pid {os.getpid()}", "is writing this folder",
                              max_lines=1)
        assert sorted(path.name for path in out.iterdir()) == sorted([*before, "run.lock"])
    assert cli("convert", "--to-hf", gpt, "--out", out, "--overwrite").exit_code == 0  # released: it may
