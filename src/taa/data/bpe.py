"""Byte-pair encoding, learned from scratch (Sennrich, Haddow & Birch 2016).

"Neural Machine Translation of Rare Words with Subword Units", §3.2, Algorithm 1:
start from characters; count every pair of adjacent symbols over the corpus, each
word weighted by how often it occurs; merge the most frequent pair everywhere into
one new symbol; repeat. The ordered list of merges *is* the model. To encode a
word, split it into characters and apply the merges in the order they were
learned (rank order).

This module is for reading, not for speed: it recounts every pair after every
merge. Real runs use the Rust ``tokenizers`` trainer (``taa.data.tokenizer``), and
a test pins that both learn the same merges in the same order. That fixes the
choices the paper leaves open, the way ``tokenizers`` makes them:

- words are the whitespace-separated pieces of a line;
- the vocabulary is the alphabet (every character of the corpus, in code point
  order) followed by each merged symbol in the order it was made;
- ties: among pairs with the same count, the pair whose left symbol comes first in
  the vocabulary wins, then the one whose right symbol comes first;
- a pair is merged only if it occurs at least ``min_frequency`` times (and at
  least once);
- no end-of-word marker unless asked for. The paper appends ``</w>`` to the last
  character of every word, so that ``st</w>`` (as in "best") and ``st`` (as in
  "stone") differ; pass ``end_of_word_suffix="</w>"`` for that. (The marked
  characters follow the plain alphabet, again in code point order.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

Pair = tuple[str, str]


@dataclass(frozen=True)
class BytePairEncoding:
    """A learned BPE model: the starting symbols and the ordered merges."""

    alphabet: tuple[str, ...]  # single characters (and marked last characters), vocabulary order
    merges: tuple[Pair, ...]  # merges[r] is applied before merges[r + 1]
    end_of_word_suffix: str = ""  # appended to the last character of each word, e.g. "</w>"

    @property
    def vocab(self) -> list[str]:
        """Every symbol, in vocabulary order: the alphabet, then merged symbols as made."""
        symbols = list(self.alphabet)
        seen = set(symbols)
        for left, right in self.merges:
            if left + right not in seen:
                seen.add(left + right)
                symbols.append(left + right)
        return symbols

    def encode(self, word: str) -> list[str]:
        """Split ``word`` into characters, then apply the merges in rank order.

        A character the corpus never had stays a symbol of its own (a tokenizer
        would map it to ``<unk>``).
        """
        symbols = _characters(word, self.end_of_word_suffix)
        rank = {pair: r for r, pair in enumerate(self.merges)}
        while len(symbols) > 1:
            pairs = set(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda pair: rank.get(pair, len(rank)))
            if best not in rank:
                break  # no learned merge applies any more
            symbols = _merge(symbols, best)
        return symbols


def _characters(word: str, end_of_word_suffix: str) -> list[str]:
    symbols = list(word)
    if symbols and end_of_word_suffix:
        symbols[-1] += end_of_word_suffix
    return symbols


def _merge(symbols: list[str], pair: Pair) -> list[str]:
    """Replace every occurrence of ``pair`` in ``symbols``, scanning left to right."""
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def count_pairs(words: dict[tuple[str, ...], int]) -> Counter[Pair]:
    """How often each adjacent pair of symbols occurs, each word weighted by its count."""
    counts: Counter[Pair] = Counter()
    for symbols, count in words.items():
        for pair in zip(symbols, symbols[1:]):
            counts[pair] += count
    return counts


def learn_bpe(
    corpus_lines: Iterable[str],
    num_merges: Optional[int] = None,
    vocab_size: Optional[int] = None,
    min_frequency: int = 2,
    end_of_word_suffix: str = "",
) -> BytePairEncoding:
    """Learn merges from ``corpus_lines`` (Sennrich et al. 2016, Algorithm 1).

    Give exactly one stopping rule: ``num_merges`` merges, or a vocabulary of
    ``vocab_size`` symbols (alphabet included). Learning also stops when no pair
    occurs ``min_frequency`` times any more.
    """
    if (num_merges is None) == (vocab_size is None):
        raise ValueError("learn_bpe needs exactly one of num_merges and vocab_size")
    if min_frequency < 0:
        raise ValueError(f"min_frequency must be >= 0, got {min_frequency}")

    word_counts = Counter(word for line in corpus_lines for word in line.split())
    # Each word as a tuple of symbols, with its corpus count.
    words = {tuple(_characters(word, end_of_word_suffix)): count for word, count in word_counts.items()}

    characters = sorted({c for word in word_counts for c in word})
    marked = sorted({symbols[-1] for symbols in words} - set(characters)) if end_of_word_suffix else []
    alphabet = tuple(characters + marked)
    # The position of every symbol in the vocabulary breaks ties between equal counts.
    position = {symbol: i for i, symbol in enumerate(alphabet)}

    merges: list[Pair] = []
    while True:
        if num_merges is not None and len(merges) >= num_merges:
            break
        if vocab_size is not None and len(position) >= vocab_size:
            break
        counts = count_pairs(words)
        if not counts:
            break
        # The most frequent pair; on a tie, the one whose symbols came first.
        best = max(counts, key=lambda pair: (counts[pair], -position[pair[0]], -position[pair[1]]))
        if counts[best] < max(min_frequency, 1):
            break
        merges.append(best)
        position.setdefault(best[0] + best[1], len(position))
        words = {tuple(_merge(list(symbols), best)): count for symbols, count in words.items()}
    return BytePairEncoding(alphabet=alphabet, merges=tuple(merges), end_of_word_suffix=end_of_word_suffix)
