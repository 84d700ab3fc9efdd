"""Running text for language models: one file read whole, split, and cut into windows.

Tiny Shakespeare (Karpathy's ``char-rnn`` corpus, 1,115,394 characters) is the
default. Where it comes from, first match wins, as for Multi30k:

1. an explicit file (``--set data.file=...``), any UTF-8 text;
2. a data folder (``--set data.dir=...``) holding ``tinyshakespeare/input.txt``;
3. ``$TAA_DATA/tinyshakespeare/input.txt``.

The split follows nanoGPT's ``shakespeare_char/prepare.py``: the first 90% of the
*characters* train, the last 10% validate (split the text, then tokenize each part,
so a BPE token never straddles the boundary).

Training batches are nanoGPT's ``get_batch``: ``batch_size`` windows of
``block_size + 1`` tokens at uniformly random offsets; the model reads
``window[:-1]`` and predicts ``window[1:]``. Here batch ``k`` is drawn from a
generator seeded by ``(seed, stream, k)``, so the stream restarts anywhere from
the number ``k`` alone. Imports no framework (NumPy only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from taa.data.multi30k import find_data_dir
from taa.data.text import DataError, open_input
from taa.training.progress import counted

TINY_SHAKESPEARE = Path("tinyshakespeare") / "input.txt"


def find_text_file(file: str | Path = "", data_dir: str | Path = "", default: Path = TINY_SHAKESPEARE) -> Path:
    """The text file to read: ``file``, else ``data_dir/default``, else ``$TAA_DATA/default``."""
    if file:
        return Path(file).expanduser()
    folder = find_data_dir(data_dir or None)
    if folder is None:
        raise DataError(f"no text file: set data.file, data.dir or $TAA_DATA (a folder holding {default})")
    return folder / default


def read_text(path: str | Path) -> str:
    """A whole UTF-8 text file, exactly (line ends included); errors name the file."""
    path = Path(path)
    with open_input(path) as stream:  # missing, a folder, unreadable: one line naming it
        data = stream.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: invalid UTF-8 ({error.reason})") from None
    if not text.strip():
        raise DataError(f"{path}: the file holds no text")
    if "\x00" in text:  # binary data, never running text
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataError(f"{path}, line {line}: a NUL byte (binary data, not text)")
    return text


def split_text(text: str, train_fraction: float = 0.9) -> tuple[str, str]:
    """(first ``train_fraction`` of the characters, the rest), as nanoGPT splits."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    cut = int(len(text) * train_fraction)
    return text[:cut], text[cut:]


def check_parts_hold_a_window(
    path: str | Path, train_tokens: int, val_tokens: int, train_fraction: float, window: int, why: str, setting: str
) -> None:
    """Training draws windows of ``window`` tokens from the first part of a text and
    validation from the rest (:func:`split_text`): a part shorter than one window is one
    :class:`DataError` naming the file, the part, its size and the window (``why`` says
    what makes the window, ``setting`` what shrinks it), before any training."""
    parts = (("training", train_tokens, f"the first {train_fraction:.0%}"),
             ("validation", val_tokens, f"the last {1 - train_fraction:.0%}"))
    for part, count, share in parts:
        if count < window:
            raise DataError(
                f"{path}: its {part} part ({share} of the characters, data.train_fraction={train_fraction:g}) is "
                f"{counted(count, 'token')}, fewer than one window of {window} ({why}): use a longer text "
                f"or a smaller {setting}"
            )


def random_windows(tokens: np.ndarray, length: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, length) contiguous slices of ``tokens`` at uniformly random offsets."""
    if len(tokens) < length:
        raise DataError(f"the text has {counted(len(tokens), 'token')}, fewer than one window of {length}")
    starts = rng.integers(0, len(tokens) - length + 1, size=count)  # (count,)
    return tokens[starts[:, None] + np.arange(length)]  # (count, length)


class WindowSampler:
    """Endless, resumable windows: batch ``k`` comes from a generator seeded by ``(seed, stream, k)``.

    ``stream`` keeps independent uses apart (0: training, 1: validation).
    """

    def __init__(self, tokens: np.ndarray, length: int, batch_size: int, seed: int, stream: int = 0) -> None:
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.length, self.batch_size, self.seed, self.stream = length, batch_size, seed, stream
        self.position = 0  # batches drawn so far
        random_windows(self.tokens, length, 0, np.random.default_rng(0))  # fail now if the text is too short

    def __iter__(self) -> WindowSampler:
        return self

    def __next__(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.stream, self.position])
        self.position += 1
        return random_windows(self.tokens, self.length, self.batch_size, rng)  # (b, length)

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])


def fixed_windows(tokens: np.ndarray, length: int, batches: int, batch_size: int, seed: int = 0) -> list[np.ndarray]:
    """A fixed list of ``batches`` window batches (the same every call): validation data."""
    sampler = WindowSampler(tokens, length, batch_size, seed, stream=1)
    return [next(sampler) for _ in range(batches)]


def every_window(tokens: np.ndarray, length: int, batch_size: int) -> list[np.ndarray]:
    """The whole text as consecutive windows of ``length`` tokens, in batches (b, length).

    Neighbouring windows share one token (the last input of one is the first of the
    next), so a model reading ``window[:-1]`` predicts every token after the first
    exactly once. A tail shorter than a window is left out.
    """
    count = (len(tokens) - 1) // (length - 1)
    windows = np.stack([tokens[i * (length - 1) : i * (length - 1) + length] for i in range(count)])  # (count, length)
    return [windows[start : start + batch_size] for start in range(0, count, batch_size)]
