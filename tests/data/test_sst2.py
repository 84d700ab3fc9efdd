"""Sentence-label TSVs (GLUE SST-2): exact rows, and one line naming file and line for each bad one."""

import os
from pathlib import Path

import pytest

from taa.data.sst2 import read_labelled_sentences, sst2_path
from taa.data.text import DataError


def test_rows_are_sentence_and_integer_label(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\nhide new secretions from the parental units \t0\ncharming and moving \t1\n")
    assert read_labelled_sentences(path) == [
        ("hide new secretions from the parental units", 0), ("charming and moving", 1)]


@pytest.mark.parametrize("content, message", [
    ("text\tlabel\na\t1\n", "line 1: expected the header 'sentence<TAB>label'"),
    ("sentence\tlabel\ngood\t1\nbad\t2\n", "line 3: label '2' is not one of 0..1"),
    ("sentence\tlabel\ngood\tpositive\n", "line 2: label 'positive' is not one of 0..1"),
    ("sentence\tlabel\ngood\t1\na\tb\t1\n", "line 3: expected 2 tab-separated fields (sentence, label), got 3"),
    ("sentence\tlabel\ngood 1\n", "line 2: expected 2 tab-separated fields (sentence, label), got 1"),
    ("sentence\tlabel\n \t1\n", "line 2: empty sentence"),
    ("sentence\tlabel\n", "no rows after the header"),
])
def test_bad_rows_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(DataError) as error:
        read_labelled_sentences(path)
    assert str(error.value).startswith(f"{path}") and message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_file_and_more_labels(tmp_path):
    with pytest.raises(DataError, match=r"nope.tsv: no such file$"):
        read_labelled_sentences(tmp_path / "nope.tsv")
    path = tmp_path / "three.tsv"
    path.write_text("sentence\tlabel\nmeh\t2\n")
    assert read_labelled_sentences(path, num_labels=3) == [("meh", 2)]


def test_paths_come_from_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TAA_DATA", str(tmp_path))
    assert sst2_path("dev") == tmp_path / "sst2" / "dev.tsv"
    assert sst2_path("train", "elsewhere") == Path("elsewhere") / "sst2" / "train.tsv"
    with pytest.raises(DataError, match="unknown SST-2 split 'test'"):
        sst2_path("test")


def test_the_real_files_have_glues_counts():
    folder = Path(os.environ.get("TAA_DATA", "/work/shared/data"))
    if not (folder / "sst2" / "dev.tsv").is_file():
        pytest.skip(f"SST-2 not found under {folder} (set TAA_DATA)")
    dev = read_labelled_sentences(sst2_path("dev", folder))
    assert len(dev) == 872 and sum(label for _, label in dev) == 444
    train = read_labelled_sentences(sst2_path("train", folder))
    assert len(train) == 67349 and sum(label for _, label in train) == 37569
