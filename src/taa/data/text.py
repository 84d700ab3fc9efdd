"""Reading text corpora: one sentence a line, plain or gzip, UTF-8.

A parallel corpus is two files where line i of one translates line i of the other
(Multi30k, WMT). Anything that would silently misalign or corrupt it stops here
with one line naming the file and the line: a missing file, an empty file, files of
different lengths, an empty line, bytes that are not UTF-8, a NUL byte (binary data).
Standard input is read by the same rules. Reading never writes anything.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from taa.training.progress import counted


class DataError(ValueError):
    """Data that cannot be used as it is; the message names the file (and line)."""


def open_input(path: str | Path) -> BinaryIO:
    """Open an input file for reading bytes; one :class:`DataError` naming it when it is
    missing, a folder, or cannot be read (no permission): every reader of text opens here."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a folder, not a file")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        return open(path, "rb")
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from None


def _open_binary(path: Path) -> BinaryIO:
    """Open ``path`` for reading bytes (:func:`open_input`), decompressing when its name ends in ``.gz``."""
    stream = open_input(path)
    if path.suffix == ".gz":  # (a GzipFile would leave a stream it was given open: it opens its own)
        stream.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return stream


def read_lines(path: str | Path, allow_empty: bool = False) -> list[str]:
    """The lines of a UTF-8 text file (``.gz`` is decompressed), without line ends.

    A line ends at ``\\n``; a ``\\r`` before it (Windows line ends) is dropped too.
    Other whitespace is kept as it is: the tokenizer sees exactly the text.
    Unless ``allow_empty``, an empty or whitespace-only line is an error, because in
    a sentence-per-line corpus it is almost always a misalignment.
    """
    path = Path(path)
    try:
        with _open_binary(path) as stream:
            return decode_lines(stream, str(path), allow_empty)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not a valid gzip file ({error or 'truncated'})") from None


def decode_lines(raw_lines: Iterable[bytes], where: str, allow_empty: bool = True) -> list[str]:
    """Lines of bytes (a file, standard input) as text, without line ends; ``where`` names
    them in errors. A line that is not UTF-8, or holds a NUL byte (binary data, never
    text), is one :class:`DataError` naming the line; so is an empty line unless ``allow_empty``."""
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(
                f"{where}, line {number}: invalid UTF-8 at byte {error.start} of the line ({error.reason})"
            ) from None
        check_text(line, f"{where}, line {number}")
        if not allow_empty and not line.strip():
            raise DataError(f"{where}, line {number}: empty line")
        lines.append(line)
    return lines


def check_text(text: str, where: str) -> str:
    """``text`` if a tokenizer can read it: a NUL (binary data) or a lone surrogate (bytes
    that were not UTF-8, as Python passes them on from a command line) is one
    :class:`DataError` naming ``where``."""
    if "\x00" in text:
        raise DataError(f"{where}: a NUL byte at character {text.index(chr(0))} (binary data, not text)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise DataError(f"{where}: invalid UTF-8 at character {error.start} (bytes that are not text)") from None
    return text


def read_parallel(source_path: str | Path, target_path: str | Path) -> list[tuple[str, str]]:
    """(source, target) sentence pairs from two aligned files, line i with line i."""
    sources = read_lines(source_path)
    targets = read_lines(target_path)
    for path, lines in ((source_path, sources), (target_path, targets)):
        if not lines:
            raise DataError(f"{path}: an empty file (no sentences)")
    if len(sources) != len(targets):
        raise DataError(
            f"{source_path} has {counted(len(sources), 'line')} but {target_path} has {len(targets):,}: "
            "a parallel corpus needs one target line per source line"
        )
    return list(zip(sources, targets))
