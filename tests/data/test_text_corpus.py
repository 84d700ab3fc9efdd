"""Running text for language models: where the file comes from, nanoGPT's split, resumable windows."""

import numpy as np
import pytest

from taa.data.text import DataError
from taa.data.text_corpus import (
    TINY_SHAKESPEARE,
    WindowSampler,
    every_window,
    find_text_file,
    fixed_windows,
    random_windows,
    read_text,
    split_text,
)


def test_the_file_is_explicit_else_in_the_data_folder_else_under_taa_data(tmp_path, monkeypatch):
    monkeypatch.setenv("TAA_DATA", str(tmp_path / "env"))
    assert find_text_file("some.txt", "folder") == tmp_path.joinpath("some.txt").relative_to(tmp_path)
    assert find_text_file("", tmp_path / "folder") == tmp_path / "folder" / TINY_SHAKESPEARE
    assert find_text_file() == tmp_path / "env" / "tinyshakespeare" / "input.txt"
    monkeypatch.delenv("TAA_DATA")
    with pytest.raises(DataError, match=r"set data.file, data.dir or \$TAA_DATA"):
        find_text_file()


def test_read_text_is_exact_and_errors_name_the_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("Thou art\r\nmine.\n\n".encode())
    assert read_text(path) == "Thou art\r\nmine.\n\n"
    with pytest.raises(DataError, match=r"nope.txt: no such file$"):
        read_text(tmp_path / "nope.txt")
    path.write_bytes(b"line one\nline \xff two\n")
    with pytest.raises(DataError, match=r"a.txt, line 2: invalid UTF-8"):
        read_text(path)
    path.write_bytes(b" \n\n")
    with pytest.raises(DataError, match="holds no text"):
        read_text(path)


def test_split_is_nanogpts_first_ninety_percent_of_the_characters():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    train, val = split_text(text)
    assert train == text[:900] and val == text[900:]
    with pytest.raises(ValueError):
        split_text(text, 1.0)


def test_windows_are_contiguous_slices():
    tokens = np.arange(100, dtype=np.int64)
    windows = random_windows(tokens, 9, 50, np.random.default_rng(0))  # (50, 9)
    assert windows.shape == (50, 9)
    assert (np.diff(windows, axis=1) == 1).all()  # contiguous
    assert windows.min() >= 0 and windows.max() <= 99
    starts = random_windows(tokens, 100, 3, np.random.default_rng(0))
    assert (starts == tokens).all()  # one possible window: the whole text
    with pytest.raises(DataError, match="fewer than one window of 101"):
        random_windows(tokens, 101, 1, np.random.default_rng(0))


def test_sampler_covers_every_offset_uniformly():
    tokens = np.arange(20, dtype=np.int64)
    sampler = WindowSampler(tokens, 5, batch_size=1000, seed=0)
    starts = np.concatenate([next(sampler)[:, 0] for _ in range(16)])  # 16000 draws of 16 offsets
    counts = np.bincount(starts, minlength=16)
    assert len(counts) == 16 and counts.min() > 850 and counts.max() < 1150  # expected 1000, sd ~30


def test_sampler_resumes_at_the_same_batch_and_validation_is_fixed():
    tokens = np.arange(1000, dtype=np.int64)
    sampler = WindowSampler(tokens, 17, 4, seed=3)
    for _ in range(5):
        next(sampler)
    saved = sampler.state_dict()
    expected = [next(sampler) for _ in range(5)]
    again = WindowSampler(tokens, 17, 4, seed=3)
    again.load_state_dict(saved)
    for a, b in zip(expected, (next(again) for _ in range(5))):
        np.testing.assert_array_equal(a, b)
    other_seed = WindowSampler(tokens, 17, 4, seed=4)
    assert not np.array_equal(next(other_seed), next(WindowSampler(tokens, 17, 4, seed=3)))
    first, second = fixed_windows(tokens, 17, 3, 4, seed=3), fixed_windows(tokens, 17, 3, 4, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], next(WindowSampler(tokens, 17, 4, seed=3)))  # not training's batches


def test_every_window_predicts_each_token_after_the_first_once():
    tokens = np.arange(40, dtype=np.int64)
    batches = every_window(tokens, length=9, batch_size=2)  # windows of 9: 8 inputs, 8 targets
    windows = np.concatenate(batches)
    assert [len(b) for b in batches] == [2, 2] and windows.shape == (4, 9)
    assert all(np.array_equal(w, np.arange(w[0], w[0] + 9)) for w in windows)  # contiguous text
    targets = windows[:, 1:].ravel()
    np.testing.assert_array_equal(targets, np.arange(1, 33))  # tokens 1..32 once each; the tail (33..39) is left out
