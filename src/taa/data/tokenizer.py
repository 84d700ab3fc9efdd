"""The subword tokenizer real runs use: byte-pair encoding on the Rust ``tokenizers`` library.

The paper encodes sentences "using byte-pair encoding, which has a shared
source-target vocabulary of about 37000 tokens" (Vaswani et al. 2017, §5.1);
``joint=True`` learns that one shared vocabulary from both sides, ``joint=False``
one vocabulary per side. The learning algorithm is the one written out in
``taa.data.bpe``; a test pins that both learn the same merges.

Words are split at spaces and each space is kept as ``▁`` on the following word
(SentencePiece's Metaspace), so decoding gives back the text exactly, spaces
included, and sacreBLEU can score it against the raw reference. Text is cased and
stays cased. A character the training text never had becomes ``<unk>``, and
decoding drops it. As everywhere in ``tokenizers``, text that spells a special
token (a literal ``<s>``) is read as that token; Multi30k has no ``<`` at all.

What each side adds, for the encoder-decoder of ``taa.torch.models.transformer``:

- source: the subwords, then ``</s>``, so the encoder sees where the sentence ends;
- target: ``<s>``, the subwords, then ``</s>``. The decoder reads ``ids[:-1]``
  (starting from ``<s>``) and learns to predict ``ids[1:]`` (ending with ``</s>``,
  which tells generation to stop).

Saved as JSON only (``tokenizers``' own format plus a small description); nothing
is ever pickled.

Language models read plain running text rather than sentence pairs, so two more
pieces live here (see the section at the end of the file):

- ``train_bpe(..., byte_level=True)``: GPT-2's byte-level BPE (Radford et al. 2019,
  §2.2): the alphabet is the 256 bytes, so every text round-trips exactly, newlines
  included, and nothing is ever ``<unk>``. ``SubwordTokenizer.encode``/``decode``
  turn plain text into ids and back, with no special tokens added.
- ``CharTokenizer``: one id per character, the vocabulary being the sorted set of
  the training text's characters (nanoGPT's ``shakespeare_char``: 65 for Tiny
  Shakespeare). :func:`taa.text.load_tokenizer` opens either kind from a saved folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Optional

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from taa.data.text import DataError

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # their ids are 0, 1, 2, 3, in this order
SPACE = "\u2581"  # ▁, the visible space of SentencePiece

DESCRIPTION = "subword_tokenizer.json"  # what kind of tokenizer a folder holds
JOINT_FILE = "tokenizer.json"
SOURCE_FILE, TARGET_FILE = "source_tokenizer.json", "target_tokenizer.json"
FORMAT = "taa.subword_tokenizer/1"


def _untrained_bpe() -> Tokenizer:
    """A BPE tokenizer that splits at spaces, keeps them as ``▁`` and decodes them back."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    return tokenizer


def _untrained_byte_level_bpe() -> Tokenizer:
    """GPT-2's byte-level BPE: text -> UTF-8 bytes, each byte a symbol; split with GPT-2's
    pattern (words with their leading space, numbers, punctuation, runs of whitespace)."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_bpe(
    lines: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    *,
    byte_level: bool = False,
    extra_special_tokens: Sequence[str] = (),
) -> Tokenizer:
    """Learn a BPE vocabulary of at most ``vocab_size`` entries, special tokens included.

    ``byte_level``: GPT-2's byte-level variant (for running text; see the module
    docstring). ``extra_special_tokens`` follow the four fixed ones, from id 4 on
    (e.g. ``<mask>`` for masked language modelling).
    """
    specials = [*SPECIAL_TOKENS, *extra_special_tokens]
    if vocab_size <= len(specials):
        raise ValueError(f"vocab_size must exceed the {len(specials)} special tokens, got {vocab_size}")
    tokenizer = _untrained_byte_level_bpe() if byte_level else _untrained_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if byte_level else [],
    )
    tokenizer.train_from_iterator(lines, trainer)
    _check_special_ids(tokenizer, "trained tokenizer")
    return tokenizer


def _check_special_ids(tokenizer: Tokenizer, name: str) -> None:
    for expected, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != expected:
            raise DataError(f"{name}: {token} should have id {expected}, has {tokenizer.token_to_id(token)}")


class SubwordTokenizer:
    """Source and target BPE tokenizers, shared (joint) or one per side."""

    pad_id = 0
    bos_id = 1
    eos_id = 2
    unk_id = 3

    def __init__(self, source: Tokenizer, target: Optional[Tokenizer] = None):
        """``target=None`` means one joint tokenizer for both sides."""
        self.source = source
        self.target = source if target is None else target
        for name, tokenizer in (("source", self.source), ("target", self.target)):
            _check_special_ids(tokenizer, f"{name} tokenizer")

    @property
    def joint(self) -> bool:
        return self.source is self.target

    @classmethod
    def train(
        cls,
        source_lines: Sequence[str],
        target_lines: Sequence[str],
        vocab_size: int,
        joint: bool = True,
        min_frequency: int = 2,
        target_vocab_size: Optional[int] = None,
    ) -> SubwordTokenizer:
        """Learn BPE from training text: one vocabulary of ``vocab_size`` for both sides
        (``joint``), or ``vocab_size`` for the source and ``target_vocab_size``
        (default: the same) for the target."""
        if joint:
            if target_vocab_size is not None:
                raise ValueError("target_vocab_size needs joint=False: a joint vocabulary has one size")
            return cls(train_bpe([*source_lines, *target_lines], vocab_size, min_frequency))
        return cls(
            train_bpe(source_lines, vocab_size, min_frequency),
            train_bpe(target_lines, target_vocab_size or vocab_size, min_frequency),
        )

    @property
    def source_vocab_size(self) -> int:
        return self.source.get_vocab_size()

    @property
    def target_vocab_size(self) -> int:
        return self.target.get_vocab_size()

    # Encoding: what each side adds is explained in the module docstring.

    def encode_source(self, text: str) -> list[int]:
        """Subword ids of ``text``, then ``</s>``."""
        return self.source.encode(text, add_special_tokens=False).ids + [self.eos_id]

    def encode_target(self, text: str) -> list[int]:
        """``<s>``, the subword ids of ``text``, then ``</s>``."""
        return [self.bos_id] + self.target.encode(text, add_special_tokens=False).ids + [self.eos_id]

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """``(encode_source(s), encode_target(t))`` for every pair, encoded in parallel."""
        sources = self.source.encode_batch([s for s, _ in pairs], add_special_tokens=False)
        targets = self.target.encode_batch([t for _, t in pairs], add_special_tokens=False)
        return [
            (s.ids + [self.eos_id], [self.bos_id] + t.ids + [self.eos_id]) for s, t in zip(sources, targets)
        ]

    def _decode(self, tokenizer: Tokenizer, ids: Sequence[int]) -> str:
        """Text of ``ids``: a leading ``<s>`` is dropped, everything from the first ``</s>``
        on is ignored (generation pads after it), and ``<pad>``/``<unk>`` are dropped."""
        ids = list(ids)
        if ids and ids[0] == self.bos_id:
            ids = ids[1:]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return tokenizer.decode(ids, skip_special_tokens=True)

    def decode_source(self, ids: Sequence[int]) -> str:
        return self._decode(self.source, ids)

    def decode_target(self, ids: Sequence[int]) -> str:
        """Detokenized text, ready to score against the raw reference."""
        return self._decode(self.target, ids)

    # Plain running text (language models): no special tokens added.

    @property
    def vocab_size(self) -> int:
        """The vocabulary of the target side (of the only side when joint)."""
        return self.target_vocab_size

    def encode(self, text: str) -> list[int]:
        """The subword ids of ``text`` (target side), nothing added."""
        return self.target.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` (target side); special tokens are dropped."""
        return self.target.decode(list(ids), skip_special_tokens=True)

    def tokens(self, text: str, side: str = "target") -> list[str]:
        """The subword strings of ``text`` (for looking at what BPE did)."""
        tokenizer = {"source": self.source, "target": self.target}[side]
        return tokenizer.encode(text, add_special_tokens=False).tokens

    # Saving: JSON files only.

    def save(self, directory: str | Path) -> Path:
        """Write the tokenizer(s) and a description into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.joint:
            files = {"source": JOINT_FILE, "target": JOINT_FILE}
            self.source.save(str(directory / JOINT_FILE))
        else:
            files = {"source": SOURCE_FILE, "target": TARGET_FILE}
            self.source.save(str(directory / SOURCE_FILE))
            self.target.save(str(directory / TARGET_FILE))
        description = {"format": FORMAT, "joint": self.joint, "files": files, "special_tokens": list(SPECIAL_TOKENS)}
        (directory / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> SubwordTokenizer:
        directory = Path(directory)
        path = directory / DESCRIPTION
        if not path.is_file():
            raise DataError(f"{directory}: not a saved SubwordTokenizer (no {DESCRIPTION})")
        description = read_description(path, FORMAT)
        files, joint = description.get("files"), description.get("joint")
        if not isinstance(files, dict) or not all(isinstance(files.get(side), str) for side in ("source", "target")):
            raise DataError(f"{path}: files should name the source and target tokenizer files")
        if not isinstance(joint, bool):
            raise DataError(f"{path}: joint={joint!r} should be true or false")
        for side in ("source", "target"):
            if not (directory / files[side]).is_file():
                raise DataError(f"{directory}: {side} tokenizer file {files[side]} is missing")
        source = read_tokenizer_file(directory / files["source"])
        target = None if joint else read_tokenizer_file(directory / files["target"])
        try:
            return cls(source, target)
        except DataError as error:  # the special tokens are not where taa put them
            raise DataError(f"{directory}: {error}") from None


# --------------------------------------------------------------------------------------
# Character-level vocabulary (language models on small corpora)
# --------------------------------------------------------------------------------------

CHAR_DESCRIPTION = "char_tokenizer.json"
CHAR_FORMAT = "taa.char_tokenizer/1"


class CharTokenizer:
    """One id per character: the sorted set of the training text's characters.

    This is nanoGPT's ``shakespeare_char`` vocabulary (65 characters for Tiny
    Shakespeare, "\\n" first). There are no special tokens: a language model reads
    running text and needs none. A character outside the vocabulary is an error
    naming it, never a silent ``<unk>``.
    """

    def __init__(self, characters: Sequence[str]):
        characters = list(characters)
        if not characters:
            raise DataError("a character vocabulary needs at least one character")
        if any(len(c) != 1 for c in characters) or len(set(characters)) != len(characters):
            raise DataError("a character vocabulary needs distinct single characters")
        self.characters = characters
        self.ids = {c: i for i, c in enumerate(characters)}

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        """The vocabulary of ``text``: its distinct characters in code point order."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.characters)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.ids[c] for c in text]
        except KeyError as error:
            raise DataError(f"character {error.args[0]!r} is not in the vocabulary of {self.vocab_size}") from None

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.characters[i] for i in ids)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        description = {"format": CHAR_FORMAT, "characters": self.characters}
        (directory / CHAR_DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> CharTokenizer:
        path = Path(directory) / CHAR_DESCRIPTION
        if not path.is_file():
            raise DataError(f"{directory}: not a saved CharTokenizer (no {CHAR_DESCRIPTION})")
        characters = read_description(path, CHAR_FORMAT).get("characters")
        if not isinstance(characters, list) or not all(isinstance(c, str) for c in characters):
            raise DataError(f"{path}: characters should be a list of single characters")
        try:
            return cls(characters)
        except DataError as error:
            raise DataError(f"{path}: {error}") from None


# --------------------------------------------------------------------------------------
# Reading the saved files: a damaged one is one line naming it
# --------------------------------------------------------------------------------------


def read_description(path: Path, format: str) -> dict:
    """A tokenizer's JSON description, checked to be of ``format``; a file that is not
    UTF-8 JSON of that format is one :class:`DataError` naming it."""
    from taa.config import ConfigError, read_data

    try:
        description = read_data(path, "json")
    except ConfigError as error:
        raise DataError(str(error)) from None
    if not isinstance(description, dict) or description.get("format") != format:
        found = description.get("format") if isinstance(description, dict) else None
        raise DataError(f"{path}: format {found!r}, expected {format!r}")
    return description


def read_tokenizer_file(path: Path) -> Tokenizer:
    """A ``tokenizers`` file (``tokenizer.json``); one that the library cannot read is one
    :class:`DataError` naming it, with the library's reason."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # the library's own parse error (a plain Exception)
        reason = " ".join(str(error).split())[:200]
        raise DataError(f"{path}: not a tokenizers file ({reason or type(error).__name__})") from None

