"""Batches by token budget, with sentences of similar length together.

"Sentence pairs were batched together by approximate sequence length. Each
training batch contained a set of sentence pairs containing approximately 25000
source tokens and 25000 target tokens." (Vaswani et al. 2017, §5.1)

Each epoch:

1. shuffle the examples with a generator seeded by ``(seed, epoch)``;
2. sort them by length: the longer side of each pair first (the budget binds on
   it), then source, then target. The shuffle only decides the order among equal
   lengths, so each epoch groups slightly different sentences;
3. walk the sorted list and start a new batch whenever one more example would
   make the *padded* batch, ``n * max_length``, exceed ``max_tokens`` on either
   side;
4. shuffle the order of the batches, so training does not see short sentences
   first and long ones last.

Sorting is what saves compute: in a batch of similar lengths little of the padded
tensor is padding. The test measures it against random batching.

Everything is a function of ``(seed, epoch)``, so a run that stopped at batch
``position`` of ``epoch`` restarts at exactly that batch:
``epoch_batches(epoch)[position:]``, or ``iterate(epoch, position)``.

An example longer than ``max_tokens`` on its own is not dropped: it becomes a batch
of one (the only batches over the budget), and ``oversized`` lists them so a
training run can filter them out beforehand and log how many. Dropping data
silently would be worse, and evaluation needs every sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional, Union

import numpy as np

Lengths = Union[Sequence[int], Sequence[Sequence[int]]]  # one length per example, or one per side


class TokenBatcher:
    """Length-bucketed batches of example indices under a padded-token budget."""

    def __init__(self, lengths: Lengths, max_tokens: int, seed: int = 0, shuffle: bool = True):
        """``lengths[i]`` is example i's length, or its ``(source, target)`` lengths.

        ``shuffle=False`` gives the same batches every epoch, shortest first
        (for evaluation).
        """
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        table = np.asarray(lengths, dtype=np.int64)
        if table.ndim == 1:
            table = table[:, None]
        if table.ndim != 2 or len(table) == 0:
            raise ValueError("lengths must be a non-empty list of lengths or of (source, target) lengths")
        if (table < 1).any():
            raise ValueError(f"every length must be >= 1; example {int(np.argwhere(table < 1)[0, 0])} is not")
        self.lengths = table  # (n_examples, n_sides)
        self.max_tokens = max_tokens
        self.seed = seed
        self.shuffle = shuffle
        self._cache: dict[int, list[list[int]]] = {}

    @classmethod
    def from_pairs(
        cls, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], max_tokens: int, seed: int = 0, shuffle: bool = True
    ) -> TokenBatcher:
        """Batcher for encoded ``(source_ids, target_ids)`` pairs."""
        return cls([(len(s), len(t)) for s, t in pairs], max_tokens, seed, shuffle)

    def __len__(self) -> int:
        """Number of examples."""
        return len(self.lengths)

    @property
    def oversized(self) -> list[int]:
        """Examples longer than ``max_tokens`` on some side: each is a batch of its own."""
        return np.flatnonzero((self.lengths > self.max_tokens).any(axis=1)).tolist()

    def _sorted_order(self, epoch: int) -> np.ndarray:
        """Example indices sorted by length; ties in an order drawn from ``(seed, epoch)``."""
        n = len(self.lengths)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        lengths = self.lengths[order]  # (n_examples, n_sides), in shuffled order
        # The budget binds on the longer side, so sort by it first, then by source, then target.
        # lexsort is stable and sorts by its last key first.
        keys = (*(lengths[:, side] for side in reversed(range(lengths.shape[1]))), lengths.max(axis=1))
        return order[np.lexsort(keys)]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch``, each a list of example indices; every example once.

        The list is cached (one epoch at a time): index into it, do not change it."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch not in self._cache:
            self._cache = {epoch: self._make_batches(epoch)}  # keep one epoch: the one being trained
        return self._cache[epoch]

    def _make_batches(self, epoch: int) -> list[list[int]]:
        rows = self.lengths.tolist()  # plain ints: faster than numpy one example at a time
        batches: list[list[int]] = []
        batch: list[int] = []
        longest: list[int] = [0] * self.lengths.shape[1]  # per side, within `batch`
        for index in self._sorted_order(epoch).tolist():
            grown = [max(a, b) for a, b in zip(longest, rows[index])]
            if batch and any((len(batch) + 1) * m > self.max_tokens for m in grown):
                batches.append(batch)  # one more would break the budget: close this batch
                batch, grown = [], rows[index]
            batch.append(index)
            longest = grown
        batches.append(batch)
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, 1]).permutation(len(batches))
            batches = [batches[i] for i in order]
        return batches

    def iterate(self, start_epoch: int = 0, start_position: int = 0) -> Iterator[tuple[int, int, list[int]]]:
        """Endless ``(epoch, position, batch)``, starting at batch ``start_position`` of
        ``start_epoch``. Save ``(epoch, position + 1)`` with a checkpoint to resume after
        that batch."""
        epoch, position = start_epoch, start_position
        while True:
            batches = self.epoch_batches(epoch)
            for position in range(position, len(batches)):
                yield epoch, position, batches[position]
            epoch, position = epoch + 1, 0


def padding_fraction(lengths: Lengths, batches: Sequence[Sequence[int]]) -> float:
    """Share of the padded tensors that is padding, over all batches and sides."""
    table = np.asarray(lengths, dtype=np.int64)
    if table.ndim == 1:
        table = table[:, None]
    padded = real = 0
    for batch in batches:
        rows = table[list(batch)]  # (batch, sides)
        padded += int(rows.max(axis=0).sum()) * len(batch)
        real += int(rows.sum())
    return 1.0 - real / padded


def pad(sequences: Sequence[Sequence[int]], pad_id: int, length: Optional[int] = None) -> np.ndarray:
    """(batch, length) int64 array: each sequence, then ``pad_id`` up to ``length``
    (default: the longest sequence). ``torch.from_numpy`` turns it into a tensor."""
    longest = max((len(s) for s in sequences), default=0)
    length = longest if length is None else length
    if length < longest:
        raise ValueError(f"length={length} is shorter than the longest sequence ({longest})")
    out = np.full((len(sequences), length), pad_id, dtype=np.int64)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = sequence
    return out


# --------------------------------------------------------------------------------------
# Fixed-size batches of similar lengths ("sortish" batching, for fine-tuning)
# --------------------------------------------------------------------------------------


class SortishBatcher:
    """Batches of ``batch_size`` examples of similar length, in a random order.

    Fine-tuning recipes (BERT, Devlin et al. 2019 §4) count batches in sentences,
    not tokens. To waste little on padding, each epoch (seeded by ``(seed, epoch)``):

    1. shuffle the examples;
    2. cut the shuffled list into pools of ``pool * batch_size`` examples and sort
       each pool by length (so a batch holds neighbours in length, while which
       sentences meet still changes from epoch to epoch);
    3. cut each sorted pool into batches and shuffle the order of all batches.

    Every example appears exactly once per epoch. ``shuffle=False`` sorts the whole
    set by length, the same every epoch (for evaluation). Resumable like
    :class:`TokenBatcher`: batches are a function of ``(seed, epoch)``.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, pool: int = 50,
                 shuffle: bool = True) -> None:
        if batch_size < 1 or pool < 1:
            raise ValueError(f"batch_size and pool must be >= 1, got {batch_size} and {pool}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ValueError("lengths must be a non-empty list of lengths")
        self.batch_size, self.seed, self.pool, self.shuffle = batch_size, seed, pool, shuffle
        self._cache: dict[int, list[list[int]]] = {}

    def __len__(self) -> int:
        """Number of examples."""
        return len(self.lengths)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` (cached, one epoch at a time), each a list of example indices."""
        if epoch not in self._cache:
            self._cache = {epoch: self._make_batches(epoch)}
        return self._cache[epoch]

    def _make_batches(self, epoch: int) -> list[list[int]]:
        n, size = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i : i + size].tolist() for i in range(0, n, size)]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n)
        batches: list[list[int]] = []
        pool = self.pool * size
        for start in range(0, n, pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]  # sorted by length within the pool
            batches.extend(chunk[i : i + size].tolist() for i in range(0, len(chunk), size))
        return [batches[i] for i in rng.permutation(len(batches))]


def in_length_order(rows: Sequence[Sequence[int]], batch_size: int,
                    decode_rows: Callable[[list[Sequence[int]]], Sequence[Any]]) -> list[Any]:
    """``decode_rows`` over ``rows`` in batches of ``batch_size`` similar lengths (shortest
    first: little padding), its outputs handed back in the rows' order."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    outputs: list[Any] = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for i, output in zip(chunk, decode_rows([rows[i] for i in chunk])):
            outputs[i] = output
    return outputs
