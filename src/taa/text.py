"""Tokenizers from folders, and text to token ids and back, for every kind of tokenizer taa meets.

A folder holds one of three tokenizers:

- taa's ``CharTokenizer`` (``char_tokenizer.json``): one id per character;
- taa's ``SubwordTokenizer`` (``subword_tokenizer.json`` and its BPE files): the
  encoder-decoder's source and target sides, ``</s>`` appended to a source;
- a Hugging Face ``tokenizer.json`` (a ``tokenizers.Tokenizer``), with whatever its
  post-processor adds (BERT's ``[CLS] ... [SEP]``, T5's ``</s>``).

:func:`load_tokenizer` opens any of them; :func:`encode_text` and :func:`decode_tokens`
treat them alike. Nothing here imports a framework.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

from tokenizers import Tokenizer

from taa.data.text import DataError
from taa.data.tokenizer import CHAR_DESCRIPTION, DESCRIPTION, CharTokenizer, SubwordTokenizer, read_tokenizer_file
from taa.folders import (
    HF_TOKENIZER,
    SENTENCE_TRANSFORMERS_CONFIG,
    CheckpointError,
    hugging_face_folders,
    read_json,
)

AnyTokenizer = Union[CharTokenizer, SubwordTokenizer, Tokenizer]


def is_taa_tokenizer(directory: str | Path) -> bool:
    """Whether ``directory`` holds one of taa's own tokenizers (characters or BPE)."""
    directory = Path(directory)
    return (directory / CHAR_DESCRIPTION).is_file() or (directory / DESCRIPTION).is_file()


def load_tokenizer(
    path: str | Path, max_length: Optional[int] = None, *, positions: Optional[int] = None, required: bool = True,
) -> Optional[AnyTokenizer]:
    """The tokenizer at ``path``: a tokenizer folder (taa's own or a ``tokenizer.json``), a
    Hugging Face model folder (a sentence-transformers one too), or a ``tokenizer.json`` file.

    A Hugging Face tokenizer does not pad (batches pad themselves) and truncates to
    ``max_length``, else to a sentence-transformers folder's ``max_seq_length``, else to the
    model's ``positions`` (BERT's), else not at all. A folder without a tokenizer is a
    :class:`~taa.folders.CheckpointError`, or None when not ``required``.
    """
    path = Path(path)
    if path.is_dir() and is_taa_tokenizer(path):
        try:
            return CharTokenizer.load(path) if (path / CHAR_DESCRIPTION).is_file() else SubwordTokenizer.load(path)
        except DataError as error:
            raise CheckpointError(str(error)) from None
    folders = hugging_face_folders(path) if path.is_dir() else []
    files = [path] if path.is_file() else [f / HF_TOKENIZER for f in reversed(folders) if (f / HF_TOKENIZER).is_file()]
    if not files:
        if required:
            raise CheckpointError(f"{path}: no tokenizer ({CHAR_DESCRIPTION}, {DESCRIPTION} or {HF_TOKENIZER})")
        return None
    try:
        tokenizer = read_tokenizer_file(files[0])
    except DataError as error:
        raise CheckpointError(str(error)) from None
    tokenizer.no_padding()
    if max_length is None:
        settings = [f / SENTENCE_TRANSFORMERS_CONFIG for f in folders if (f / SENTENCE_TRANSFORMERS_CONFIG).is_file()]
        max_length = _max_seq_length(settings[0]) if settings else positions
    if max_length is not None:
        tokenizer.enable_truncation(max_length=int(max_length))
    else:
        tokenizer.no_truncation()
    return tokenizer


def _max_seq_length(path: Path) -> Optional[int]:
    """A sentence-transformers folder's ``max_seq_length`` (None when it gives none)."""
    value = read_json(path)
    value = value.get("max_seq_length") if isinstance(value, dict) else value
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise CheckpointError(f"{path}: max_seq_length={value!r} should be a positive integer")
    return value


def encode_text(tokenizer: AnyTokenizer, text: str, *, source: bool = False) -> list[int]:
    """Token ids of ``text``: a decoder-only prompt as it is, or (``source=True``) an
    encoder-decoder's source with what the tokenizer adds to one (T5's and taa's ``</s>``)."""
    if isinstance(tokenizer, SubwordTokenizer):
        return tokenizer.encode_source(text) if source else tokenizer.encode(text)
    if isinstance(tokenizer, Tokenizer):
        return tokenizer.encode(text, add_special_tokens=source).ids
    return tokenizer.encode(text)  # CharTokenizer


def decode_tokens(tokenizer: AnyTokenizer, ids: Sequence[int], *, target: bool = False) -> str:
    """Text of generated ids, special tokens left out (``target=True``: an encoder-decoder's
    output, which taa's BPE cuts at ``</s>``)."""
    ids = [int(i) for i in ids]
    if isinstance(tokenizer, SubwordTokenizer):
        return tokenizer.decode_target(ids) if target else tokenizer.decode(ids)
    if isinstance(tokenizer, Tokenizer):
        return tokenizer.decode(ids, skip_special_tokens=True)
    return tokenizer.decode(ids)
