"""Token-budget batches (Vaswani et al. 2017, §5.1): complete, within budget, cheap in padding,
deterministic per (seed, epoch), resumable."""

import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taa.data.batching import TokenBatcher, pad, padding_fraction


def sentence_lengths(n: int, seed: int = 0) -> list[tuple[int, int]]:
    """(source, target) lengths shaped like Multi30k subwords: 5..60, target close to source."""
    rng = random.Random(seed)
    lengths = []
    for _ in range(n):
        source = max(3, min(60, int(rng.gauss(15, 6))))
        lengths.append((source, max(3, source + rng.randint(-4, 4))))
    return lengths


def padded_size(lengths, batch) -> tuple[int, ...]:
    """n * max_length on each side."""
    rows = [lengths[i] for i in batch]
    return tuple(len(rows) * max(side) for side in zip(*rows))


def assert_each_example_once(batches, n):
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(n))


LENGTHS = sentence_lengths(3000)


@pytest.mark.parametrize("max_tokens", [64, 500, 4000])
def test_every_example_once_per_epoch_within_budget(max_tokens):
    batcher = TokenBatcher(LENGTHS, max_tokens, seed=3)
    for epoch in range(3):
        batches = batcher.epoch_batches(epoch)
        assert_each_example_once(batches, len(LENGTHS))
        assert all(max(padded_size(LENGTHS, b)) <= max_tokens for b in batches)
        assert all(b for b in batches)


def test_batches_are_nearly_full():
    """Greedy filling: no two neighbouring batches could have been one."""
    batcher = TokenBatcher(LENGTHS, 4000, seed=0)
    batches = batcher.epoch_batches(0)
    sizes = sorted(sum(padded_size(LENGTHS, b)) / 2 for b in batches)
    assert np.median(sizes) > 0.9 * 4000


def random_batches(lengths, max_tokens, seed):
    """The same greedy budget, without sorting: what length bucketing is measured against."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    batches, batch = [], []
    for i in order:
        if batch and max(padded_size(lengths, batch + [i])) > max_tokens:
            batches.append(batch)
            batch = []
        batch.append(i)
    return batches + [batch]


def test_sorting_by_length_cuts_padding():
    sorted_batches = TokenBatcher(LENGTHS, 1000, seed=0).epoch_batches(0)
    shuffled_batches = random_batches(LENGTHS, 1000, seed=0)
    sorted_padding = padding_fraction(LENGTHS, sorted_batches)
    random_padding = padding_fraction(LENGTHS, shuffled_batches)
    # measured: 0.07 of the padded tensors is padding when sorted, 0.47 at random,
    # and sorting needs 49 batches where random batching needs 87
    assert sorted_padding < 0.1 and random_padding > 0.4
    assert len(sorted_batches) < 0.7 * len(shuffled_batches)


def test_same_seed_same_batches_and_epochs_differ():
    first = TokenBatcher(LENGTHS, 1000, seed=7)
    again = TokenBatcher(LENGTHS, 1000, seed=7)
    other = TokenBatcher(LENGTHS, 1000, seed=8)
    assert first.epoch_batches(2) == again.epoch_batches(2)
    assert first.epoch_batches(0) != first.epoch_batches(1)
    assert first.epoch_batches(0) != other.epoch_batches(0)
    # ties among equal lengths are shuffled too, not only the batch order
    assert {tuple(sorted(b)) for b in first.epoch_batches(0)} != {tuple(sorted(b)) for b in first.epoch_batches(1)}


def test_batch_order_is_shuffled_not_shortest_first():
    batches = TokenBatcher(LENGTHS, 1000, seed=0).epoch_batches(0)
    longest = [max(max(LENGTHS[i]) for i in batch) for batch in batches]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


def test_resume_at_the_exact_batch():
    run = TokenBatcher(LENGTHS, 1000, seed=1).iterate()
    seen = [next(run) for _ in range(80)]  # 49 batches an epoch: into epoch 1
    assert seen[0][:2] == (0, 0) and seen[49][:2] == (1, 0) and seen[-1][0] == 1
    epoch, position, batch = seen[39]
    # a restarted process: a new batcher, resumed right after batch 39, across the epoch end
    resumed = TokenBatcher(LENGTHS, 1000, seed=1).iterate(epoch, position + 1)
    assert [next(resumed) for _ in range(40)] == seen[40:]
    assert TokenBatcher(LENGTHS, 1000, seed=1).epoch_batches(epoch)[position] == batch


def test_an_oversized_example_gets_a_batch_of_its_own():
    lengths = [(5, 5), (6, 5), (50, 8), (4, 4), (7, 120), (5, 6)]
    batcher = TokenBatcher(lengths, max_tokens=30, seed=0)
    assert batcher.oversized == [2, 4]
    batches = batcher.epoch_batches(0)
    assert_each_example_once(batches, len(lengths))
    assert [2] in batches and [4] in batches
    assert all(max(padded_size(lengths, b)) <= 30 for b in batches if b not in ([2], [4]))


def test_unshuffled_batches_are_sorted_and_the_same_every_epoch():
    batcher = TokenBatcher(LENGTHS, 1000, shuffle=False)
    batches = batcher.epoch_batches(0)
    assert batches == batcher.epoch_batches(5)
    keys = [(max(LENGTHS[i]), *LENGTHS[i]) for b in batches for i in b]
    assert keys == sorted(keys)  # the longer side first, then source, then target


def test_single_lengths_and_encoded_pairs():
    batcher = TokenBatcher([3, 9, 4, 9, 3], max_tokens=12, seed=0)
    assert sorted(map(sorted, batcher.epoch_batches(0))) == [[0, 2, 4], [1], [3]]
    pairs = [([5, 6, 2], [1, 7, 2]), ([5, 2], [1, 8, 9, 7, 2])]
    assert TokenBatcher.from_pairs(pairs, 100).lengths.tolist() == [[3, 3], [2, 5]]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="max_tokens"):
        TokenBatcher([3], 0)
    with pytest.raises(ValueError, match="example 1"):
        TokenBatcher([(3, 3), (0, 2)], 10)
    with pytest.raises(ValueError, match="non-empty"):
        TokenBatcher([], 10)
    with pytest.raises(ValueError, match="epoch"):
        TokenBatcher([3], 10).epoch_batches(-1)


@given(
    lengths=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=200),
    max_tokens=st.integers(1, 300),
    seed=st.integers(0, 2**32),
    epoch=st.integers(0, 100),
)
def test_any_lengths_any_budget(lengths, max_tokens, seed, epoch):
    batcher = TokenBatcher(lengths, max_tokens, seed)
    batches = batcher.epoch_batches(epoch)
    assert_each_example_once(batches, len(lengths))
    oversized = set(batcher.oversized)
    for batch in batches:
        if max(padded_size(lengths, batch)) > max_tokens:
            assert len(batch) == 1 and batch[0] in oversized
    assert batches == TokenBatcher(lengths, max_tokens, seed).epoch_batches(epoch)


def test_pad():
    out = pad([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert out.dtype == np.int64
    assert out.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert pad([[1, 2]], pad_id=3, length=4).tolist() == [[1, 2, 3, 3]]
    with pytest.raises(ValueError, match="shorter than the longest"):
        pad([[1, 2, 3]], pad_id=0, length=2)


def test_padding_fraction_counts_both_sides():
    lengths = [(2, 4), (4, 4)]
    # source padded 2*4=8 with 6 real; target 2*4=8 with 8 real: 2 of 16 are padding
    assert padding_fraction(lengths, [[0, 1]]) == pytest.approx(2 / 16)
    assert padding_fraction(lengths, [[0], [1]]) == 0.0


# ---------------------------------------------------------------- fixed-size "sortish" batches


def test_sortish_batches_hold_every_example_once_and_similar_lengths():
    from taa.data.batching import SortishBatcher

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 60, size=1000).tolist()
    batcher = SortishBatcher(lengths, batch_size=32, seed=1, pool=10)
    batches = batcher.epoch_batches(0)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert sum(len(b) != 32 for b in batches) <= 4  # one short batch per pool at most
    sortish = padding_fraction(lengths, batches)
    random_order = rng.permutation(1000)
    shuffled = padding_fraction(lengths, [random_order[i:i + 32].tolist() for i in range(0, 1000, 32)])
    assert sortish < 0.15 < 0.4 < shuffled  # sorting within pools removes most of the padding
    assert batcher.epoch_batches(1) != batches  # a new grouping every epoch
    assert SortishBatcher(lengths, 32, seed=1, pool=10).epoch_batches(0) == batches  # a function of (seed, epoch)
    evaluation = SortishBatcher(lengths, 100, shuffle=False).epoch_batches(0)
    assert [lengths[i] for b in evaluation for i in b] == sorted(lengths)


def test_in_length_order_batches_similar_lengths_and_answers_in_the_rows_order():
    from taa.data.batching import in_length_order

    rows = [[1, 2, 3], [4], [5, 6], [7], [8, 9, 10, 11]]
    seen = []

    def decode_rows(batch):
        seen.append([len(row) for row in batch])
        return [sum(row) for row in batch]

    assert in_length_order(rows, 2, decode_rows) == [6, 4, 11, 7, 38]
    assert seen == [[1, 1], [2, 3], [4]]
    assert in_length_order([], 2, decode_rows) == []
