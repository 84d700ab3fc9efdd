"""Greedy search and beam search against references that recompute everything from scratch."""

from __future__ import annotations

import functools
import itertools
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taa.config import TransformerConfig
from taa.torch.generate import beam_search, gnmt_length_penalty, greedy_decode
from taa.torch.models.transformer import Transformer

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB, PAD, BOS, EOS = 13, 0, 1, 2
POSITIONALS = ["sinusoidal", "learned", "rotary", "relative"]


@functools.cache
def decoding_model(positional: str = "sinusoidal", norm_first: bool = True, vocab: int = VOCAB) -> Transformer:
    """A tiny random model whose outputs vary with the source and the position.

    Untied embeddings and output projection: with tied ones a random model mostly
    repeats its last input token, and every decoder would agree on that.
    """
    torch.manual_seed(0)
    config = TransformerConfig(
        d_model=16, n_heads=2, d_ff=32, dropout=0.0, n_encoder_layers=1, n_decoder_layers=2,
        source_vocab_size=vocab, target_vocab_size=vocab, max_length=40, positional=positional,
        norm_first=norm_first, share_embeddings=False, tie_output=False,
        relative_buckets=8, relative_max_distance=16, pad_id=PAD, bos_id=BOS, eos_id=EOS,
    )
    model = Transformer(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero biases, non-unit norms
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model


def random_source(generator: torch.Generator, lengths: list[int], vocab: int = VOCAB) -> torch.Tensor:
    """(b, max length) real tokens (never PAD) up to each length, PAD after."""
    source = torch.randint(1, vocab, (len(lengths), max(lengths)), generator=generator)
    for row, length in enumerate(lengths):
        source[row, length:] = PAD
    return source


@torch.no_grad()
def log_prob_without_cache(model: Transformer, source: torch.Tensor, tokens: list[int], end_id: int | None) -> float:
    """log P(tokens [+ end_id] | source) by running the decoder over the whole target at once."""
    source = source[source != PAD][None]  # (1, m): this sentence alone, unpadded
    target = torch.tensor([[BOS, *tokens] + ([end_id] if end_id is not None else [])])  # (1, 1 + t)
    source_padding = model.source_padding(source)
    logits = model.decode(target[:, :-1], model.encode(source, source_padding), source_padding)  # (1, t, v)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return log_probs[0].gather(1, target[0, 1:, None]).sum().item()


@torch.no_grad()
def greedy_without_cache(model: Transformer, source: torch.Tensor, max_length: int, end_id: int) -> torch.Tensor:
    """Greedy decoding by recomputing the whole target prefix every step."""
    batch = source.shape[0]
    output = torch.full((batch, 1), BOS, dtype=torch.long)
    finished = torch.zeros(batch, dtype=torch.bool)
    source_padding = model.source_padding(source)
    memory = model.encode(source, source_padding)
    for _ in range(max_length - 1):
        logits = model.decode(output, memory, source_padding)  # (b, t, v): the prefix as teacher input
        next_token = logits[:, -1].argmax(dim=-1)
        next_token[finished] = PAD
        output = torch.cat([output, next_token[:, None]], dim=1)
        finished |= next_token == end_id
        if bool(finished.all()):
            break
    return output


def strip(row: list[int], end_id: int, limit: int) -> list[int]:
    """A greedy output row as beam search returns it: no start token, nothing from the end token on.

    Only the padding after ``limit`` tokens is cut: a random model may emit the pad id itself.
    """
    row = row[1 : 1 + limit]
    return row[: row.index(end_id)] if end_id in row else row


def frequent_end_token(model: Transformer, source: torch.Tensor, step: int = 3) -> int:
    """A token the model emits early for the first sentence: makes sentences end at different steps."""
    return int(greedy_decode(model, source[:1], max_length=step + 1, end_id=-1)[0, step])


# --------------------------------------------------------------------------------------
# Greedy search
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("norm_first", [False, True], ids=["post", "pre"])
@settings(max_examples=5, deadline=None)
@given(source_lengths=st.lists(st.integers(1, 6), min_size=2, max_size=3), seed=st.integers(0, 2**16))
def test_greedy_decoding_with_cache_equals_recomputation(positional, norm_first, source_lengths, seed) -> None:
    model = decoding_model(positional, norm_first)
    source = random_source(torch.Generator().manual_seed(seed), source_lengths)
    # no end token in the vocabulary first: every step is compared
    never = greedy_decode(model, source, max_length=10, end_id=-1)
    assert never.shape == (len(source_lengths), 10) and torch.all(never[:, 0] == BOS)
    assert torch.equal(never, greedy_without_cache(model, source, 10, end_id=-1))
    # then an end token the first sequence emits: sequences stop at different steps
    end_id = int(never[0, 3])
    stopped = greedy_decode(model, source, max_length=10, end_id=end_id)
    assert torch.equal(stopped, greedy_without_cache(model, source, 10, end_id=end_id))
    generated = stopped[0, 1:].tolist()  # after the start token (which may equal end_id)
    assert end_id in generated
    assert all(token == PAD for token in generated[generated.index(end_id) + 1 :])


def test_greedy_decode_stops_when_every_sequence_ends() -> None:
    model = decoding_model()
    source = torch.tensor([[3, 4, 5], [3, 4, 5], [6, 7, PAD]])
    free = greedy_decode(model, source, max_length=8, end_id=-1)
    assert free.shape == (3, 8)
    # the two identical sources emit the same first token: ending on it stops them at once
    same = greedy_decode(model, source[:2], max_length=8, end_id=int(free[0, 1]))
    assert torch.equal(same, free[:2, :2])
    assert greedy_decode(model, source, max_length=1).shape == (3, 1)


def test_greedy_default_length_is_source_length_plus_extra() -> None:
    model = decoding_model()
    source = random_source(torch.Generator().manual_seed(3), [6, 2, 4])
    output = greedy_decode(model, source, end_id=-1, max_extra=3)  # at most 6+3, 2+3, 4+3 tokens
    assert output.shape == (3, 1 + 6 + 3)
    assert torch.equal(output[1, 1 + 2 + 3 :], torch.full((4,), PAD))
    assert torch.equal(output[2, 1 + 4 + 3 :], torch.full((2,), PAD))
    reference = greedy_without_cache(model, source, 1 + 6 + 3, end_id=-1)
    for row, length in enumerate([6, 2, 4]):
        assert torch.equal(output[row, : 1 + length + 3], reference[row, : 1 + length + 3])
    # the default extra is the paper's 50, capped by the model's 40 positions
    assert greedy_decode(model, source, end_id=-1).shape == (3, 1 + 40)


# --------------------------------------------------------------------------------------
# Beam search
# --------------------------------------------------------------------------------------


@settings(max_examples=8, deadline=None)
@given(source_lengths=st.lists(st.integers(1, 7), min_size=2, max_size=4), seed=st.integers(0, 2**16))
def test_beam_size_one_is_greedy(source_lengths, seed) -> None:
    """With k = 1 and no length penalty, the one beam takes the most likely token every step."""
    model = decoding_model()
    source = random_source(torch.Generator().manual_seed(seed), source_lengths)
    end_id = frequent_end_token(model, source)
    greedy = greedy_decode(model, source, max_length=12, end_id=end_id)
    beam = beam_search(model, source, beam_size=1, max_length=12, length_penalty=0.0, end_id=end_id)
    assert beam == [strip(row, end_id, 11) for row in greedy.tolist()]
    # the derived length limits agree too
    greedy = greedy_decode(model, source, end_id=end_id, max_extra=2)
    beam = beam_search(model, source, beam_size=1, length_penalty=0.0, end_id=end_id, max_extra=2)
    assert beam == [strip(row, end_id, length + 2) for row, length in zip(greedy.tolist(), source_lengths)]


@pytest.mark.parametrize("length_penalty", [0.0, 0.6, 1.5])
@settings(max_examples=4, deadline=None)
@given(source_lengths=st.lists(st.integers(1, 7), min_size=2, max_size=4), seed=st.integers(0, 2**16))
def test_batched_beam_search_equals_one_sentence_at_a_time(length_penalty, source_lengths, seed) -> None:
    """Padding, per-sentence length limits and dropping done sentences change nothing."""
    model = decoding_model()
    source = random_source(torch.Generator().manual_seed(seed), source_lengths)
    end_id = frequent_end_token(model, source)
    search = functools.partial(
        beam_search, model, beam_size=3, max_extra=4, length_penalty=length_penalty, end_id=end_id, return_all=True
    )
    batched = search(source)
    for row, length in enumerate(source_lengths):
        alone = search(source[row : row + 1, :length])[0]
        assert [h.tokens for h in batched[row]] == [h.tokens for h in alone]
        assert [h.ended for h in batched[row]] == [h.ended for h in alone]
        assert [h.score for h in batched[row]] == pytest.approx([h.score for h in alone], abs=1e-5)


def all_hypotheses(vocab: int, steps: int, end_id: int) -> list[tuple[list[int], bool]]:
    """Every possible output of at most ``steps`` tokens: (tokens, ended with end_id)."""
    outputs = set()
    for sequence in itertools.product(range(vocab), repeat=steps):
        if end_id in sequence:
            outputs.add((sequence[: sequence.index(end_id)], True))
        else:
            outputs.add((sequence, False))  # cut at the length limit
    return [(list(tokens), ended) for tokens, ended in sorted(outputs)]


@pytest.mark.parametrize("length_penalty", [0.0, 0.6])
def test_exhaustive_beam_finds_the_best_sequence(length_penalty) -> None:
    """A beam as wide as every possible output keeps them all: the result is the exact best.

    Vocabulary 5, 3 steps: 85 possible outputs; at most 16 * 5 = 80 candidates per step.
    """
    vocab, steps = 5, 3
    model = decoding_model(vocab=vocab)
    source = random_source(torch.Generator().manual_seed(7), [4, 2, 3], vocab)
    outputs = all_hypotheses(vocab, steps, EOS)
    assert len(outputs) == 1 + 4 + 16 + 64
    best = beam_search(model, source, beam_size=vocab**steps, max_length=steps + 1, length_penalty=length_penalty)
    ranked = beam_search(
        model, source, beam_size=vocab**steps, max_length=steps + 1, length_penalty=length_penalty, return_all=True
    )
    for row in range(len(source)):
        scored = []
        for tokens, ended in outputs:
            log_prob = log_prob_without_cache(model, source[row], tokens, EOS if ended else None)
            scored.append((log_prob / gnmt_length_penalty(len(tokens) + ended, length_penalty), tokens, ended))
        scored.sort(key=lambda item: -item[0])
        assert scored[0][0] - scored[1][0] > 1e-4, "a tie: pick another seed"
        assert best[row] == scored[0][1]
        # every output is finished, ranked as by brute force
        assert len(ranked[row]) == len(outputs)
        assert [h.score for h in ranked[row]] == pytest.approx([score for score, _, _ in scored], abs=1e-5)
        assert [(h.tokens, h.ended) for h in ranked[row][:5]] == [(t, e) for _, t, e in scored[:5]]


@torch.no_grad()
def beam_search_without_cache(
    model: Transformer, source: torch.Tensor, beam_size: int, steps: int, alpha: float, end_id: int
) -> list[int]:
    """One sentence, one beam at a time, every prefix recomputed, never stopping before ``steps``."""
    source = source[source != PAD][None]  # (1, m)
    source_padding = model.source_padding(source)
    memory = model.encode(source, source_padding)
    beams, finished = [(0.0, [BOS])], []  # (log P, tokens with the start token)
    for step in range(1, steps + 1):
        candidates = []
        for log_prob, tokens in beams:
            logits = model.decode(torch.tensor([tokens]), memory, source_padding)[0, -1]  # (v,)
            for word, word_log_prob in enumerate(torch.log_softmax(logits.float(), dim=-1).tolist()):
                candidates.append((log_prob + word_log_prob, tokens + [word]))
        candidates.sort(key=lambda candidate: -candidate[0])
        beams = []
        for rank, (log_prob, tokens) in enumerate(candidates):
            if tokens[-1] == end_id or step == steps:
                if rank < beam_size:  # an ending candidate among the k best leaves the beam
                    finished.append((log_prob / gnmt_length_penalty(step, alpha), tokens[1:]))
            elif len(beams) < beam_size:
                beams.append((log_prob, tokens))
    score, tokens = max(finished, key=lambda item: item[0])
    return tokens[:-1] if tokens[-1] == end_id else tokens


@pytest.mark.parametrize("length_penalty", [0.6, 2.0])
@pytest.mark.parametrize("beam_size", [1, 3])
def test_early_stopping_never_changes_the_result(beam_size, length_penalty) -> None:
    """Against a beam search that always runs to the length limit: stopping early gives the same best."""
    model = decoding_model()
    source = random_source(torch.Generator().manual_seed(13), [7, 3, 5, 1, 4])
    for step in (1, 2):  # end tokens the first sentence emits early
        end_id = frequent_end_token(model, source, step)
        best = beam_search(model, source, beam_size, max_length=10, length_penalty=length_penalty, end_id=end_id)
        for row in range(len(source)):
            assert best[row] == beam_search_without_cache(model, source[row], beam_size, 9, length_penalty, end_id)


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("length_penalty", [0.0, 0.6])
def test_beam_scores_equal_recomputation_without_cache(positional, length_penalty) -> None:
    """Reordering the cache as beams are re-ranked keeps every beam's own history."""
    model = decoding_model(positional)
    source = random_source(torch.Generator().manual_seed(11), [7, 3, 5, 1])
    end_id = frequent_end_token(model, source)
    results = beam_search(
        model, source, beam_size=4, max_length=12, length_penalty=length_penalty, end_id=end_id, return_all=True
    )
    assert any(h.ended for hypotheses in results for h in hypotheses)
    assert any(not h.ended for hypotheses in results for h in hypotheses)
    for row, hypotheses in enumerate(results):
        assert len(hypotheses) == 4
        assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)
        for h in hypotheses:
            expected = log_prob_without_cache(model, source[row], h.tokens, end_id if h.ended else None)
            assert h.log_prob == pytest.approx(expected, abs=1e-4)
            penalty = gnmt_length_penalty(len(h.tokens) + h.ended, length_penalty)
            assert h.score == pytest.approx(h.log_prob / penalty, abs=1e-5)


def test_end_token_and_length_limits() -> None:
    model = decoding_model()
    source = random_source(torch.Generator().manual_seed(5), [6, 2, 4])
    end_id = frequent_end_token(model, source, step=2)
    results = beam_search(model, source, beam_size=3, max_length=9, end_id=end_id, return_all=True)
    assert any(h.ended for h in results[0])
    for hypotheses in results:
        for h in hypotheses:
            assert end_id not in h.tokens
            # at most 8 tokens after the start token, the end token included
            assert len(h.tokens) < 8 if h.ended else len(h.tokens) == 8
    # with no end token every hypothesis runs to the limit: max_length counts the start token
    assert [len(tokens) for tokens in beam_search(model, source, max_length=9, end_id=-1)] == [8, 8, 8]
    # by default a sentence may take its source length + max_extra tokens
    cut = beam_search(model, source, end_id=-1, max_extra=2, return_all=True)
    assert [{len(h.tokens) for h in hypotheses} for hypotheses in cut] == [{8}, {4}, {6}]
    assert not any(h.ended for hypotheses in cut for h in hypotheses)


def decoder_batch_sizes(model: Transformer, search) -> list[int]:
    """The rows the decoder ran at each step of ``search()``."""
    with mock.patch.object(model, "decode", wraps=model.decode) as decode:
        search()
    return [call.args[0].shape[0] for call in decode.call_args_list]


def test_done_sentences_stop_and_leave_the_batch() -> None:
    model = decoding_model()
    source = random_source(torch.Generator().manual_seed(5), [6, 2, 4])
    end_id = frequent_end_token(model, source, step=1)  # sentence 0's most likely first token
    # k = 1, alpha = 0: sentence 0's one beam ends at step 1 and nothing can beat it
    sizes = decoder_batch_sizes(model, lambda: beam_search(model, source[:1], 1, 30, length_penalty=0.0, end_id=end_id))
    assert sizes == [1]
    # in a batch, sentence 0 leaves after step 1 while the others go on
    sizes = decoder_batch_sizes(model, lambda: beam_search(model, source, 2, 30, length_penalty=0.0, end_id=-1))
    assert sizes == [6] * 29  # no end token: nobody stops early
    sizes = decoder_batch_sizes(model, lambda: beam_search(model, source, 2, 30, length_penalty=0.0, end_id=end_id))
    assert sizes[0] == 6 and sizes[1] <= 4 and len(sizes) < 29


def test_beam_search_checks_its_arguments() -> None:
    model = decoding_model()
    source = torch.tensor([[3, 4]])
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, source, beam_size=0)
    with pytest.raises(ValueError, match="max_length"):
        beam_search(model, source, max_length=1)
