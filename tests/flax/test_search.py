"""The Flax search loops and token choosers against torch's, on the same logits.

The loops are driven by a table "model" whose logits depend on the sentence, the step and
the last token, so torch's loops and Flax's see the same numbers and must choose the same
tokens, finish the same hypotheses and score them alike. The Flax table is an NNX graph
node whose logits are computed traced, inside the compiled loops."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from taa.flax import search as flax_search  # noqa: E402
from taa.torch import search as torch_search  # noqa: E402

VOCAB, END, PAD = 9, 2, 0


def tables(batch: int, seed: int):
    generator = np.random.default_rng(seed)
    by_sentence = generator.normal(size=(batch, VOCAB)).astype(np.float32) * 2
    by_token = generator.normal(size=(VOCAB, VOCAB)).astype(np.float32) * 2
    by_step = generator.normal(size=(64, VOCAB)).astype(np.float32)
    by_step[:, END] += np.arange(64, dtype=np.float32) * 0.6 - 1  # the end grows likelier
    return by_sentence, by_token, by_step


class TorchTable:
    """Logits = S[sentence] + W[last token] + U[step], for torch's loops."""

    def __init__(self, batch: int, seed: int) -> None:
        self.by_sentence, self.by_token, self.by_step = tables(batch, seed)
        self.sentence = np.arange(batch)
        self.step = 0
        self.rows = batch

    def repeat_rows(self, k: int) -> None:
        self.sentence = np.repeat(self.sentence, k)
        self.rows *= k

    def next_logits(self, last):
        token = np.zeros(self.rows, dtype=np.int64) if last is None else last.numpy()
        logits = self.by_sentence[self.sentence] + self.by_token[token] + self.by_step[self.step]
        self.step += 1
        return torch.from_numpy(logits)

    def follow(self, rows, sentences_left: bool) -> None:
        self.sentence = self.sentence[rows.numpy()]
        self.rows = len(self.sentence)


TRACES: list[int] = []  # one entry each time a FlaxTable's next_logits is traced (or run eagerly)


class FlaxTable(nnx.Pytree):
    """The same table as an NNX graph node: its logits computed traced, in the compiled loops."""

    def __init__(self, batch: int, seed: int) -> None:
        self.by_sentence, self.by_token, self.by_step = (jnp.asarray(table) for table in tables(batch, seed))
        self.sentence = jnp.arange(batch)
        self.step = jnp.zeros((), jnp.int32)
        self.rows = batch

    def repeat_rows(self, k: int) -> None:
        self.sentence = jnp.repeat(self.sentence, k)
        self.rows *= k

    def next_logits(self, last):
        TRACES.append(self.rows)
        token = jnp.zeros(self.rows, jnp.int32) if last is None else last
        logits = self.by_sentence[self.sentence] + self.by_token[token] + self.by_step[self.step]
        self.step = self.step + 1
        return logits

    def follow(self, rows, sentences_left: bool) -> None:
        assert not sentences_left
        self.sentence = self.sentence[rows]


def both_beam_loops(batch, seed, limits, **options):
    ours, theirs = FlaxTable(batch, seed), TorchTable(batch, seed)
    ours.repeat_rows(options["beam_size"])
    theirs.repeat_rows(options["beam_size"])
    return (flax_search.beam_loop(ours, np.array(limits), **options),
            torch_search.beam_loop(theirs, torch.tensor(limits), **options))


def assert_same_hypotheses(ours, theirs) -> None:
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs):
        assert [h.tokens for h in mine] == [h.tokens for h in reference]
        assert [h.ended for h in mine] == [h.ended for h in reference]
        np.testing.assert_allclose([h.score for h in mine], [h.score for h in reference], atol=1e-5, rtol=0)
        np.testing.assert_allclose([h.log_prob for h in mine], [h.log_prob for h in reference], atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------
# The loops
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("beam_size", [1, 2, 4])
@pytest.mark.parametrize("alpha", [0.0, 0.6, -0.5])
@pytest.mark.parametrize("rule, stopping", [("gnmt", "exact"), ("power", "current_length"), ("power", "k_finished")])
def test_beam_loop_equals_torch(beam_size, alpha, rule, stopping) -> None:
    ended = cut = 0
    for seed in range(3):
        ours, theirs = both_beam_loops(
            4, seed, [12, 5, 9, 1], beam_size=beam_size, end_id=END, pad_id=PAD, alpha=alpha,
            length_penalty_rule=rule, stopping=stopping, n_best=beam_size,
        )
        assert_same_hypotheses(ours, theirs)
        ended += sum(h.ended for sentence in ours for h in sentence)
        cut += sum(not h.ended for sentence in ours for h in sentence)
    assert ended and cut  # hypotheses end with the end token and at the limits: the parity can fail


def test_beam_loop_without_end_token_runs_to_the_limits() -> None:
    ours, theirs = both_beam_loops(3, 7, [4, 6, 2], beam_size=3, end_id=None, pad_id=PAD, alpha=0.6, n_best=2)
    assert_same_hypotheses(ours, theirs)
    assert [len(sentence[0].tokens) for sentence in ours] == [4, 6, 2]


def test_beam_loop_is_compiled_once_for_the_whole_search() -> None:
    table = FlaxTable(2, 3)
    table.repeat_rows(2)
    TRACES.clear()  # shapes no other test runs: nothing compiled yet
    flax_search.beam_loop(table, np.array([10, 7]), 2, END, PAD, 0.9)
    assert len(TRACES) == 2  # the first step and the loop's step, whatever the number of steps


@pytest.mark.parametrize("limits", [[6, 6, 6], [3, 7, 0]])
@pytest.mark.parametrize("end_id", [END, None])
@pytest.mark.parametrize("stream", [False, True])
def test_decode_loop_equals_torch(limits, end_id, stream) -> None:
    received = []
    streamer = (lambda tokens: received.append(np.asarray(tokens))) if stream else None
    ours = flax_search.decode_loop(FlaxTable(3, 1), np.array(limits), flax_search.greedy_choice, end_id, PAD,
                                   streamer=streamer)
    theirs = torch_search.decode_loop(TorchTable(3, 1), torch.tensor(limits), torch_search.greedy_choice,
                                      end_id, PAD)
    assert np.asarray(ours).tolist() == theirs.tolist()
    if stream:
        assert np.stack(received, axis=1).tolist() == theirs.tolist()


def test_finished_rows_stop_changing_and_the_loop_stops_when_all_are() -> None:
    table = FlaxTable(3, 1)
    TRACES.clear()  # shapes no other test runs: nothing compiled yet
    tokens = np.asarray(flax_search.decode_loop(table, np.array([30, 30, 30]), flax_search.greedy_choice, END, PAD))
    assert tokens.shape[1] < 30  # every row emitted the end token before its limit
    for row in tokens:
        (ends,) = np.flatnonzero(row == END)[:1]
        assert (row[ends + 1:] == PAD).all()
    assert tokens[:, -1].tolist().count(END) >= 1  # the loop stopped at the last row's end
    assert len(TRACES) == 2  # the first step and the loop's step, however many steps ran


def test_decode_loop_of_nothing() -> None:
    tokens = flax_search.decode_loop(FlaxTable(2, 0), np.array([0, 0]), flax_search.greedy_choice, END, PAD)
    assert tuple(tokens.shape) == (2, 0)


# --------------------------------------------------------------------------------------
# The token choosers
# --------------------------------------------------------------------------------------


def random_logits(seed: int, rows: int = 5, vocab: int = 50) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(rows, vocab)) * 3).astype(np.float32)


def mass_before(logits: np.ndarray) -> np.ndarray:
    """(r, v) the probability of the tokens more likely than each token (float64)."""
    probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True).astype(np.float64))
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    order = np.argsort(-logits, axis=-1, kind="stable")
    ranked = np.take_along_axis(probabilities, order, axis=-1)
    before = np.cumsum(ranked, axis=-1) - ranked
    return np.take_along_axis(before, np.argsort(order, axis=-1), axis=-1)


def test_filters_equal_torch() -> None:
    logits = random_logits(0)
    tied = np.round(logits)  # many equal logits: ties are broken in vocabulary order by both
    for values in (logits, tied):
        for k in (1, 3, 10, 50, 60):
            ours = np.asarray(flax_search.top_k_filter(values, k))
            np.testing.assert_array_equal(ours, torch_search.top_k_filter(torch.from_numpy(values), k).numpy())
        for p in (0.05, 0.3, 0.5, 0.9, 0.999, 1.0):
            ours = np.asarray(flax_search.top_p_filter(values, p))
            theirs = torch_search.top_p_filter(torch.from_numpy(values), p).numpy()
            differ = np.isfinite(ours) != np.isfinite(theirs)
            # float32 sums in another order: only a token whose mass before it is p itself may differ
            assert np.all(np.abs(mass_before(values)[differ] - p) < 1e-6)
            np.testing.assert_array_equal(ours[~differ], theirs[~differ])
        for temperature, k, p in [(0.7, 10, 0.9), (1.3, 50, 0.5), (1e-30, 3, 0.5), (1e30, 5, 0.8)]:
            scores = values / temperature
            ours = np.asarray(flax_search.ranked_filter(values, scores, k, p))
            theirs = torch_search.ranked_filter(torch.from_numpy(values), torch.from_numpy(scores), k, p).numpy()
            np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))


def test_top_p_keeps_the_smallest_set_that_reaches_p() -> None:
    logits = np.log(np.array([[0.125, 0.5, 0.125, 0.25]], dtype=np.float32))  # shuffled 1/2, 1/4, 1/8, 1/8

    def kept(p):
        return set(np.flatnonzero(np.isfinite(np.asarray(flax_search.top_p_filter(logits, p))[0])).tolist())

    assert kept(0.3) == {1}
    assert kept(0.6) == {1, 3}
    assert kept(0.8) == {1, 3, 0}  # ties keep vocabulary order
    assert kept(0.9) == kept(1.0) == {0, 1, 2, 3}


def test_greedy_choice_takes_the_first_of_equal_logits() -> None:
    logits = np.array([[0.0, 3.0, 3.0, 1.0], [5.0, 5.0, 5.0, 5.0]], dtype=np.float32)
    assert np.asarray(flax_search.greedy_choice(logits)).tolist() == [1, 0]


def test_sampling_is_reproducible_with_a_key_and_filtered() -> None:
    logits = jnp.asarray(np.repeat(random_logits(1, rows=1, vocab=20), 200, axis=0) / 3)  # (200, 20)

    def draw(seed, **options):
        return np.asarray(flax_search.sampling_choice(**options)(logits, jax.random.key(seed)))

    first = draw(3, temperature=1.5)
    assert first.tolist() == draw(3, temperature=1.5).tolist()
    assert first.tolist() != draw(4, temperature=1.5).tolist()
    assert len(set(first.tolist())) > 3  # it does sample
    greedy = np.asarray(flax_search.greedy_choice(logits))
    assert draw(0, top_k=1).tolist() == greedy.tolist()
    assert draw(0, temperature=1e-30).tolist() == greedy.tolist()  # the limit of a tiny temperature
    top3 = set(np.argsort(-np.asarray(logits)[0], kind="stable")[:3].tolist())
    assert set(draw(5, top_k=3).tolist()) <= top3
    nucleus = set(np.flatnonzero(np.isfinite(np.asarray(flax_search.top_p_filter(logits, 0.5))[0])).tolist())
    assert set(draw(6, top_p=0.5).tolist()) <= nucleus
    assert len(nucleus) > 1 and len(set(draw(6, top_p=0.5).tolist())) > 1
    # the same settings are one chooser for the compiled loops (compiled once, not per call)
    assert flax_search.sampling_choice(1.5, 3) == flax_search.sampling_choice(1.5, 3)
