"""The one decoder (greedy, sampling, beam search) against references that recompute everything
from scratch, against transformers' generate, and its settings: one length penalty, the checkpoint's defaults."""

from __future__ import annotations

import functools
import itertools
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taa.config import TransformerConfig
from taa.decoding import length_penalty as lp
from taa.torch.generate import beam_search, greedy_decode
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
            scored.append((log_prob / lp(len(tokens) + ended, length_penalty), tokens, ended))
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
                    finished.append((log_prob / lp(step, alpha), tokens[1:]))
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
            penalty = lp(len(h.tokens) + h.ended, length_penalty)
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


# ======================================================================================
# Decoder-only generation: generate() on GPT, against transformers' generate
# ======================================================================================

from taa import config as cfg  # noqa: E402
from taa.torch.attention import KVCache  # noqa: E402
from taa.torch.generate import generate, sample, top_k_filter, top_p_filter  # noqa: E402
from taa.torch.models.gpt import GPT  # noqa: E402

LM_VOCAB, LM_PAD, LM_SEP, LM_EOS, LM_NEW = 16, 0, 1, 2, 10


def _copy_sequences(generator: torch.Generator, n: int):
    """x_1..x_m SEP x_1..x_m EOS, left-padded with PAD; labels -100 on the padding."""
    rows = []
    for _ in range(n):
        length = int(torch.randint(2, 6, (1,), generator=generator))
        tokens = torch.randint(3, LM_VOCAB, (length,), generator=generator).tolist()
        rows.append(tokens + [LM_SEP] + tokens + [LM_EOS])
    width = max(len(row) for row in rows)
    ids = torch.full((n, width), LM_PAD)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids, mask, ids.masked_fill(mask == 0, -100)


@pytest.fixture(scope="module")
def gpt_pair(tmp_path_factory):
    """A tiny HF GPT-2 trained for 40 steps to copy its prompt and end (a random one never
    emits EOS), the same weights in taa, and a left-padded batch of 8 prompts of 2-6 tokens."""
    transformers = pytest.importorskip("transformers")
    from taa.torch.convert.hf import load_hf_folder
    from taa.torch.models.gpt import positions_from_mask

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=LM_VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=LM_SEP, eos_token_id=LM_EOS, pad_token_id=LM_PAD,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    hf = transformers.GPT2LMHeadModel(config)
    optimizer = torch.optim.Adam(hf.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        ids, mask, labels = _copy_sequences(generator, 32)
        loss = hf(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hf.eval()
    folder = tmp_path_factory.mktemp("gpt2-generation")
    hf.save_pretrained(folder, safe_serialization=True)
    ours = load_hf_folder(folder)
    prompt_generator = torch.Generator().manual_seed(5)
    rows = [torch.randint(3, LM_VOCAB, (int(torch.randint(2, 7, (1,), generator=prompt_generator)),),
                          generator=prompt_generator).tolist() + [LM_SEP] for _ in range(8)]
    width = max(len(row) for row in rows)
    ids = torch.full((8, width), LM_PAD)
    mask = torch.zeros((8, width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return hf, ours, ids, mask


def _new_tokens(sequences: torch.Tensor, prompt_length: int) -> list[list[int]]:
    """Generated rows -> the new tokens up to the end token (excluded), without padding."""
    hypotheses = []
    for row in sequences[:, prompt_length:].tolist():
        if LM_EOS in row:
            row = row[: row.index(LM_EOS)]
        while row and row[-1] == LM_PAD:
            row.pop()
        hypotheses.append(row)
    return hypotheses


def test_gpt_greedy_equals_transformers_generate(gpt_pair):
    hf, ours, ids, mask = gpt_pair
    for new_tokens in (LM_NEW, 5):
        expected = hf.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False, num_beams=1)
        tokens = generate(ours, ids, mask, max_new_tokens=new_tokens, eos_id=LM_EOS, pad_id=LM_PAD)
        assert torch.equal(tokens, expected)  # prompt, new tokens, end token, pad after it: all the same
    new = tokens[:, ids.shape[1]:]
    assert 1 <= int((new == LM_EOS).any(dim=1).sum()) < len(ids)  # some rows end early, some run to the limit


@pytest.mark.parametrize("alpha, early_stopping", list(itertools.product([0.0, 1.0, 2.0, -0.5], ["never", False, True])))
def test_gpt_beam_search_equals_transformers_generate(gpt_pair, alpha, early_stopping):
    hf, ours, ids, mask = gpt_pair
    expected = hf.generate(
        ids, attention_mask=mask, max_new_tokens=LM_NEW, do_sample=False, num_beams=4,
        length_penalty=alpha, early_stopping=early_stopping,
    )
    tokens = generate(  # transformers' lp(Y) = |Y| ** alpha
        ours, ids, mask, max_new_tokens=LM_NEW, num_beams=4, length_penalty=alpha, length_penalty_rule="power",
        early_stopping=early_stopping, eos_id=LM_EOS, pad_id=LM_PAD,
    )
    assert _new_tokens(tokens, ids.shape[1]) == _new_tokens(expected, ids.shape[1])


def test_gpt_beam_one_is_greedy_and_beams_matter(gpt_pair):
    _, ours, ids, mask = gpt_pair
    greedy = generate(ours, ids, mask, max_new_tokens=LM_NEW, eos_id=LM_EOS)
    beam_one = generate(ours, ids, mask, max_new_tokens=LM_NEW, num_beams=1, eos_id=LM_EOS)
    assert torch.equal(greedy, beam_one)
    beams = generate(ours, ids, mask, max_new_tokens=LM_NEW, num_beams=4, length_penalty=0.0, eos_id=LM_EOS)
    assert _new_tokens(beams, ids.shape[1]) != _new_tokens(greedy, ids.shape[1])  # so the parity above can fail


@pytest.mark.parametrize("num_beams", [1, 3])
def test_left_padded_batch_equals_one_prompt_at_a_time(gpt_pair, num_beams):
    _, ours, ids, mask = gpt_pair
    batched = _new_tokens(generate(ours, ids, mask, max_new_tokens=LM_NEW, num_beams=num_beams, eos_id=LM_EOS),
                          ids.shape[1])
    for row in range(len(ids)):
        prompt = ids[row][mask[row].bool()][None]  # (1, p): this prompt alone, unpadded
        alone = generate(ours, prompt, max_new_tokens=LM_NEW, num_beams=num_beams, eos_id=LM_EOS)
        assert _new_tokens(alone, prompt.shape[1]) == [batched[row]]


def test_sampling_is_repeatable_and_top_k_one_is_greedy(gpt_pair):
    _, ours, ids, mask = gpt_pair
    options = dict(max_new_tokens=LM_NEW, eos_id=-1, temperature=1.5)  # -1: never stop
    first = generate(ours, ids, mask, seed=3, **options)
    assert torch.equal(first, generate(ours, ids, mask, seed=3, **options))
    assert torch.equal(first, generate(ours, ids, mask, generator=torch.Generator().manual_seed(3), **options))
    assert not torch.equal(first, generate(ours, ids, mask, seed=4, **options))
    greedy = generate(ours, ids, mask, max_new_tokens=LM_NEW, eos_id=-1)
    assert greedy.shape == (len(ids), ids.shape[1] + LM_NEW)  # eos_id=-1: no row stops at the end token
    assert not torch.equal(first, greedy)
    assert torch.equal(generate(ours, ids, mask, max_new_tokens=LM_NEW, eos_id=-1, top_k=1, seed=0), greedy)
    # sample() always samples: temperature 1, no filter
    assert torch.equal(sample(ours, ids, mask, max_new_tokens=LM_NEW, eos_id=-1, seed=3),
                       generate(ours, ids, mask, max_new_tokens=LM_NEW, eos_id=-1, do_sample=True, seed=3))


def test_sampling_equals_transformers_filters():
    """Temperature, then top-k, then top-p: the probabilities transformers' warpers give."""
    transformers = pytest.importorskip("transformers")
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(0)) * 3
    for temperature, k, p in [(0.7, 10, 0.9), (1.3, 50, 0.5), (1.0, 3, 1.0), (0.5, 20, 0.05)]:
        theirs = TopPLogitsWarper(p)(None, TopKLogitsWarper(k)(None, TemperatureLogitsWarper(temperature)(None, logits)))
        ours = top_p_filter(top_k_filter(logits / temperature, k), p)
        torch.testing.assert_close(ours.softmax(-1), theirs.softmax(-1), atol=1e-6, rtol=0)
    assert transformers is not None


def test_top_p_keeps_the_smallest_set_that_reaches_p():
    # probabilities 1/2, 1/4, 1/8, 1/8, in a shuffled vocabulary order
    probabilities = torch.tensor([0.125, 0.5, 0.125, 0.25])
    logits = probabilities.log()[None]
    kept = lambda p: set(torch.isfinite(top_p_filter(logits, p))[0].nonzero()[:, 0].tolist())  # noqa: E731
    assert kept(0.3) == {1}  # 1/2 alone reaches 0.3
    assert kept(0.6) == {1, 3}  # 1/2 + 1/4
    assert kept(0.8) == {1, 3, 0}  # ... + the first 1/8 (ties keep vocabulary order)
    assert kept(0.9) == {0, 1, 2, 3}
    assert kept(1.0) == {0, 1, 2, 3}
    assert set(torch.isfinite(top_k_filter(logits, 2))[0].nonzero()[:, 0].tolist()) == {1, 3}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), p=st.floats(0.01, 0.99))
def test_top_p_property(seed, p):
    logits = torch.randn(40, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
    kept = torch.isfinite(top_p_filter(logits[None], p))[0]
    probabilities = logits.softmax(-1)
    mass = float(probabilities[kept].sum())
    assert mass >= p - 1e-12  # the kept set reaches p ...
    smallest = float(probabilities[kept].min())
    assert mass - smallest < p + 1e-12  # ... and is the smallest that does: without its least likely token it would not
    assert float(torch.cat([probabilities[~kept], torch.zeros(1, dtype=torch.float64)]).max()) <= smallest  # the most likely tokens are the ones kept


def test_streamer_receives_the_tokens_in_order(gpt_pair):
    _, ours, ids, mask = gpt_pair
    received = []
    tokens = generate(ours, ids, mask, max_new_tokens=LM_NEW, eos_id=LM_EOS, pad_id=LM_PAD,
                      streamer=lambda step_tokens: received.append(step_tokens.clone()))
    assert torch.equal(torch.stack(received, dim=1), tokens[:, ids.shape[1]:])
    received.clear()
    sampled = generate(ours, ids[:1], max_new_tokens=5, eos_id=-1, seed=1, top_p=0.9,
                       streamer=lambda step_tokens: received.append(step_tokens.clone()))
    assert torch.stack(received, dim=1).tolist() == sampled[:, ids.shape[1]:].tolist()


@torch.no_grad()
def test_generation_past_the_context_slides_as_nanogpt_does():
    """Beyond max_length positions each step reads the last max_length tokens (nanoGPT crops)."""
    torch.manual_seed(0)
    model = GPT(cfg.preset("gpt-tiny", vocab_size=LM_VOCAB, max_length=8)).eval()
    prompt = torch.tensor([[3, 4, 5]])
    tokens = generate(model, prompt, max_new_tokens=12, eos_id=None)
    expected = prompt
    for _ in range(12):
        logits = model(expected[:, -8:])[:, -1]  # no cache: the last 8 tokens
        expected = torch.cat([expected, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(tokens, expected)
    long_prompt = expected[:, :11]  # longer than the context itself: its last 8 tokens are read
    assert torch.equal(generate(model, long_prompt, max_new_tokens=4, eos_id=None), expected[:, :15])
    with pytest.raises(ValueError, match="exceeds the model's context of max_length=8"):
        generate(model, torch.tensor([[0, 3, 4]]), torch.tensor([[0, 1, 1]]), max_new_tokens=6)
    with pytest.raises(ValueError, match="beam search does not slide"):
        generate(model, prompt, max_new_tokens=6, num_beams=2)


def test_generate_restores_training_mode_and_autocasts(gpt_pair):
    _, ours, ids, mask = gpt_pair
    ours.train()
    try:
        tokens = generate(ours, ids, mask, max_new_tokens=3, eos_id=-1)
        assert ours.training  # dropout was off while generating, and the mode is restored
    finally:
        ours.eval()
    assert torch.equal(tokens, generate(ours, ids, mask, max_new_tokens=3, eos_id=-1))
    bf16 = generate(ours, ids, mask, max_new_tokens=3, eos_id=-1, dtype="bfloat16")
    assert bf16.shape == tokens.shape and next(ours.parameters()).dtype == torch.float32


def _until_end(rows: list[list[int]], end_id: int) -> list[list[int]]:
    """Encoder-decoder output rows -> beam_search's hypotheses: no start token, nothing from the end token on."""
    rows = [row[1:] for row in rows]
    return [row[: row.index(end_id)] if end_id in row else row for row in rows]


def test_generate_on_an_encoder_decoder_equals_greedy_decode_and_beam_search():
    model = decoding_model()
    source = random_source(torch.Generator().manual_seed(2), [5, 3, 6])
    end_id = frequent_end_token(model, source)
    tokens = generate(model, source, max_new_tokens=8, eos_id=end_id)
    assert torch.equal(tokens, greedy_decode(model, source, max_length=9, end_id=end_id))
    # the same defaults (GNMT's lp, alpha 0.6, the exact bound), and transformers' rules when asked for
    hf_rules = dict(length_penalty=0.7, length_penalty_rule="power")
    hf_options = ({**hf_rules, "early_stopping": False}, {**hf_rules, "stopping": "current_length"})
    for options, rules in [({}, {}), hf_options]:
        beams = generate(model, source, max_new_tokens=8, eos_id=end_id, num_beams=3, **options)
        expected = beam_search(model, source, 3, max_length=9, end_id=end_id, **rules)
        assert _until_end(beams.tolist(), end_id) == expected
    # no max_new_tokens: each sentence's source length + max_extra, as in beam_search and greedy_decode
    beams = generate(model, source, eos_id=end_id, num_beams=3, max_extra=4)
    assert _until_end(beams.tolist(), end_id) == beam_search(model, source, 3, end_id=end_id, max_extra=4)
    greedy = greedy_decode(model, source, end_id=-1, max_extra=4)
    assert torch.equal(generate(model, source, eos_id=-1, max_extra=4), greedy)


# ======================================================================================
# One set of defaults: the length penalty, and what a checkpoint carries
# ======================================================================================

import inspect  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from taa.decoding import DEFAULTS, DecodingConfig, decoding_defaults, length_penalty  # noqa: E402


def test_every_entry_point_has_the_one_default_length_penalty():
    from taa.tasks.translation import translate

    assert (DEFAULTS.length_penalty, DEFAULTS.length_penalty_rule, DEFAULTS.stopping) == (0.6, "gnmt", "exact")
    for function in (beam_search, generate, translate):
        parameters = inspect.signature(function).parameters
        assert parameters["length_penalty"].default == DEFAULTS.length_penalty, function.__name__
        if "length_penalty_rule" in parameters:
            assert parameters["length_penalty_rule"].default == DEFAULTS.length_penalty_rule
        assert parameters["max_extra"].default == DEFAULTS.max_extra
    assert length_penalty(7, 0.6) == ((5 + 7) / 6) ** 0.6 and length_penalty(7, 0.0) == 1.0
    assert length_penalty(7, 1.5, "power") == 7**1.5
    with pytest.raises(ValueError, match="length_penalty_rule='hf' is not one of gnmt, power"):
        length_penalty(3, 1.0, "hf")


def test_generate_beam_search_on_gpt_uses_the_same_default(gpt_pair):
    """generate's default beam search is GNMT's lp with alpha 0.6, as an explicit call says."""
    _, ours, ids, mask = gpt_pair
    default = generate(ours, ids, mask, max_new_tokens=LM_NEW, num_beams=3, eos_id=LM_EOS)
    explicit = generate(ours, ids, mask, max_new_tokens=LM_NEW, num_beams=3, eos_id=LM_EOS, length_penalty=0.6,
                        length_penalty_rule="gnmt", early_stopping="never")
    assert torch.equal(default, explicit)


def test_decoding_defaults_come_from_the_recipe():
    translation = cfg.RecipeConfig.from_dict({
        "task": "translation", "data": {"beam": 5, "length_penalty": 1.4, "max_extra": 12},
    })
    assert decoding_defaults(translation) == DecodingConfig(beam=5, length_penalty=1.4, max_extra=12)
    # what from_pretrained returns for a run: its recipe rules
    assert decoding_defaults(SimpleNamespace(recipe=translation, source="taa_run", folder=".")).beam == 5
    text_to_text = cfg.RecipeConfig.from_dict({"task": "text_to_text", "model": {"preset": "t5-small"},
                                               "data": {"beam": 2, "length_penalty": 0.0}})
    assert (decoding_defaults(text_to_text).beam, decoding_defaults(text_to_text).length_penalty) == (2, 0.0)
    language_model = cfg.RecipeConfig.from_dict({
        "task": "language_model", "model": {"preset": "gpt-tiny"}, "train": {"seed": 7},
        "data": {"temperature": 0.8, "top_k": 200},
    })
    assert decoding_defaults(language_model) == DecodingConfig(sample=True, temperature=0.8, top_k=200, seed=7)
    no_top_k = cfg.RecipeConfig.from_dict({"task": "language_model", "model": {"preset": "gpt-tiny"},
                                           "data": {"top_k": 0}})
    assert decoding_defaults(no_top_k).top_k is None  # 0: every token
    assert decoding_defaults(cfg.RecipeConfig()) == DEFAULTS  # the copy task: greedy
    assert decoding_defaults(SimpleNamespace(recipe=None, source="taa_model", folder=".")) == DEFAULTS


def test_a_hugging_face_folder_decodes_as_transformers(tmp_path):
    folder = SimpleNamespace(recipe=None, source="hugging_face", folder=tmp_path)
    assert decoding_defaults(folder) == DecodingConfig(length_penalty=1.0, length_penalty_rule="power",
                                                       stopping="current_length")
    (tmp_path / "generation_config.json").write_text(json.dumps({
        "num_beams": 4, "length_penalty": 0.6, "early_stopping": True, "bos_token_id": 0,
    }))
    assert decoding_defaults(folder) == DecodingConfig(beam=4, length_penalty=0.6, length_penalty_rule="power",
                                                       stopping="k_finished")
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": True, "top_p": 0.9}))
    sampled = decoding_defaults(folder)
    assert (sampled.sample, sampled.top_k, sampled.top_p, sampled.temperature) == (True, 50, 0.9, 1.0)


def test_decoding_settings_check_themselves():
    for changes, message in [
        (dict(beam=0), "beam=0 must be >= 1"), (dict(beam=2, sample=True), "beam search with sampling"),
        (dict(stopping="never"), "stopping='never' is not one of"), (dict(temperature=0.0), "temperature=0.0"),
        (dict(top_p=0.0), "top_p=0.0"), (dict(top_k=0), "top_k=0"), (dict(max_extra=-1), "max_extra=-1"),
    ]:
        with pytest.raises(ValueError, match=message):
            DecodingConfig(**changes)
    assert DEFAULTS.replace(beam=None, length_penalty=1.0) == DecodingConfig(length_penalty=1.0)  # None: not given


def test_decoding_settings_import_no_framework():
    code = "import sys, taa.decoding; print(sorted(m for m in ('torch', 'tensorflow', 'jax') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
