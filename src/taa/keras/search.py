"""The search: which token each row takes next, greedy, sampled, or by beam search.

The Keras twin of :mod:`taa.torch.search`. The loops drive a "steps" object
(:class:`Steps`, made in :mod:`taa.keras.generate` for an encoder-decoder or a
decoder-only model) that answers one question, "the next-token logits of every row", and
follows the rows when beam search reorders them. They know nothing else about the model.

- :func:`decode_loop`: one token per row and step, the most likely one (greedy) or one
  drawn with a temperature, top-k (Fan et al. 2018, "Hierarchical Neural Story
  Generation", §5.4) and top-p / nucleus filtering (Holtzman et al. 2020, "The Curious
  Case of Neural Text Degeneration", §3.1);
- :func:`beam_loop`: beam search ranked by log P(Y | X) / lp(Y), lp from
  :func:`taa.decoding.length_penalty`.

The model's work (the logits, their log-softmax, the 2k best candidates of each sentence)
runs in ``keras.ops`` on the backend's device; the book of beam search (which beams live,
the finished hypotheses, their tokens) is a few small numpy arrays on the host, in
float32 like torch's, so the two rank and stop alike. Tokens are int32.

Notation: ``b`` sentences (prompts), ``k`` beam size, ``t`` decoded tokens, ``v``
vocabulary, ``r`` rows the model runs (``b``, or ``b * k`` in beam search).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import keras
import numpy as np
from keras import ops

from taa.decoding import length_penalty

Tensor = Any  # a backend tensor (tf.Tensor, jax.Array): what keras.ops takes and gives

TOKEN_DTYPE = "int32"  # token ids on the device


class Steps(Protocol):
    """What the search loops ask of a model."""

    rows: int  # rows the model runs at each step

    def next_logits(self, last: Optional[Tensor]) -> Tensor:
        """The next-token logits (r, v) after feeding ``last`` (r,), the tokens chosen at the
        previous step (None at the first step: the start token, or the prompt)."""

    def follow(self, rows: Tensor, sentences_left: bool) -> None:
        """Keep rows ``rows`` (int32 indices into the current rows) for the next step; beam
        search calls it when beams are reordered, ``sentences_left`` when whole sentences left."""


# --------------------------------------------------------------------------------------
# Choosing the next token: greedy, or sampling with temperature, top-k and top-p
# --------------------------------------------------------------------------------------


def greedy_choice(logits: Tensor) -> Tensor:
    """(r, v) -> (r,) the most likely token of each row (the first of equal logits)."""
    return ops.cast(ops.argmax(logits, axis=-1), TOKEN_DTYPE)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of each row (Fan et al. 2018), -inf elsewhere: exactly k,
    ties at the k-th value taken in vocabulary order (top-k 1 keeps the token
    :func:`greedy_choice` takes)."""
    return ranked_filter(logits, logits, top_k=k)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2020, §3.1): keep the smallest set of most likely
    tokens whose probability reaches ``p``, -inf elsewhere.

    Sorted by probability, a token is kept when the tokens before it hold less than p;
    the most likely token is always kept.
    """
    return ranked_filter(logits, logits, top_p=p)


def ranked_filter(logits: Tensor, scores: Tensor, top_k: Optional[int] = None, top_p: Optional[float] = None) -> Tensor:
    """``scores`` (r, v), -inf outside each row's top-k tokens, then outside the nucleus of
    probability ``top_p`` of what is left (softmax of ``scores``), the tokens ranked by
    ``logits``: the model's own order, in vocabulary order among equal logits.

    ``scores`` are the logits divided by a temperature; the order is read from the logits
    so that top-k 1 is always the greedy token whatever the temperature (see
    :func:`taa.torch.search.ranked_filter`).
    """
    logits, scores = ops.convert_to_tensor(logits), ops.convert_to_tensor(scores)
    vocab = logits.shape[-1]
    keep_k = top_k is not None and top_k < vocab
    keep_p = top_p is not None and top_p < 1.0
    if not keep_k and not keep_p:
        return scores
    order = ops.argsort(-logits, axis=-1)  # (r, v): most likely first; a stable sort keeps ties in vocabulary order
    rank = ops.arange(vocab)[None, :]  # (1, v)
    drop = ops.broadcast_to(ops.greater_equal(rank, top_k if keep_k else vocab), ops.shape(order))  # (r, v) ranked
    if keep_p:
        ranked = ops.where(drop, -math.inf, ops.take_along_axis(scores, order, axis=-1))
        probabilities = ops.softmax(ops.cast(ranked, "float32"), axis=-1)
        mass_before = ops.cumsum(probabilities, axis=-1) - probabilities  # the probability of the tokens before
        drop = ops.logical_or(drop, ops.greater_equal(mass_before, top_p))
        drop = ops.logical_and(drop, ops.greater(rank, 0))  # the most likely token is always kept
    back = ops.argsort(order, axis=-1)  # (r, v): each token's rank, to return to vocabulary order
    return ops.where(ops.take_along_axis(drop, back, axis=-1), -math.inf, scores)


def sampling_choice(
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    generator: Optional[keras.random.SeedGenerator] = None,
) -> Callable[[Tensor], Tensor]:
    """A chooser that samples from softmax(logits / temperature), restricted to the top-k
    tokens and then to the nucleus of probability top_p (Hugging Face's order), both ranked
    by the logits themselves (:func:`ranked_filter`). The draws come from ``generator``
    (None: Keras's global one). The values are :class:`~taa.decoding.DecodingConfig`'s,
    which checks them."""

    def choose(logits: Tensor) -> Tensor:  # (r, v) -> (r,)
        logits = ops.cast(logits, "float32")
        scores = logits
        if temperature != 1.0:
            # Measured from each row's largest logit, which stays 0: a temperature so small
            # that the others divide to -inf leaves the most likely token, never inf - inf = nan.
            scores = scores - ops.max(scores, axis=-1, keepdims=True)
            scores = ops.where(ops.equal(scores, 0), scores, scores / temperature)
        scores = ranked_filter(logits, scores, top_k, top_p)
        # categorical draws from softmax(scores): the logits themselves, -inf never drawn
        return ops.cast(keras.random.categorical(scores, 1, seed=generator)[:, 0], TOKEN_DTYPE)

    return choose


# --------------------------------------------------------------------------------------
# Greedy search and sampling: one token per row and step
# --------------------------------------------------------------------------------------


def decode_loop(
    steps: Steps,
    limits: np.ndarray,
    choose: Callable[[Tensor], Tensor],
    end_id: Optional[int],
    pad_id: int,
    streamer: Optional[Callable[[Tensor], None]] = None,
) -> Tensor:
    """Run ``steps`` until every row has emitted ``end_id`` or reached its limit: -> (b, t).

    ``limits`` (b,) is the most tokens each row may produce (host integers). Each step
    appends every row's chosen token; a finished row gets ``pad_id``. ``streamer``
    receives each step's (b,) tokens as they are chosen. The tokens stay on the device;
    the host reads one boolean per step (whether every row is done), and only when rows
    can finish at different steps.
    """
    limits = np.asarray(limits, dtype=np.int64)
    batch = limits.shape[0]
    most = int(limits.max()) if batch else 0
    # Book-keeping only when rows can finish at different steps.
    track = end_id is not None or bool((limits != most).any())
    finished = ops.convert_to_tensor(limits <= 0)  # (b,)
    device_limits = ops.convert_to_tensor(limits.astype(np.int32))
    last: Optional[Tensor] = None
    columns: list[Tensor] = []
    for step in range(most):
        if track and bool(ops.convert_to_numpy(ops.all(finished))):
            break
        token = choose(steps.next_logits(last))  # (b,)
        if track:
            token = ops.where(finished, ops.cast(pad_id, TOKEN_DTYPE), token)
        columns.append(token)
        if streamer is not None:
            streamer(token)
        if track:
            finished = ops.logical_or(finished, ops.greater_equal(step + 1, device_limits))
            if end_id is not None:
                finished = ops.logical_or(finished, ops.equal(token, end_id))
        last = token
    if not columns:
        return ops.zeros((batch, 0), dtype=TOKEN_DTYPE)
    return ops.stack(columns, axis=1)  # (b, t)


# --------------------------------------------------------------------------------------
# Beam search
# --------------------------------------------------------------------------------------


@dataclass
class Hypothesis:
    """One finished hypothesis of beam search."""

    tokens: list[int]  # the decoded tokens, without the start token and the end token
    score: float  # log P(Y | X) / lp(Y): what beam search ranks by
    log_prob: float  # log P(Y | X), the end token's probability included when it was emitted
    ended: bool  # True: it emitted the end token; False: it was cut at the length limit


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """(n, m) -> (n, k) the columns of the k largest scores of each row, best first, equal
    scores in column order."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@dataclass
class _Finished:
    """The k best finished hypotheses of each live sentence, best first (host arrays)."""

    scores: np.ndarray  # (b, k) float32 normalised scores; -inf where a slot is empty
    log_probs: np.ndarray  # (b, k) float32
    lengths: np.ndarray  # (b, k) tokens to return: the end token left out
    ended: np.ndarray  # (b, k) bool
    tokens: np.ndarray  # (b, k, t) the decoded tokens, the end token included

    @classmethod
    def empty(cls, batch: int, beam_size: int) -> _Finished:
        scores = np.full((batch, beam_size), -np.inf, dtype=np.float32)
        zeros = np.zeros((batch, beam_size), dtype=np.int64)
        tokens = np.zeros((batch, beam_size, 0), dtype=np.int64)
        return cls(scores, np.zeros_like(scores), zeros, zeros.astype(bool), tokens)

    def select(self, sentences: np.ndarray) -> _Finished:
        return _Finished(*(getattr(self, name)[sentences] for name in self.__dataclass_fields__))

    def merge(self, scores, log_probs, lengths, ended, tokens, pad_id: int) -> None:
        """Keep the k best of the old finished hypotheses and the new ones (b, k), (b, k, t)."""
        width = tokens.shape[-1] - self.tokens.shape[-1]
        old_tokens = np.pad(self.tokens, ((0, 0), (0, 0), (0, width)), constant_values=pad_id)
        all_scores = np.concatenate([self.scores, scores], axis=1)  # (b, 2k)
        best = _top(all_scores, self.scores.shape[1])  # (b, k), best first
        self.scores = np.take_along_axis(all_scores, best, axis=1)
        self.log_probs = np.take_along_axis(np.concatenate([self.log_probs, log_probs], axis=1), best, axis=1)
        self.lengths = np.take_along_axis(np.concatenate([self.lengths, lengths], axis=1), best, axis=1)
        self.ended = np.take_along_axis(np.concatenate([self.ended, ended], axis=1), best, axis=1)
        all_tokens = np.concatenate([old_tokens, tokens], axis=1)  # (b, 2k, t)
        self.tokens = np.take_along_axis(all_tokens, best[:, :, None], axis=1)

    def hypotheses(self, sentence: int, n_best: int) -> list[Hypothesis]:
        scores, log_probs = self.scores[sentence].tolist(), self.log_probs[sentence].tolist()
        lengths, ended = self.lengths[sentence].tolist(), self.ended[sentence].tolist()
        tokens = self.tokens[sentence].tolist()
        return [
            Hypothesis(tokens[i][: lengths[i]], scores[i], log_probs[i], ended[i])
            for i in range(n_best)
            if scores[i] > -math.inf
        ]


def beam_loop(
    steps: Steps,
    limits: np.ndarray,
    beam_size: int,
    end_id: Optional[int],
    pad_id: int,
    alpha: float,
    length_penalty_rule: str = "gnmt",
    stopping: str = "exact",
    n_best: int = 1,
) -> list[list[Hypothesis]]:
    """Beam search over ``steps`` whose rows already hold each sentence k times
    (``repeat_rows(k)``, row = sentence * k + beam). ``limits`` (b,) is the most tokens
    each sentence may produce. Returns each sentence's best ``n_best`` finished
    hypotheses, best first.

    The rules are :func:`taa.torch.search.beam_loop`'s, step for step: every beam is
    extended by every token; per sentence the 2k best candidates are ranked by log P;
    those of the k best that end leave the beam as finished hypotheses scored
    log P / lp(Y); the best k that do not end become the next beams; a sentence is done
    by the ``stopping`` rule (``"exact"``, ``"current_length"``, ``"k_finished"``), and
    done sentences leave the batch.

    Per step the device computes log-softmax and the 2k best candidates of each live
    sentence; only those (live, 2k) scores and ids come to the host.
    """
    k = beam_size
    limits = np.asarray(limits, dtype=np.int64)
    batch = limits.shape[0]

    def lp(length):  # lp(Y) of a hypothesis of ``length`` tokens
        return length_penalty(length, alpha, length_penalty_rule)

    sentences = np.arange(batch)  # original index of each live sentence
    beam_scores = np.full((batch, k), -np.inf, dtype=np.float32)  # (b, k) log P of each beam
    beam_scores[:, 0] = 0.0  # one real beam to start with: the others are copies of it
    tokens = np.zeros((batch * k, 0), dtype=np.int64)  # (b*k, t) decoded so far
    finished = _Finished.empty(batch, k)
    results: list[list[Hypothesis]] = [[] for _ in range(batch)]
    last: Optional[Tensor] = None

    for step in range(1, int(limits.max()) + 1 if batch else 1):
        live = beam_scores.shape[0]
        log_probs = ops.log_softmax(ops.cast(steps.next_logits(last), "float32"), axis=-1)  # (live*k, v)
        vocab = log_probs.shape[-1]
        # Every beam extended by every token; the 2k best per sentence, best first.
        candidates = ops.reshape(ops.convert_to_tensor(beam_scores.reshape(-1, 1)) + log_probs, (live, k * vocab))
        top_scores, top_ids = ops.top_k(candidates, min(2 * k, k * vocab))  # (live, 2k)
        top_scores = ops.convert_to_numpy(top_scores).astype(np.float32)
        top_ids = ops.convert_to_numpy(top_ids).astype(np.int64)
        parent_rows = top_ids // vocab + np.arange(live)[:, None] * k  # (live, 2k)
        words = top_ids % vocab  # (live, 2k)
        ends = np.broadcast_to((step >= limits)[:, None], words.shape)  # (live, 2k)
        if end_id is not None:
            ends = ends | (words == end_id)

        # 1. Candidates among the k best that end are finished hypotheses.
        ending = ends[:, :k] & (top_scores[:, :k] > -np.inf)  # (live, k)
        if ending.any():
            ending_tokens = np.concatenate([tokens[parent_rows[:, :k]], words[:, :k, None]], axis=2)  # (live, k, t)
            emitted_end = words[:, :k] == end_id if end_id is not None else np.zeros_like(ending)
            finished.merge(
                scores=np.where(ending, top_scores[:, :k] / np.float32(lp(step)), -np.inf).astype(np.float32),
                log_probs=top_scores[:, :k],
                lengths=step - emitted_end.astype(np.int64),
                ended=emitted_end,
                tokens=ending_tokens,
                pad_id=pad_id,
            )

        # 2. The k best candidates that do not end are the next beams.
        open_scores = np.where(ends, np.float32(-np.inf), top_scores)
        keep = _top(open_scores, k)  # (live, k), best first
        beam_scores = np.take_along_axis(open_scores, keep, axis=1)
        parent_rows, words = np.take_along_axis(parent_rows, keep, axis=1), np.take_along_axis(words, keep, axis=1)

        # 3. A sentence is done when its best live beam cannot beat its finished ones.
        if stopping == "exact":
            largest_penalty = np.maximum(lp(limits.astype(np.float32)), np.float32(lp(step + 1)))
            threshold = finished.scores[:, n_best - 1]  # (live,)
        else:  # Hugging Face's rules: k finished hypotheses, a bound from the current length
            largest_penalty = np.float32(lp(step))
            threshold = finished.scores[:, k - 1]
        best_possible = beam_scores[:, 0] / largest_penalty  # (live,)
        done = (step >= limits) | ((threshold > -np.inf) & (threshold >= best_possible))
        if stopping == "k_finished":
            done |= threshold > -np.inf
        sentences_left = bool(done.any())
        if sentences_left:
            for i in np.flatnonzero(done).tolist():
                results[int(sentences[i])] = finished.hypotheses(i, n_best)
            kept = np.flatnonzero(~done)  # live sentences that go on
            if kept.size == 0:
                break
            beam_scores, parent_rows, words = beam_scores[kept], parent_rows[kept], words[kept]
            limits, sentences, finished = limits[kept], sentences[kept], finished.select(kept)

        rows = parent_rows.reshape(-1)  # (live*k,) in the previous step's rows
        # Beams only move within their sentence: an encoder-decoder's memory and
        # cross-attention cache need to follow only when sentences leave.
        steps.follow(ops.convert_to_tensor(rows.astype(np.int32)), sentences_left)
        last = ops.convert_to_tensor(words.reshape(-1).astype(np.int32))  # (live*k,)
        tokens = np.concatenate([tokens[rows], words.reshape(-1, 1)], axis=1)  # (live*k, step)
    return results
