"""Sentence classification data: GLUE SST-2 and any TSV of ``sentence<TAB>label`` rows.

The Stanford Sentiment Treebank, binary version (Socher et al. 2013), as GLUE
ships it: ``train.tsv`` (67,349 rows) and ``dev.tsv`` (872 rows), UTF-8, a header
line ``sentence<TAB>label``, then one lower-cased, PTB-tokenized sentence and its
label (0 negative, 1 positive) a line. GLUE's test labels are hidden, so the dev
set is where accuracy is reported.

The folder is ``data.dir/sst2``, else ``$TAA_DATA/sst2``. A missing file, a wrong
header, a row without exactly two fields, an empty sentence or a label outside
``0..num_labels-1`` stops with one line naming the file and the line.

:func:`read_labelled_file` reads the looser files ``taa evaluate --data`` scores a
classifier on: ``sentence<TAB>label`` with or without the header, or ``label sentence``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from taa.data.multi30k import find_data_dir
from taa.data.text import DataError, decode_lines, open_input

SST2_FOLDER = "sst2"
SST2_SPLITS = {"train": "train.tsv", "dev": "dev.tsv"}
HEADER = ("sentence", "label")
LABEL_NAMES = ("negative", "positive")  # SST-2's labels 0 and 1


def sst2_path(split: str, data_dir: str | Path = "") -> Path:
    """``<data_dir or $TAA_DATA>/sst2/<split>.tsv``."""
    if split not in SST2_SPLITS:
        raise DataError(f"unknown SST-2 split {split!r} (known: {', '.join(SST2_SPLITS)})")
    folder = find_data_dir(data_dir or None)
    if folder is None:
        raise DataError(f"SST-2 not found: set data.dir or $TAA_DATA (a folder holding {SST2_FOLDER}/)")
    return folder / SST2_FOLDER / SST2_SPLITS[split]


def read_labelled_sentences(path: str | Path, num_labels: int = 2) -> list[tuple[str, int]]:
    """(sentence, label) rows of a ``sentence<TAB>label`` TSV with a header line.

    The sentence loses surrounding whitespace (GLUE leaves a space before the tab).
    """
    path = Path(path)
    rows: list[tuple[str, int]] = []
    for number, line in _lines(path):
        fields = line.split("\t")
        if number == 1:
            if tuple(f.strip() for f in fields) != HEADER:
                raise DataError(f"{path}, line 1: expected the header 'sentence<TAB>label', got {line[:60]!r}")
            continue
        if len(fields) != 2:
            raise DataError(f"{path}, line {number}: expected 2 tab-separated fields (sentence, label), "
                            f"got {len(fields)}")
        rows.append(_row(fields[0], fields[1], num_labels, (), f"{path}, line {number}"))
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    return rows


def read_labelled_file(path: str | Path, num_labels: int = 2, label_names: Sequence[str] = ()) -> list[tuple[str, int]]:
    """(sentence, label) rows of a file to score a classifier on, one row a line, either
    ``sentence<TAB>label`` (SST-2's header line first, or not) or ``label sentence`` (the
    label, a space, the sentence). A label is an id ``0..num_labels-1`` or one of
    ``label_names``. Blank lines are skipped; a bad line stops with the file and the line.
    """
    path = Path(path)
    rows: list[tuple[str, int]] = []
    for number, line in _lines(path):
        where = f"{path}, line {number}"
        if not line.strip() or (not rows and tuple(f.strip() for f in line.split("\t")) == HEADER):
            continue
        if "\t" in line:
            fields = line.split("\t")
            if len(fields) != 2:
                raise DataError(f"{where}: expected 'sentence<TAB>label' or 'label sentence', "
                                f"got {len(fields)} tab-separated fields")
            rows.append(_row(fields[0], fields[1], num_labels, label_names, where))
        else:
            label, _, sentence = line.strip().partition(" ")
            rows.append(_row(sentence, label, num_labels, label_names, where))
    if not rows:
        raise DataError(f"{path}: no labelled sentences")
    return rows


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) of a UTF-8 file; a line that is not text (bytes
    that are not UTF-8, a NUL) names the file and the line."""
    with open_input(path) as stream:  # missing, a folder, unreadable: one line naming it
        yield from enumerate(decode_lines(stream, str(path)), start=1)


def _row(sentence: str, label: str, num_labels: int, label_names: Sequence[str], where: str) -> tuple[str, int]:
    """One (sentence, label id) row; an empty sentence or an unknown label names ``where``."""
    sentence, label = sentence.strip(), label.strip()
    if not sentence:
        raise DataError(f"{where}: empty sentence")
    if label in label_names:
        return sentence, list(label_names).index(label)
    if not (label.isascii() and label.isdigit()) or int(label) >= num_labels:
        names = f" or {', '.join(label_names)}" if label_names else ""
        raise DataError(f"{where}: label {label!r} is not one of 0..{num_labels - 1}{names}")
    return sentence, int(label)
