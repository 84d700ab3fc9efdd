"""The search: which token each row takes next, greedy, sampled, or by beam search.

The Flax NNX twin of :mod:`taa.torch.search`. The loops drive a "steps" object
(:class:`Steps`, made in :mod:`taa.flax.generate` for an encoder-decoder or a
decoder-only model) that answers one question, "the next-token logits of every row", and
follows the rows when beam search reorders them. They know nothing else about the model.

- :func:`decode_loop`: one token per row and step, the most likely one (greedy) or one
  drawn with a temperature, top-k (Fan et al. 2018, "Hierarchical Neural Story
  Generation", §5.4) and top-p / nucleus filtering (Holtzman et al. 2020, "The Curious
  Case of Neural Text Degeneration", §3.1);
- :func:`beam_loop`: beam search ranked by log P(Y | X) / lp(Y), lp from
  :func:`taa.decoding.length_penalty`.

How the loops run. XLA compiles a program for each shape it is given, so every shape
stays fixed from the first step to the last: the KV cache holds the longest sequence from
the start (its ``capacity``), the output is one (b, t_max) array filled column by column,
and beam search keeps every sentence in the batch to the end (a sentence that is done
keeps its finished hypotheses, and its beams run on unread, instead of leaving the batch
and changing the shapes). Then the whole search is one program compiled by ``nnx.jit``:
the first step (the prompt, or the start token) and every later step in one
``jax.lax.while_loop`` (``nnx.while_loop``), which stops when every row is done. That is
the fastest and the simplest way: the step is traced and compiled once per shape (plus
the first step), never per token, and the device runs the whole search without the host
between steps (no dispatch per token, no read of "is every row done?"); a step called
from Python would pay both, and NNX's traversal of the model's graph, at every token. A
``streamer``, which must see each token as it is chosen, is called from inside the loop
(``jax.experimental.io_callback``). The steps object is an NNX graph node (model, cache
and arrays), which ``nnx.jit`` and ``nnx.while_loop`` carry and update in place.

The book of beam search (each beam's log P, the finished hypotheses and their tokens) is
a few small float32 and int32 arrays on the device, ranked as torch ranks them
(``jax.lax.top_k``); the finished hypotheses come to the host once, at the end.

Notation: ``b`` sentences (prompts), ``k`` beam size, ``t`` decoded tokens, ``v``
vocabulary, ``r`` rows the model runs (``b``, or ``b * k`` in beam search).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple, Optional, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import io_callback

from taa.decoding import length_penalty

TOKEN_DTYPE = jnp.int32  # token ids on the device

Chooser = Callable[[jax.Array, jax.Array], jax.Array]  # (logits (r, v), key) -> tokens (r,)


class Steps(Protocol):
    """What the search loops ask of a model. An implementation is an NNX graph node
    (``nnx.Pytree``), so that the compiled loops carry it; its methods run traced."""

    rows: int  # rows the model runs at each step

    def next_logits(self, last: Optional[jax.Array]) -> jax.Array:
        """The next-token logits (r, v) after feeding ``last`` (r,), the tokens chosen at the
        previous step (None at the first step: the start token, or the prompt)."""

    def follow(self, rows: jax.Array, sentences_left: bool) -> None:
        """Keep rows ``rows`` (int32 indices into the current rows) for the next step; beam
        search calls it when beams are reordered. Here sentences never leave the batch
        (``sentences_left`` is always False): the beams of a sentence trade places only
        among themselves."""


# --------------------------------------------------------------------------------------
# Choosing the next token: greedy, or sampling with temperature, top-k and top-p
# --------------------------------------------------------------------------------------


def greedy_choice(logits: jax.Array, key: Optional[jax.Array] = None) -> jax.Array:
    """(r, v) -> (r,) the most likely token of each row (the first of equal logits).
    ``key`` is ignored: every chooser takes one."""
    return jnp.argmax(logits, axis=-1).astype(TOKEN_DTYPE)


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Keep the k largest logits of each row (Fan et al. 2018), -inf elsewhere: exactly k,
    ties at the k-th value taken in vocabulary order (top-k 1 keeps the token
    :func:`greedy_choice` takes)."""
    return ranked_filter(logits, logits, top_k=k)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
    """Nucleus filtering (Holtzman et al. 2020, §3.1): keep the smallest set of most likely
    tokens whose probability reaches ``p``, -inf elsewhere.

    Sorted by probability, a token is kept when the tokens before it hold less than p;
    the most likely token is always kept.
    """
    return ranked_filter(logits, logits, top_p=p)


def ranked_filter(logits: jax.Array, scores: jax.Array, top_k: Optional[int] = None,
                  top_p: Optional[float] = None) -> jax.Array:
    """``scores`` (r, v), -inf outside each row's top-k tokens, then outside the nucleus of
    probability ``top_p`` of what is left (softmax of ``scores``), the tokens ranked by
    ``logits``: the model's own order, in vocabulary order among equal logits.

    ``scores`` are the logits divided by a temperature; the order is read from the logits
    so that top-k 1 is always the greedy token whatever the temperature (see
    :func:`taa.torch.search.ranked_filter`).
    """
    logits, scores = jnp.asarray(logits), jnp.asarray(scores)
    vocab = logits.shape[-1]
    keep_k = top_k is not None and top_k < vocab
    keep_p = top_p is not None and top_p < 1.0
    if not keep_k and not keep_p:
        return scores
    order = jnp.argsort(-logits, axis=-1, stable=True)  # (r, v): most likely first, ties in vocabulary order
    rank = jnp.arange(vocab)  # (v,) the place of each column of ``order``
    drop = jnp.broadcast_to(rank >= (top_k if keep_k else vocab), order.shape)  # (r, v), in ranked order
    if keep_p:
        ranked = jnp.where(drop, -jnp.inf, jnp.take_along_axis(scores, order, axis=-1))
        probabilities = jax.nn.softmax(ranked.astype(jnp.promote_types(ranked.dtype, jnp.float32)), axis=-1)
        mass_before = jnp.cumsum(probabilities, axis=-1) - probabilities  # the probability of the tokens before
        drop = (drop | (mass_before >= top_p)) & (rank > 0)  # the most likely token is always kept
    rows = jnp.arange(order.shape[0])[:, None]  # (r, 1)
    dropped = jnp.zeros(order.shape, bool).at[rows, order].set(drop)  # back to vocabulary order
    return jnp.where(dropped, -jnp.inf, scores)


@dataclass(frozen=True)
class _Sampling:
    """The chooser of :func:`sampling_choice`: a frozen (hashable) value, so a compiled loop
    that samples with the same settings is compiled once, not once per call."""

    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None

    def __call__(self, logits: jax.Array, key: jax.Array) -> jax.Array:  # (r, v) -> (r,)
        logits = logits.astype(jnp.float32)
        scores = logits
        if self.temperature != 1.0:
            # Measured from each row's largest logit, which stays 0: a temperature so small
            # that the others divide to -inf leaves the most likely token, never inf - inf = nan.
            scores = scores - jnp.max(scores, axis=-1, keepdims=True)
            scores = jnp.where(scores == 0, scores, scores / self.temperature)
        scores = ranked_filter(logits, scores, self.top_k, self.top_p)
        # a categorical draw from softmax(scores): -inf is never drawn
        return jax.random.categorical(key, scores, axis=-1).astype(TOKEN_DTYPE)


def sampling_choice(temperature: float = 1.0, top_k: Optional[int] = None,
                    top_p: Optional[float] = None) -> Chooser:
    """A chooser that samples from softmax(logits / temperature), restricted to the top-k
    tokens and then to the nucleus of probability top_p (Hugging Face's order), both ranked
    by the logits themselves (:func:`ranked_filter`). JAX has no generator with a state:
    the chooser draws from the key it is given, and the loop gives each step its own key
    (split from the one the loop starts with). The values are
    :class:`~taa.decoding.DecodingConfig`'s, which checks them."""
    return _Sampling(temperature, top_k, top_p)


# --------------------------------------------------------------------------------------
# Greedy search and sampling: one token per row and step
# --------------------------------------------------------------------------------------


class _Rows(NamedTuple):
    """What greedy search and sampling carry from step to step."""

    output: jax.Array  # (b, t_max) the tokens so far, pad_id after them
    finished: jax.Array  # (b,) bool: the row emitted the end token or reached its limit
    last: jax.Array  # (b,) the tokens of the last step
    step: jax.Array  # () int32: steps taken
    key: jax.Array  # the key the next step draws from


class _Stops(NamedTuple):
    """When rows stop, as arrays: other limits or token ids compile nothing new."""

    limits: jax.Array  # (b,) int32 the most tokens of each row
    end_id: jax.Array  # () int32 the end token; -1: none
    pad_id: jax.Array  # () int32 what a finished row gets
    streamer: jax.Array  # () int32 the number of the loop's streamer in _STREAMERS


_STREAMERS: dict[int, Callable[[np.ndarray], None]] = {}  # the streamers of the loops running now, by number
_streamer_numbers = itertools.count()


def _stream(number: np.ndarray, tokens: np.ndarray) -> None:
    """On the host, from inside a compiled loop: hand a step's tokens to that loop's streamer."""
    _STREAMERS[int(number)](tokens)


def _choose_next(steps: Steps, rows: _Rows, stops: _Stops, first: bool, choose: Chooser, streams: bool) -> _Rows:
    """One step: every row's next token; a finished row gets ``pad_id`` and stays finished."""
    key, draw = (rows.key, None) if choose is greedy_choice else jax.random.split(rows.key)  # greedy draws nothing
    token = choose(steps.next_logits(None if first else rows.last), draw)  # (b,)
    token = jnp.where(rows.finished, stops.pad_id, token)
    if streams:  # the host sees the tokens as the device chooses them, in order
        io_callback(_stream, None, stops.streamer, token, ordered=True)
    output = rows.output.at[:, rows.step].set(token)
    finished = rows.finished | (rows.step + 1 >= stops.limits) | (token == stops.end_id)
    return _Rows(output, finished, token, rows.step + 1, key)


@partial(nnx.jit, static_argnames=("choose", "streams"))
def _decode_all(steps: Steps, rows: _Rows, stops: _Stops, *, choose: Chooser, streams: bool) -> _Rows:
    """The whole of :func:`decode_loop` as one program: the first step, then a while loop."""
    most = rows.output.shape[1]
    rows = _choose_next(steps, rows, stops, True, choose, streams)

    def going_on(carry) -> jax.Array:
        _, rows = carry
        return (rows.step < most) & ~jnp.all(rows.finished)

    def step(carry):
        steps, rows = carry
        return steps, _choose_next(steps, rows, stops, False, choose, streams)

    _, rows = nnx.while_loop(going_on, step, (steps, rows))
    return rows


def decode_loop(
    steps: Steps,
    limits: np.ndarray,
    choose: Chooser,
    end_id: Optional[int],
    pad_id: int,
    streamer: Optional[Callable[[np.ndarray], None]] = None,
    *,
    key: Optional[jax.Array] = None,
) -> jax.Array:
    """Run ``steps`` until every row has emitted ``end_id`` or reached its limit: -> (b, t).

    ``limits`` (b,) is the most tokens each row may produce (host integers). Each step
    appends every row's chosen token; a finished row gets ``pad_id``. ``choose(logits,
    key)`` picks the tokens (:func:`greedy_choice`, :func:`sampling_choice`); ``key`` (a
    ``jax.random`` key) is split into one key per step. ``streamer`` receives each step's
    (b,) tokens (a numpy array) as they are chosen.

    The whole loop is one compiled program. A streamer is called from inside it (an ordered
    ``io_callback`` after each step, through a table of the streamers of the loops running
    now), so the tokens reach it while the loop runs, and every streamer shares one program.
    """
    limits = np.asarray(limits, dtype=np.int64)
    batch = limits.shape[0]
    most = int(limits.max()) if batch else 0
    if most <= 0:
        return jnp.zeros((batch, 0), TOKEN_DTYPE)
    rows = _Rows(
        output=jnp.full((batch, most), pad_id, TOKEN_DTYPE),
        finished=jnp.asarray(limits <= 0),
        last=jnp.zeros((batch,), TOKEN_DTYPE),
        step=jnp.zeros((), jnp.int32),
        key=jax.random.key(0) if key is None else key,
    )
    number = next(_streamer_numbers) % 2**31
    stops = _Stops(
        limits=jnp.asarray(limits.astype(np.int32)),
        end_id=jnp.asarray(-1 if end_id is None else end_id, jnp.int32),
        pad_id=jnp.asarray(pad_id, TOKEN_DTYPE),
        streamer=jnp.asarray(number, jnp.int32),
    )
    if streamer is not None:
        _STREAMERS[number] = streamer
    try:
        rows = _decode_all(steps, rows, stops, choose=choose, streams=streamer is not None)
        produced = int(rows.step)  # waits for the loop, and so for its last streamed tokens
    finally:
        _STREAMERS.pop(number, None)
    return rows.output[:, :produced]


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


class _Finished(NamedTuple):
    """The k best finished hypotheses of each sentence, best first (device arrays)."""

    scores: jax.Array  # (b, k) float32 normalised scores; -inf where a slot is empty
    log_probs: jax.Array  # (b, k) float32
    lengths: jax.Array  # (b, k) int32 tokens to return: the end token left out
    ended: jax.Array  # (b, k) bool
    tokens: jax.Array  # (b, k, t_max) the decoded tokens, the end token included

    @classmethod
    def empty(cls, batch: int, beam_size: int, width: int) -> _Finished:
        scores = jnp.full((batch, beam_size), -jnp.inf, jnp.float32)
        zeros = jnp.zeros((batch, beam_size), jnp.int32)
        return cls(scores, jnp.zeros_like(scores), zeros, zeros.astype(bool),
                   jnp.zeros((batch, beam_size, width), TOKEN_DTYPE))

    def merge(self, scores, log_probs, lengths, ended, tokens) -> _Finished:
        """The k best of the old finished hypotheses and the new ones (b, k), (b, k, t_max)."""
        all_scores = jnp.concatenate([self.scores, scores], axis=1)  # (b, 2k)
        best_scores, best = jax.lax.top_k(all_scores, self.scores.shape[1])  # (b, k), best first

        def pick(old, new):
            both = jnp.concatenate([old, new], axis=1)  # (b, 2k, ...)
            return jnp.take_along_axis(both, best.reshape(best.shape + (1,) * (both.ndim - 2)), axis=1)

        return _Finished(best_scores, pick(self.log_probs, log_probs), pick(self.lengths, lengths),
                         pick(self.ended, ended), pick(self.tokens, tokens))

    def hypotheses(self, n_best: int) -> list[list[Hypothesis]]:
        """Each sentence's best ``n_best`` hypotheses, best first: one copy to the host."""
        scores, log_probs, lengths, ended, tokens = (np.asarray(part).tolist() for part in self)
        return [
            [
                Hypothesis(tokens[s][i][: lengths[s][i]], scores[s][i], log_probs[s][i], ended[s][i])
                for i in range(n_best)
                if scores[s][i] > -math.inf
            ]
            for s in range(len(scores))
        ]


class _Beams(NamedTuple):
    """What beam search carries from step to step."""

    scores: jax.Array  # (b, k) float32 log P of each beam
    tokens: jax.Array  # (b, k, t_max) each beam's tokens so far
    last: jax.Array  # (b*k,) the tokens of the last step
    finished: _Finished  # each sentence's finished hypotheses
    done: jax.Array  # (b,) bool: the sentence is done; its finished hypotheses no longer change
    step: jax.Array  # () int32: steps taken


class _Rules(NamedTuple):
    """The numbers beam search ranks and stops by (float32, as torch's), as arrays: other
    limits, end tokens or length penalties compile nothing new."""

    limits: jax.Array  # (b,) int32 the most tokens of each sentence
    end_id: jax.Array  # () int32 the end token; -1: none
    n_best: jax.Array  # () int32 how many finished hypotheses count for the exact stopping rule
    step_penalty: jax.Array  # (t_max + 2,) lp(s) at index s
    limit_penalty: jax.Array  # (b,) lp(limit) of each sentence


def _beam_step(steps: Steps, beams: _Beams, rules: _Rules, first: bool, k: int, stopping: str) -> _Beams:
    """One step of beam search, torch's rules (:func:`taa.torch.search.beam_loop`) on fixed shapes."""
    step = beams.step + 1  # this step's 1-based number: the length of what it produces
    batch = beams.scores.shape[0]
    logits = steps.next_logits(None if first else beams.last)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # (b*k, v)
    vocab = log_probs.shape[-1]
    # Every beam extended by every token; the 2k best per sentence, best first.
    candidates = (beams.scores.reshape(-1, 1) + log_probs).reshape(batch, k * vocab)  # (b, k*v)
    top_scores, top_ids = jax.lax.top_k(candidates, min(2 * k, k * vocab))  # (b, 2k)
    parents, words = top_ids // vocab, (top_ids % vocab).astype(TOKEN_DTYPE)  # (b, 2k): beam, token
    ends = (step >= rules.limits)[:, None] | (words == rules.end_id)  # (b, 2k)

    # 1. Candidates among the k best that end are finished hypotheses.
    ending = ends[:, :k] & (top_scores[:, :k] > -jnp.inf)  # (b, k)
    emitted_end = words[:, :k] == rules.end_id  # (b, k)
    ending_tokens = jnp.take_along_axis(beams.tokens, parents[:, :k, None], axis=1)  # (b, k, t_max)
    merged = beams.finished.merge(
        scores=jnp.where(ending, top_scores[:, :k] / rules.step_penalty[step], -jnp.inf),
        log_probs=top_scores[:, :k],
        lengths=step - emitted_end.astype(jnp.int32),
        ended=emitted_end,
        tokens=ending_tokens.at[:, :, step - 1].set(words[:, :k]),
    )
    # A sentence already done keeps what it had (torch takes it out of the batch).
    finished = jax.tree.map(
        lambda old, new: jnp.where(beams.done.reshape((batch,) + (1,) * (old.ndim - 1)), old, new),
        beams.finished, merged,
    )

    # 2. The k best candidates that do not end are the next beams.
    scores, keep = jax.lax.top_k(jnp.where(ends, -jnp.inf, top_scores), k)  # (b, k), best first
    parents, words = jnp.take_along_axis(parents, keep, axis=1), jnp.take_along_axis(words, keep, axis=1)

    # 3. A sentence is done when its best live beam cannot beat its finished ones.
    if stopping == "exact":
        largest_penalty = jnp.maximum(rules.limit_penalty, rules.step_penalty[step + 1])
        threshold = jnp.take(finished.scores, rules.n_best - 1, axis=1)  # (b,) the n_best-th best
    else:  # Hugging Face's rules: k finished hypotheses, a bound from the current length
        largest_penalty = rules.step_penalty[step]
        threshold = finished.scores[:, k - 1]
    best_possible = scores[:, 0] / largest_penalty  # (b,)
    done = (step >= rules.limits) | ((threshold > -jnp.inf) & (threshold >= best_possible))
    if stopping == "k_finished":
        done = done | (threshold > -jnp.inf)

    # Beams only move within their sentence: the steps follow them.
    steps.follow((parents + jnp.arange(batch)[:, None] * k).reshape(-1).astype(jnp.int32), False)
    tokens = jnp.take_along_axis(beams.tokens, parents[:, :, None], axis=1).at[:, :, step - 1].set(words)
    return _Beams(scores, tokens, words.reshape(-1), finished, beams.done | done, step)


@partial(nnx.jit, static_argnames=("k", "stopping"))
def _beam_all(steps: Steps, beams: _Beams, rules: _Rules, *, k: int, stopping: str) -> _Finished:
    """The whole of :func:`beam_loop` as one program: the first step, then a while loop."""
    options = dict(k=k, stopping=stopping)
    beams = _beam_step(steps, beams, rules, True, **options)

    def going_on(carry) -> jax.Array:
        _, beams = carry
        return ~jnp.all(beams.done)

    def step(carry):
        steps, beams = carry
        return steps, _beam_step(steps, beams, rules, False, **options)

    _, beams = nnx.while_loop(going_on, step, (steps, beams))
    return beams.finished


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
    by the ``stopping`` rule (``"exact"``, ``"current_length"``, ``"k_finished"``).

    Shapes stay fixed (the module's "How the loops run"): a done sentence stays in the
    batch with its finished hypotheses frozen, and the loop ends when every sentence is
    done. ``pad_id`` is unused here (a hypothesis's tokens end at its length); it is kept
    for torch's signature. lp of every step and of every limit is computed once on the
    host, in float32, as torch divides by it.
    """
    k = beam_size
    limits = np.asarray(limits, dtype=np.int64)
    batch = limits.shape[0]
    most = int(limits.max()) if batch else 0
    if batch == 0 or most <= 0:
        return [[] for _ in range(batch)]

    def lp(length):  # lp(Y) of a hypothesis of ``length`` tokens
        return length_penalty(length, alpha, length_penalty_rule)

    with np.errstate(divide="ignore", over="ignore"):
        step_penalty = np.array([1.0] + [lp(step) for step in range(1, most + 2)], dtype=np.float32)
        limit_penalty = np.asarray(lp(limits.astype(np.float32)), dtype=np.float32)
    rules = _Rules(
        limits=jnp.asarray(limits.astype(np.int32)),
        end_id=jnp.asarray(-1 if end_id is None else end_id, jnp.int32),
        n_best=jnp.asarray(n_best, jnp.int32),
        step_penalty=jnp.asarray(step_penalty),
        limit_penalty=jnp.asarray(limit_penalty),
    )
    first_beam = np.full((batch, k), -np.inf, dtype=np.float32)
    first_beam[:, 0] = 0.0  # one real beam to start with: the others are copies of it
    beams = _Beams(
        scores=jnp.asarray(first_beam),
        tokens=jnp.zeros((batch, k, most), TOKEN_DTYPE),
        last=jnp.zeros((batch * k,), TOKEN_DTYPE),
        finished=_Finished.empty(batch, k, most),
        done=jnp.zeros((batch,), bool),
        step=jnp.zeros((), jnp.int32),
    )
    finished = _beam_all(steps, beams, rules, k=k, stopping=stopping)
    return finished.hypotheses(n_best)
