"""Sentence pairs from Hugging Face ``datasets``: in memory, saved to disk, both layouts."""

import pytest

from taa.data.hf_datasets import pairs_from_hf_dataset
from taa.data.text import DataError

datasets = pytest.importorskip("datasets")

PAIRS = [("Ein Hund rennt.", "A dog runs."), ("Zwei Kinder spielen.", "Two children play.")]


def flat() -> "datasets.Dataset":
    return datasets.Dataset.from_dict({"de": [s for s, _ in PAIRS], "en": [t for _, t in PAIRS], "id": [7, 8]})


def nested() -> "datasets.Dataset":
    return datasets.Dataset.from_dict({"translation": [{"de": s, "en": t} for s, t in PAIRS]})


def test_flat_columns():
    assert pairs_from_hf_dataset(flat(), "de", "en") == PAIRS
    assert pairs_from_hf_dataset(flat(), "en", "de") == [(t, s) for s, t in PAIRS]


def test_translation_column_saved_to_disk(tmp_path):
    splits = datasets.DatasetDict({"train": nested(), "validation": nested().select([1])})
    splits.save_to_disk(str(tmp_path / "saved"))
    assert pairs_from_hf_dataset(tmp_path / "saved", "de", "en", split="train") == PAIRS
    assert pairs_from_hf_dataset(str(tmp_path / "saved"), "de", "en", split="validation") == PAIRS[1:]


def test_a_saved_single_dataset(tmp_path):
    flat().save_to_disk(str(tmp_path / "one"))
    assert pairs_from_hf_dataset(tmp_path / "one", "de", "en") == PAIRS


def test_dataset_dict_needs_a_split_unless_it_has_one():
    assert pairs_from_hf_dataset(datasets.DatasetDict({"train": flat()}), "de", "en") == PAIRS
    two = datasets.DatasetDict({"train": flat(), "test": flat()})
    with pytest.raises(DataError, match=r"a split is needed \(splits: test, train\)"):
        pairs_from_hf_dataset(two, "de", "en")
    with pytest.raises(DataError, match=r"no split 'val' \(splits: test, train\)"):
        pairs_from_hf_dataset(two, "de", "en", split="val")


def test_missing_fields_are_named():
    with pytest.raises(DataError, match=r"no column 'fr' \(columns: de, en, id\)"):
        pairs_from_hf_dataset(flat(), "de", "fr")
    with pytest.raises(DataError, match=r"translation has no 'fr' \(languages: de, en\)"):
        pairs_from_hf_dataset(nested(), "fr", "en")


def test_empty_and_non_text_values_are_named_with_their_row():
    blank = datasets.Dataset.from_dict({"de": ["Ja", " "], "en": ["Yes", "No"]})
    with pytest.raises(DataError, match=r"row 1: empty de"):
        pairs_from_hf_dataset(blank, "de", "en")
    with pytest.raises(DataError, match=r"row 0: id is int, not a string"):
        pairs_from_hf_dataset(flat(), "de", "id")


def test_missing_folder_and_wrong_type(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        pairs_from_hf_dataset(tmp_path / "absent", "de", "en")
    with pytest.raises(DataError, match="expected a datasets.Dataset"):
        pairs_from_hf_dataset({"de": ["Ja"], "en": ["Yes"]}, "de", "en")
