"""The search: which token each row takes next, greedy, sampled, or by beam search.

The loops here drive a "steps" object (:class:`Steps`, made in :mod:`taa.torch.generate`
for an encoder-decoder or a decoder-only model) that answers one question, "the
next-token logits of every row", and follows the rows when beam search reorders them.
They know nothing else about the model.

- :func:`decode_loop`: one token per row and step, the most likely one (greedy) or one
  drawn with a temperature, top-k (Fan et al. 2018, "Hierarchical Neural Story
  Generation", §5.4) and top-p / nucleus filtering (Holtzman et al. 2020, "The Curious
  Case of Neural Text Degeneration", §3.1);
- :func:`beam_loop`: beam search ranked by log P(Y | X) / lp(Y), lp from
  :func:`taa.decoding.length_penalty`.

Notation: ``b`` sentences (prompts), ``k`` beam size, ``t`` decoded tokens, ``v``
vocabulary, ``r`` rows the model runs (``b``, or ``b * k`` in beam search).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional, Protocol

import torch
from torch import Tensor

from taa.decoding import length_penalty


class Steps(Protocol):
    """What the search loops ask of a model."""

    rows: int  # rows the model runs at each step

    def next_logits(self, last: Optional[Tensor]) -> Tensor:
        """The next-token logits (r, v) after feeding ``last`` (r,), the tokens chosen at the
        previous step (None at the first step: the start token, or the prompt)."""

    def follow(self, rows: Tensor, sentences_left: bool) -> None:
        """Keep rows ``rows`` (indices into the current rows) for the next step; beam search
        calls it when beams are reordered, ``sentences_left`` when whole sentences left."""


# --------------------------------------------------------------------------------------
# Choosing the next token: greedy, or sampling with temperature, top-k and top-p
# --------------------------------------------------------------------------------------


def greedy_choice(logits: Tensor) -> Tensor:
    """(r, v) -> (r,) the most likely token of each row."""
    return logits.argmax(dim=-1)


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

    ``scores`` are the logits divided by a temperature. A huge temperature makes them all
    equal (and a tiny one all -inf but the largest), and an order read from them would keep
    every tie; read from the logits, top-k 1 is always the greedy token, and the nucleus
    always the most likely tokens, whatever the temperature.
    """
    keep_k = top_k is not None and top_k < logits.shape[-1]
    keep_p = top_p is not None and top_p < 1.0
    if not keep_k and not keep_p:
        return scores
    order = logits.argsort(dim=-1, descending=True, stable=True)  # (r, v): most likely first
    drop = torch.zeros(order.shape, dtype=torch.bool, device=order.device)  # in that order
    if keep_k:
        drop[..., top_k:] = True
    if keep_p:
        ranked = scores.gather(-1, order).masked_fill(drop, -math.inf)
        probabilities = ranked.to(torch.promote_types(ranked.dtype, torch.float32)).softmax(dim=-1)
        mass_before = probabilities.cumsum(dim=-1) - probabilities  # the probability of the tokens before
        drop |= mass_before >= top_p
        drop[..., 0] = False
    return scores.masked_fill(drop.scatter(-1, order, drop), -math.inf)  # back to vocabulary order


def sampling_choice(
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
) -> Callable[[Tensor], Tensor]:
    """A chooser that samples from softmax(logits / temperature), restricted to the top-k
    tokens and then to the nucleus of probability top_p (Hugging Face's order), both ranked
    by the logits themselves (:func:`ranked_filter`). The values are
    :class:`~taa.decoding.DecodingConfig`'s, which checks them."""

    def choose(logits: Tensor) -> Tensor:  # (r, v) -> (r,)
        logits = logits.float()
        scores = logits
        if temperature != 1.0:
            # Measured from each row's largest logit, which stays 0: a temperature so small
            # that the others divide to -inf (or that is 0 in float32) leaves the most likely
            # token, as the limit does, never inf - inf = nan.
            scores = scores - scores.amax(dim=-1, keepdim=True)
            scores = torch.where(scores == 0, scores, scores / temperature)
        scores = ranked_filter(logits, scores, top_k, top_p)
        probabilities = scores.softmax(dim=-1)
        return torch.multinomial(probabilities, 1, generator=generator)[:, 0]

    return choose


# --------------------------------------------------------------------------------------
# Greedy search and sampling: one token per row and step


def decode_loop(
    steps: Steps,
    limits: Tensor,
    choose: Callable[[Tensor], Tensor],
    end_id: Optional[int],
    pad_id: int,
    streamer: Optional[Callable[[Tensor], None]] = None,
) -> Tensor:
    """Run ``steps`` until every row has emitted ``end_id`` or reached its limit: -> (b, t).

    ``limits`` (b,) is the most tokens each row may produce. Each step appends every
    row's chosen token; a finished row gets ``pad_id``. ``streamer`` receives each
    step's (b,) tokens as they are chosen. The output is one tensor made up front and
    filled column by column.
    """
    batch, device = limits.shape[0], limits.device
    most = int(limits.max()) if batch else 0
    output = torch.full((batch, most), pad_id, dtype=torch.long, device=device)  # (b, t_max)
    # Book-keeping only when rows can finish at different steps.
    track = end_id is not None or bool((limits != most).any())
    finished = limits <= 0  # (b,)
    last: Optional[Tensor] = None
    produced = 0
    for step in range(most):
        if track and bool(finished.all()):
            break
        token = choose(steps.next_logits(last))  # (b,)
        if track:
            token = token.masked_fill(finished, pad_id)
        output[:, step] = token
        if streamer is not None:
            streamer(token)
        if track:
            finished |= step + 1 >= limits
            if end_id is not None:
                finished |= token == end_id
        last, produced = token, step + 1
    return output[:, :produced]


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


@dataclass
class _Finished:
    """The k best finished hypotheses of each live sentence, best first."""

    scores: Tensor  # (b, k) normalised scores; -inf where a slot is empty
    log_probs: Tensor  # (b, k)
    lengths: Tensor  # (b, k) tokens to return: the end token left out
    ended: Tensor  # (b, k) bool
    tokens: Tensor  # (b, k, t) the decoded tokens, the end token included

    @classmethod
    def empty(cls, batch: int, beam_size: int, device) -> _Finished:
        scores = torch.full((batch, beam_size), -math.inf, device=device)
        zeros = torch.zeros((batch, beam_size), dtype=torch.long, device=device)
        tokens = torch.zeros((batch, beam_size, 0), dtype=torch.long, device=device)
        return cls(scores, torch.zeros_like(scores), zeros, zeros.bool(), tokens)

    def select(self, sentences: Tensor) -> _Finished:
        return _Finished(*(getattr(self, name)[sentences] for name in self.__dataclass_fields__))

    def merge(self, scores: Tensor, log_probs: Tensor, lengths: Tensor, ended: Tensor, tokens: Tensor, pad_id: int):
        """Keep the k best of the old finished hypotheses and the new ones (b, k), (b, k, t)."""
        old_tokens = torch.nn.functional.pad(self.tokens, (0, tokens.shape[-1] - self.tokens.shape[-1]), value=pad_id)
        all_scores = torch.cat([self.scores, scores], dim=1)  # (b, 2k)
        self.scores, best = all_scores.topk(self.scores.shape[1], dim=1)  # (b, k), best first
        self.log_probs = torch.cat([self.log_probs, log_probs], dim=1).gather(1, best)
        self.lengths = torch.cat([self.lengths, lengths], dim=1).gather(1, best)
        self.ended = torch.cat([self.ended, ended], dim=1).gather(1, best)
        all_tokens = torch.cat([old_tokens, tokens], dim=1)  # (b, 2k, t)
        self.tokens = all_tokens.gather(1, best[:, :, None].expand(-1, -1, all_tokens.shape[-1]))

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
    limits: Tensor,
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

    Every step runs all b * k beams through the model as one batch. Each beam is
    extended by every token; per sentence the 2k best candidates are ranked by log P.
    Those of the k best that end (the end token, or the sentence's length limit) leave
    the beam as finished hypotheses, scored log P / lp(Y) with lp =
    ``length_penalty(|Y|, alpha, length_penalty_rule)``; the best k that do not end
    become the next beams, and the steps' rows follow them (``Steps.follow``). With
    k = 1 and alpha = 0 this is exactly greedy decoding.

    Stopping (``stopping``, one of :data:`~taa.decoding.STOPPING_RULES`):

    - ``"exact"``: a sentence is done when no live beam can still beat its best finished
      hypothesis (the ``n_best``-th best): log P only falls as a beam grows, so a beam
      with log P = s can at best score s / lp(longest allowed length) (s / lp of the
      next length when alpha < 0). This is tensor2tensor's criterion, the beam search
      the paper used; it never changes the answer: running every sentence to its
      length limit returns the same hypotheses.
    - ``"current_length"``: Hugging Face's ``early_stopping=False``: once k hypotheses
      are finished, stop when the k-th best is at least the best live beam's
      log P / lp(its current length), a heuristic when alpha > 0.
    - ``"k_finished"``: Hugging Face's ``early_stopping=True``: stop once k hypotheses
      are finished.

    Hugging Face's ``generate(num_beams=k, do_sample=False)`` ranks the same candidates
    the same way with lp(Y) = |Y| ** alpha: ``length_penalty_rule="power"`` and the
    stopping rule of its ``early_stopping`` give its answer (``"never"``: ``"exact"``).
    Done sentences leave the batch; the loop ends when none is left.
    """
    k = beam_size
    batch, device = limits.shape[0], limits.device

    def lp(length):  # lp(Y) of a hypothesis of ``length`` tokens
        return length_penalty(length, alpha, length_penalty_rule)

    sentences = torch.arange(batch, device=device)  # original index of each live sentence
    beam_scores = torch.full((batch, k), -math.inf, device=device)  # (b, k) log P of each beam
    beam_scores[:, 0] = 0.0  # one real beam to start with: the others are copies of it
    tokens = torch.zeros((batch * k, 0), dtype=torch.long, device=device)  # (b*k, t) decoded so far
    finished = _Finished.empty(batch, k, device)
    results: list[list[Hypothesis]] = [[] for _ in range(batch)]
    last: Optional[Tensor] = None

    for step in range(1, int(limits.max()) + 1 if batch else 1):
        live = beam_scores.shape[0]
        log_probs = torch.log_softmax(steps.next_logits(last).float(), dim=-1)  # (live*k, v)
        vocab = log_probs.shape[-1]
        # Every beam extended by every token; the 2k best per sentence, best first.
        candidates = (beam_scores.view(-1, 1) + log_probs).view(live, k * vocab)  # (live, k*v)
        top_scores, top_ids = candidates.topk(min(2 * k, k * vocab), dim=1)  # (live, 2k)
        parent_rows = top_ids // vocab + torch.arange(live, device=device)[:, None] * k  # (live, 2k)
        words = top_ids % vocab  # (live, 2k)
        ends = (step >= limits)[:, None].expand_as(words)  # (live, 2k)
        if end_id is not None:
            ends = ends | (words == end_id)

        # 1. Candidates among the k best that end are finished hypotheses.
        ending = ends[:, :k] & (top_scores[:, :k] > -math.inf)  # (live, k)
        if ending.any():
            ending_tokens = torch.cat([tokens[parent_rows[:, :k]], words[:, :k, None]], dim=2)  # (live, k, t)
            emitted_end = words[:, :k] == end_id if end_id is not None else torch.zeros_like(ending)
            finished.merge(
                scores=(top_scores[:, :k] / lp(step)).masked_fill(~ending, -math.inf),
                log_probs=top_scores[:, :k],
                lengths=step - emitted_end.long(),
                ended=emitted_end,
                tokens=ending_tokens,
                pad_id=pad_id,
            )

        # 2. The k best candidates that do not end are the next beams.
        beam_scores, keep = top_scores.masked_fill(ends, -math.inf).topk(k, dim=1)  # (live, k), best first
        parent_rows, words = parent_rows.gather(1, keep), words.gather(1, keep)  # (live, k)

        # 3. A sentence is done when its best live beam cannot beat its finished ones.
        if stopping == "exact":
            largest_penalty = lp(limits.float()).clamp(min=lp(step + 1))
            threshold = finished.scores[:, n_best - 1]  # (live,)
        else:  # Hugging Face's rules: k finished hypotheses, a bound from the current length
            largest_penalty = lp(step)
            threshold = finished.scores[:, k - 1]
        best_possible = beam_scores[:, 0] / largest_penalty  # (live,)
        done = (step >= limits) | ((threshold > -math.inf) & (threshold >= best_possible))
        if stopping == "k_finished":
            done |= threshold > -math.inf
        sentences_left = bool(done.any())
        if sentences_left:
            for i in done.nonzero()[:, 0].tolist():
                results[int(sentences[i])] = finished.hypotheses(i, n_best)
            kept = (~done).nonzero()[:, 0]  # live sentences that go on
            if kept.numel() == 0:
                break
            beam_scores, parent_rows, words = beam_scores[kept], parent_rows[kept], words[kept]
            limits, sentences, finished = limits[kept], sentences[kept], finished.select(kept)

        rows = parent_rows.view(-1)  # (live*k,) in the previous step's rows
        # Beams only move within their sentence: an encoder-decoder's memory and
        # cross-attention cache need to follow only when sentences leave.
        steps.follow(rows, sentences_left)
        last = words.view(-1)  # (live*k,)
        tokens = torch.cat([tokens[rows], last[:, None]], dim=1)  # (live*k, step)
    return results


