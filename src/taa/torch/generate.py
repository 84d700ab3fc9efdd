"""Decoding an encoder-decoder Transformer: greedy search and beam search on the KV cache.

"Attention Is All You Need" §6.1: "we used beam search with a beam size of 4 and length
penalty alpha = 0.6 [...] We set the maximum output length during inference to input
length + 50, but terminate early when possible."

Both decoders encode the source once and then feed the decoder one token per step,
reusing every earlier step's keys and values from the :class:`DecoderCache`.

Lengths. A hypothesis is counted in tokens after the start token, the end token
included. ``max_length`` keeps the meaning it has always had for :func:`greedy_decode`:
the longest output with its start token, so at most ``max_length - 1`` decoding steps.
With ``max_length=None`` each sentence may take ``source length + max_extra`` steps
(its non-padding source tokens; the paper's +50), capped by the model's ``max_length``.

The length penalty of GNMT (Wu et al. 2016, equation 14), which the paper uses::

    lp(Y) = ((5 + |Y|) / 6) ** alpha        score(Y) = log P(Y | X) / lp(Y)

Notation: ``b`` sentences, ``k`` beam size, ``m`` source length, ``t`` decoded tokens,
``v`` target vocabulary, ``d`` d_model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from taa.torch.models.transformer import Transformer


def decode_limits(model: Transformer, source_padding: Tensor, max_length: Optional[int], max_extra: int) -> Tensor:
    """(b,) the most tokens each sentence may decode after the start token, end token included."""
    batch = source_padding.shape[0]
    if max_length is not None:
        return torch.full((batch,), max_length - 1, dtype=torch.long, device=source_padding.device)
    limits = source_padding.sum(dim=1) + max_extra  # input length + 50 (§6.1)
    return limits.clamp(1, model.config.max_length)  # the decoder has max_length positions


def gnmt_length_penalty(length: Tensor | int, alpha: float) -> Tensor | float:
    """GNMT's lp(Y) = ((5 + |Y|) / 6) ** alpha; alpha = 0 turns it off (lp = 1)."""
    return ((5 + length) / 6) ** alpha


def _special_ids(model: Transformer, start_id: Optional[int], end_id: Optional[int]) -> tuple[int, int]:
    config = model.config
    return (config.bos_id if start_id is None else start_id), (config.eos_id if end_id is None else end_id)


# --------------------------------------------------------------------------------------
# Greedy search
# --------------------------------------------------------------------------------------


@torch.no_grad()
def greedy_decode(
    model: Transformer,
    source: Tensor,
    max_length: Optional[int] = None,
    start_id: Optional[int] = None,
    end_id: Optional[int] = None,
    *,
    max_extra: int = 50,
) -> Tensor:
    """Batched greedy decoding on the KV cache: (b, m) -> (b, <= 1 + longest), start token first.

    Each step appends every sentence's most likely next token. After a sentence emits
    ``end_id``, or reaches its length limit, it is padded with ``pad_id``; decoding
    stops once every sentence has ended. ``start_id``/``end_id`` default to the
    config's ``bos_id``/``eos_id`` (``end_id=-1`` never ends: decode to the limit).
    """
    start_id, end_id = _special_ids(model, start_id, end_id)
    source_padding = model.source_padding(source)  # (b, m)
    limits = decode_limits(model, source_padding, max_length, max_extra)  # (b,)
    memory = model.encode(source, source_padding)  # (b, m, d)
    cache = model.new_cache()
    output = torch.full((source.shape[0], 1), start_id, dtype=torch.long, device=source.device)  # (b, 1)
    finished = limits <= 0  # (b,)
    next_input = output
    for step in range(1, int(limits.max()) + 1):
        if finished.all():
            break
        logits = model.decode(next_input, memory, source_padding, cache=cache)  # (b, 1, v)
        next_token = logits[:, -1].argmax(dim=-1).masked_fill(finished, model.config.pad_id)  # (b,)
        output = torch.cat([output, next_token[:, None]], dim=1)  # (b, 1 + step)
        finished |= (next_token == end_id) | (step >= limits)
        next_input = next_token[:, None]
    return output


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


@torch.no_grad()
def beam_search(
    model: Transformer,
    source: Tensor,
    beam_size: int = 4,
    max_length: Optional[int] = None,
    max_extra: int = 50,
    length_penalty: float = 0.6,
    start_id: Optional[int] = None,
    end_id: Optional[int] = None,
    *,
    return_all: bool = False,
) -> list[list[int]] | list[list[Hypothesis]]:
    """Beam search over a batch of source sentences (b, m), padded with ``pad_id``.

    Returns the best hypothesis of each sentence as token ids, without the start and
    the end token (ready for a tokenizer's ``decode``); with ``return_all``, each
    sentence's finished :class:`Hypothesis` list instead (up to ``beam_size``, best
    first, with scores). ``length_penalty`` is GNMT's alpha (0: rank by log P alone).

    Every step runs all b * k beams through the decoder as one batch. Each beam is
    extended by every token; per sentence the 2k best candidates are ranked. Those of
    the k best that end (the end token, or the sentence's length limit) leave the beam
    as finished hypotheses; the best k that do not end become the next beams, and the
    cache rows follow them (``DecoderCache.reorder``). With k = 1 and alpha = 0 this is
    exactly greedy decoding.

    Stopping. A sentence is done when no live beam can still beat its best finished
    hypothesis (the k-th best with ``return_all``): log P only falls as a beam grows,
    so a beam with log P = s can at best score s / lp(longest allowed length) (s / lp
    of the next length when alpha < 0). This is tensor2tensor's criterion, the beam
    search the paper used; unlike stopping at k finished hypotheses it never changes
    the answer: running every sentence to its length limit returns the same hypotheses.
    Done sentences leave the batch; the loop ends when none is left.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size={beam_size} must be >= 1")
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length={max_length} leaves no room to decode (it counts the start token)")
    start_id, end_id = _special_ids(model, start_id, end_id)
    pad_id, alpha, k = model.config.pad_id, length_penalty, beam_size
    n_best = k if return_all else 1
    batch, device = source.shape[0], source.device

    source_padding = model.source_padding(source)  # (b, m)
    limits = decode_limits(model, source_padding, max_length, max_extra)  # (b,)
    # Encode once; the k beams of a sentence sit in neighbouring rows: row = sentence * k + beam.
    memory = model.encode(source, source_padding).repeat_interleave(k, dim=0)  # (b*k, m, d)
    source_padding = source_padding.repeat_interleave(k, dim=0)  # (b*k, m)
    cache = model.new_cache()

    sentences = torch.arange(batch, device=device)  # original index of each live sentence
    beam_scores = torch.full((batch, k), -math.inf, device=device)  # (b, k) log P of each beam
    beam_scores[:, 0] = 0.0  # one real beam to start with: the others are copies of it
    tokens = torch.full((batch * k, 1), start_id, dtype=torch.long, device=device)  # (b*k, 1 + t)
    finished = _Finished.empty(batch, k, device)
    results: list[list[Hypothesis]] = [[] for _ in range(batch)]

    for step in range(1, int(limits.max()) + 1):
        live = beam_scores.shape[0]
        logits = model.decode(tokens[:, -1:], memory, source_padding, cache=cache)  # (live*k, 1, v)
        log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (live*k, v)
        vocab = log_probs.shape[-1]
        # Every beam extended by every token; the 2k best per sentence, best first.
        candidates = (beam_scores.view(-1, 1) + log_probs).view(live, k * vocab)  # (live, k*v)
        top_scores, top_ids = candidates.topk(min(2 * k, k * vocab), dim=1)  # (live, 2k)
        parent_rows = top_ids // vocab + torch.arange(live, device=device)[:, None] * k  # (live, 2k)
        words = top_ids % vocab  # (live, 2k)
        ends = (words == end_id) | (step >= limits)[:, None]  # (live, 2k)

        # 1. Candidates among the k best that end are finished hypotheses.
        ending = ends[:, :k] & (top_scores[:, :k] > -math.inf)  # (live, k)
        if ending.any():
            ending_tokens = torch.cat([tokens[parent_rows[:, :k]][..., 1:], words[:, :k, None]], dim=2)  # (live, k, t)
            emitted_end = words[:, :k] == end_id
            finished.merge(
                scores=(top_scores[:, :k] / gnmt_length_penalty(step, alpha)).masked_fill(~ending, -math.inf),
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
        largest_penalty = gnmt_length_penalty(limits.float(), alpha).clamp(min=gnmt_length_penalty(step + 1, alpha))
        best_possible = beam_scores[:, 0] / largest_penalty  # (live,)
        threshold = finished.scores[:, n_best - 1]  # (live,)
        done = (step >= limits) | ((threshold > -math.inf) & (threshold >= best_possible))
        if done.any():
            for i in done.nonzero()[:, 0].tolist():
                results[int(sentences[i])] = finished.hypotheses(i, n_best)
            kept = (~done).nonzero()[:, 0]  # live sentences that go on
            if kept.numel() == 0:
                break
            kept_rows = (kept[:, None] * k + torch.arange(k, device=device)).view(-1)  # (kept*k,)
            memory, source_padding = memory[kept_rows], source_padding[kept_rows]
            beam_scores, parent_rows, words = beam_scores[kept], parent_rows[kept], words[kept]
            limits, sentences, finished = limits[kept], sentences[kept], finished.select(kept)

        rows = parent_rows.view(-1)  # (live*k,) in the previous step's rows
        # Beams only move within their sentence: the cross-attention cache needs to follow
        # only when sentences leave.
        cache.reorder(rows, cross_attention=bool(done.any()))
        tokens = torch.cat([tokens[rows], words.view(-1, 1)], dim=1)  # (live*k, 1 + step)

    if return_all:
        return results
    return [hypotheses[0].tokens for hypotheses in results]

