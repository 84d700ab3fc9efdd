"""Sentence classification data: GLUE SST-2 and any TSV of ``sentence<TAB>label`` rows.

The Stanford Sentiment Treebank, binary version (Socher et al. 2013), as GLUE
ships it: ``train.tsv`` (67,349 rows) and ``dev.tsv`` (872 rows), UTF-8, a header
line ``sentence<TAB>label``, then one lower-cased, PTB-tokenized sentence and its
label (0 negative, 1 positive) a line. GLUE's test labels are hidden, so the dev
set is where accuracy is reported.

The folder is ``data.dir/sst2``, else ``$TAA_DATA/sst2``. A missing file, a wrong
header, a row without exactly two fields, an empty sentence or a label outside
``0..num_labels-1`` stops with one line naming the file and the line.
"""

from __future__ import annotations

from pathlib import Path

from taa.data.multi30k import find_data_dir
from taa.data.text import DataError

SST2_FOLDER = "sst2"
SST2_SPLITS = {"train": "train.tsv", "dev": "dev.tsv"}
HEADER = ("sentence", "label")


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
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows: list[tuple[str, int]] = []
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                line = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
            except UnicodeDecodeError as error:
                raise DataError(f"{path}, line {number}: invalid UTF-8 at byte {error.start} ({error.reason})") from None
            fields = line.split("\t")
            if number == 1:
                if tuple(f.strip() for f in fields) != HEADER:
                    raise DataError(f"{path}, line 1: expected the header 'sentence<TAB>label', got {line[:60]!r}")
                continue
            if len(fields) != 2:
                raise DataError(f"{path}, line {number}: expected 2 tab-separated fields (sentence, label), "
                                f"got {len(fields)}")
            sentence, label = fields[0].strip(), fields[1].strip()
            if not sentence:
                raise DataError(f"{path}, line {number}: empty sentence")
            if not (label.isascii() and label.isdigit()) or int(label) >= num_labels:
                raise DataError(f"{path}, line {number}: label {label!r} is not one of 0..{num_labels - 1}")
            rows.append((sentence, int(label)))
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    return rows
