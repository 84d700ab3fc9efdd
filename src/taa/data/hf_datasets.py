"""Sentence pairs from a Hugging Face ``datasets`` dataset (optional dependency).

Two layouts are common for translation data, and both are read:

- flat columns, one per language: ``{"de": "Ein Hund ...", "en": "A dog ..."}``;
- one ``translation`` column of dicts, as in ``wmt14`` or ``bentrevett/multi30k``
  style datasets: ``{"translation": {"de": "Ein Hund ...", "en": "A dog ..."}}``.

``datasets`` is imported only when a function here runs, so ``import taa.data``
stays cheap and works without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from taa.data.text import DataError

TRANSLATION_COLUMN = "translation"


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError("reading a Hugging Face dataset needs `datasets`: pip install 'taa[hf]'") from None
    return datasets


def _select_split(dataset: Any, split: Optional[str], name: str) -> Any:
    """The ``Dataset`` to read: ``dataset[split]`` for a ``DatasetDict`` (or its only split)."""
    datasets = _import_datasets()
    if isinstance(dataset, datasets.DatasetDict):
        splits = sorted(dataset)
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in dataset:
            wanted = "a split is needed" if split is None else f"no split {split!r}"
            raise DataError(f"{name}: {wanted} (splits: {', '.join(splits)})")
        return dataset[split]
    if isinstance(dataset, datasets.Dataset):
        if split is not None and dataset.split is not None and str(dataset.split) != split:
            raise DataError(f"{name}: this dataset is split {dataset.split!r}, not {split!r}")
        return dataset
    raise DataError(f"{name}: expected a datasets.Dataset, a DatasetDict or a save_to_disk folder")


def _columns(dataset: Any, source_field: str, target_field: str, name: str) -> tuple[list[Any], list[Any]]:
    """The source and target values, from flat columns or from the ``translation`` column."""
    columns = dataset.column_names
    if source_field in columns and target_field in columns:
        return list(dataset[source_field]), list(dataset[target_field])
    if TRANSLATION_COLUMN in columns:
        languages = getattr(dataset.features[TRANSLATION_COLUMN], "languages", None) or list(
            dataset.features[TRANSLATION_COLUMN]
        )
        missing = [f for f in (source_field, target_field) if f not in languages]
        if missing:
            raise DataError(
                f"{name}: {TRANSLATION_COLUMN} has no {', '.join(map(repr, missing))} "
                f"(languages: {', '.join(languages)})"
            )
        rows = list(dataset[TRANSLATION_COLUMN])
        return [row[source_field] for row in rows], [row[target_field] for row in rows]
    missing = [f for f in (source_field, target_field) if f not in columns]
    raise DataError(f"{name}: no column {', '.join(map(repr, missing))} (columns: {', '.join(columns)})")


def pairs_from_hf_dataset(
    dataset_or_path: Any, source_field: str, target_field: str, split: Optional[str] = None
) -> list[tuple[str, str]]:
    """(source, target) pairs from a ``Dataset``, a ``DatasetDict`` or a ``save_to_disk`` folder.

    ``source_field``/``target_field`` name two columns, or two languages of a
    ``translation`` column. Every value must be a non-empty string, as for text
    files; row numbers in errors count from 0, as ``dataset[i]`` does.
    """
    datasets = _import_datasets()
    if isinstance(dataset_or_path, (str, Path)):
        name = str(dataset_or_path)
        if not Path(dataset_or_path).is_dir():
            raise DataError(f"{name}: no such folder")
        dataset_or_path = datasets.load_from_disk(name)
    else:
        name = type(dataset_or_path).__name__
    dataset = _select_split(dataset_or_path, split, name)
    sources, targets = _columns(dataset, source_field, target_field, name)
    for field, values in ((source_field, sources), (target_field, targets)):
        for row, value in enumerate(values):
            if not isinstance(value, str):
                raise DataError(f"{name}, row {row}: {field} is {type(value).__name__}, not a string")
            if not value.strip():
                raise DataError(f"{name}, row {row}: empty {field}")
    return list(zip(sources, targets))
