"""Every command that writes checks where before any work: an ``--out`` that is a file, lies
inside a file or cannot be written is one line naming it, and nothing was read or trained
(the checkpoint each command is given does not even exist: its error would come first)."""

import os

import pytest

from tests.faults.conftest import COPY, TINY, assert_one_line_error, cli


def train(out):
    return cli("train", COPY, *TINY, "--out", out, "--tracking", "none", "--no-progress")


def convert(out):
    return cli("convert", "--to-hf", "no-such-run", "--out", out)


def viz_attention(out):
    return cli("viz", "attention", "--checkpoint", "no-such-run", "--out", out, "a sentence")


COMMANDS = [train, convert, viz_attention]


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me\n")
    return path


@pytest.mark.parametrize("command", [train, convert])
def test_an_out_folder_that_is_a_file(command, a_file):
    result = command(a_file)
    assert_one_line_error(result, f"--out {a_file}: {a_file} is a file, not a folder", max_lines=1)
    assert a_file.read_text() == "keep me\n"


def test_a_plot_that_is_a_folder(tmp_path):
    result = viz_attention(tmp_path)
    assert_one_line_error(result, f"--out {tmp_path}: {tmp_path} is a folder, not a file", max_lines=1)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_out_inside_a_file(command, a_file):
    out = a_file / "sub" / "out.png"
    result = command(out)
    assert_one_line_error(result, f"--out {out}: {a_file} is a file, not a folder", max_lines=1)
    assert a_file.read_text() == "keep me\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_an_out_in_a_read_only_folder(command, tmp_path):
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        try:
            (locked / "probe").touch()
        except PermissionError:
            pass
        else:
            assert os.geteuid() == 0, "a folder of mode 0500 took a file"
            pytest.skip("running as root: chmod 0500 does not stop root from writing")
        result = command(locked / "run")
        assert_one_line_error(result, f"cannot write in {locked} (Permission denied)", max_lines=1)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_viz_never_writes_over_a_file_that_is_not_a_picture(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    result = viz_attention(weights)
    assert_one_line_error(result, "give a name ending in .png", max_lines=1)
    assert weights.read_bytes() == b"weights"


@pytest.mark.parametrize("command", COMMANDS)
def test_an_empty_out_is_refused_and_the_working_folder_is_untouched(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = command("")
    assert_one_line_error(result, "Error: --out is empty: name the folder or file to write (. for the working "
                                  "folder)", max_lines=1)
    assert list(tmp_path.iterdir()) == []
