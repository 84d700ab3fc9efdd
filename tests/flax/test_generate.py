"""The Flax decoder against torch's: tiny random models, torch's weights loaded into the
Flax twin, the same sources and prompts; the same tokens, and beam scores within 1e-5.
Also: cached decoding equals recomputation, a whole generation compiles its step once,
finished rows stop changing, and sampling repeats with a seed and keeps to its filters."""

from __future__ import annotations

import functools
import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from taa import config as cfg  # noqa: E402
from taa.flax import generate as flax_generate  # noqa: E402
from taa.flax.weights import load_state_dict  # noqa: E402
from taa.torch import generate as torch_generate  # noqa: E402

VOCAB, PAD, BOS, EOS = 13, 0, 1, 2


def numpy(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def flax_class(module: str, name: str):
    """The Flax model class ``taa.flax.models.<module>.<name>``."""
    return getattr(importlib.import_module(f"taa.flax.models.{module}"), name)


def flax_twin(torch_model, module: str, name: str):
    """The Flax model of ``torch_model``'s class and config, holding its weights (in training
    mode, as built: decoding must switch dropout off by itself)."""
    model = flax_class(module, name)(torch_model.config)
    return load_state_dict(model, {k: v.detach().numpy() for k, v in torch_model.state_dict().items()})


def perturb_vectors(model, seed: int = 1) -> None:
    """Non-zero biases, non-unit norms: a random model whose outputs vary with everything."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)


@functools.cache
def transformer_pair(positional: str = "sinusoidal"):
    """A tiny random Transformer (untied: a tied random model mostly repeats its input) and its Flax twin."""
    from taa.torch.models.transformer import Transformer

    torch.manual_seed(0)
    config = cfg.TransformerConfig(
        d_model=16, n_heads=2, d_ff=32, dropout=0.1, n_encoder_layers=1, n_decoder_layers=1,
        source_vocab_size=VOCAB, target_vocab_size=VOCAB, max_length=40, positional=positional,
        share_embeddings=False, tie_output=False, relative_buckets=8, relative_max_distance=16,
        pad_id=PAD, bos_id=BOS, eos_id=EOS,
    )
    model = Transformer(config).eval()
    perturb_vectors(model)
    return model, flax_twin(model, "transformer", "Transformer")


@functools.cache
def t5_pair(preset: str = "t5-tiny"):
    from taa.torch.models.t5 import T5ForConditionalGeneration

    torch.manual_seed(0)
    config = cfg.preset(preset, vocab_size=VOCAB, max_length=40, n_encoder_layers=1, n_decoder_layers=2)
    model = T5ForConditionalGeneration(config).eval()
    perturb_vectors(model)
    return model, flax_twin(model, "t5", "T5ForConditionalGeneration")


def random_source(seed: int, lengths: list[int]) -> np.ndarray:
    """(b, longest) real tokens (never PAD) up to each length, PAD after."""
    source = np.random.default_rng(seed).integers(1, VOCAB, (len(lengths), max(lengths)))
    for row, length in enumerate(lengths):
        source[row, length:] = PAD
    return source


def frequent_end_token(model, source: np.ndarray, step: int = 3) -> int:
    """A token torch's model emits early for the first sentence: sentences end at different steps."""
    decoded = torch_generate.greedy_decode(model, torch.from_numpy(source[:1]), max_length=step + 1, end_id=-1)
    return int(decoded[0, step])


def assert_same_hypotheses(ours, theirs) -> None:
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs):
        assert [h.tokens for h in mine] == [h.tokens for h in reference]
        assert [h.ended for h in mine] == [h.ended for h in reference]
        np.testing.assert_allclose([h.score for h in mine], [h.score for h in reference], atol=1e-5, rtol=0)
        np.testing.assert_allclose([h.log_prob for h in mine], [h.log_prob for h in reference], atol=1e-5, rtol=0)


LENGTHS = [5, 2, 7, 3]  # a batch of sources of different lengths


# --------------------------------------------------------------------------------------
# Encoder-decoders: greedy_decode and beam_search give torch's tokens and scores
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("positional", ["sinusoidal", "relative"])
def test_transformer_greedy_decode_equals_torch(positional) -> None:
    theirs, ours = transformer_pair(positional)
    source = random_source(0, LENGTHS)
    end_id = frequent_end_token(theirs, source)
    for end in (-1, end_id):
        expected = torch_generate.greedy_decode(theirs, torch.from_numpy(source), max_length=10, end_id=end)
        got = flax_generate.greedy_decode(ours, source, max_length=10, end_id=end)
        assert numpy(got).tolist() == expected.tolist()
    # some sentences end early: after their end token they are padding, and the others go on
    ended = (expected[:, 1:] == end_id).any(dim=1)
    assert 0 < int(ended.sum()) < len(LENGTHS)
    for row in numpy(got)[ended.numpy()]:
        first_end = int(np.flatnonzero(row[1:] == end_id)[0]) + 1
        assert (row[first_end + 1:] == PAD).all()
    # transformers' names: the same decoder (and the same compiled search)
    assert numpy(flax_generate.generate(ours, source, max_new_tokens=9, eos_id=end_id)).tolist() == expected.tolist()
    assert not ours.decoder.layers[0].self_attention.deterministic  # the model itself stays in training mode


def test_transformer_greedy_decode_stops_each_sentence_at_its_length_plus_max_extra() -> None:
    theirs, ours = transformer_pair("learned")
    source = random_source(0, LENGTHS)
    expected = torch_generate.greedy_decode(theirs, torch.from_numpy(source), max_extra=2, end_id=-1)
    got = numpy(flax_generate.greedy_decode(ours, source, max_extra=2, end_id=-1))
    assert got.tolist() == expected.tolist()
    assert got.shape[1] == 1 + max(LENGTHS) + 2
    assert all((row[1 + length + 2:] == PAD).all() for row, length in zip(got, LENGTHS))


@pytest.mark.parametrize("beam_size, length_penalty", [(2, 0.6), (4, 1.5)])
def test_transformer_beam_search_equals_torch(beam_size, length_penalty) -> None:
    theirs, ours = transformer_pair("sinusoidal")
    source = random_source(0, LENGTHS)
    end_id = frequent_end_token(theirs, source)
    options = dict(beam_size=beam_size, max_extra=3, length_penalty=length_penalty, end_id=end_id)
    expected = torch_generate.beam_search(theirs, torch.from_numpy(source), return_all=True, **options)
    got = flax_generate.beam_search(ours, source, return_all=True, **options)
    assert_same_hypotheses(got, expected)
    assert any(h.ended for hypotheses in got for h in hypotheses)  # the end token is reached
    assert any(not h.ended for hypotheses in got for h in hypotheses)  # and the length limits
    assert flax_generate.beam_search(ours, source, **options) == [h[0].tokens for h in expected]
    # transformers' names: the best hypotheses, the end token included, padded
    hf = dict(num_beams=beam_size, max_extra=3, length_penalty=length_penalty, eos_id=end_id)
    assert numpy(flax_generate.generate(ours, source, **hf)).tolist() == \
        torch_generate.generate(theirs, torch.from_numpy(source), **hf).tolist()


@pytest.mark.parametrize("positional, rule, stopping", [
    ("rotary", "power", "current_length"), ("learned", "power", "k_finished"),
])
def test_transformer_beam_rules_equal_torch(positional, rule, stopping) -> None:
    theirs, ours = transformer_pair(positional)
    source = random_source(5, [3, 6, 1])
    options = dict(beam_size=3, max_length=8, length_penalty=1.0, length_penalty_rule=rule, stopping=stopping,
                   end_id=frequent_end_token(theirs, source), return_all=True)
    assert_same_hypotheses(flax_generate.beam_search(ours, source, **options),
                           torch_generate.beam_search(theirs, torch.from_numpy(source), **options))


@pytest.mark.parametrize("preset, beam_size, alpha", [("t5-tiny", 4, 0.0), ("t5-v1_1-tiny", 2, 0.6)])
def test_t5_greedy_and_beam_equal_torch(preset, beam_size, alpha) -> None:
    theirs, ours = t5_pair(preset)
    source = random_source(1, LENGTHS)
    end_id = frequent_end_token(theirs, source)
    expected = torch_generate.greedy_decode(theirs, torch.from_numpy(source), max_length=8, end_id=end_id)
    assert numpy(flax_generate.greedy_decode(ours, source, max_length=8, end_id=end_id)).tolist() == \
        expected.tolist()
    options = dict(beam_size=beam_size, max_extra=2, length_penalty=alpha, end_id=end_id, return_all=True)
    assert_same_hypotheses(flax_generate.beam_search(ours, source, **options),
                           torch_generate.beam_search(theirs, torch.from_numpy(source), **options))


def greedy_without_cache(model, source: np.ndarray, max_length: int, end_id: int) -> np.ndarray:
    """Flax greedy decoding by recomputing the whole target prefix every step, without a
    cache: the prefix right-padded to ``max_length`` (causal: the padding after a position
    changes nothing before it), so one compiled decoder serves every step."""
    model = flax_generate._decoding_model(model, None)
    decode = nnx.jit(lambda model, target, memory, padding: model.decode(target, memory, padding))
    batch = source.shape[0]
    output = np.full((batch, max_length), PAD, dtype=np.int32)
    output[:, 0] = BOS
    finished = np.zeros(batch, dtype=bool)
    source_padding = model.source_padding(source)
    memory = nnx.jit(lambda model, source, padding: model.encode(source, padding))(model, source, source_padding)
    for step in range(1, max_length):
        logits = numpy(decode(model, output, memory, source_padding))  # (b, max_length, v): the prefix as teacher input
        token = np.where(finished, PAD, logits[:, step - 1].argmax(axis=-1))
        output[:, step] = token
        finished |= token == end_id
        if finished.all():
            return output[:, : step + 1]
    return output


def test_cached_decoding_equals_recomputation() -> None:
    theirs, ours = transformer_pair("rotary")
    source = random_source(3, [4, 7, 2])
    end_id = frequent_end_token(theirs, source)
    for end in (-1, end_id):
        cached = numpy(flax_generate.greedy_decode(ours, source, max_length=8, end_id=end))
        assert cached.tolist() == greedy_without_cache(ours, source, 8, end).tolist()


# --------------------------------------------------------------------------------------
# GPT: generate greedy, beam and sampling
# --------------------------------------------------------------------------------------

LM_VOCAB, LM_PAD, LM_NEW = 16, 0, 10


@functools.cache
def gpt_pair(positional: str = "learned", max_length: int = 32):
    from taa.torch.models.gpt import GPT

    torch.manual_seed(0)
    config = cfg.preset("gpt-tiny", vocab_size=LM_VOCAB, max_length=max_length, positional=positional,
                        tie_output=False)
    model = GPT(config).eval()
    perturb_vectors(model)
    with torch.no_grad():  # larger weights than GPT-2's initialisation: outputs that vary with the prompt
        for parameter in model.parameters():
            parameter.mul_(8.0 if parameter.dim() > 1 else 1.0)
    return model, flax_twin(model, "gpt", "GPT")


def left_padded_prompts(seed: int = 5, rows: int = 6):
    """(rows, p) prompts of 2-6 tokens, left-padded with LM_PAD, and their (rows, p) mask."""
    generator = np.random.default_rng(seed)
    prompts = [generator.integers(3, LM_VOCAB, generator.integers(2, 7)).tolist() for _ in range(rows)]
    width = max(len(prompt) for prompt in prompts)
    ids = np.full((rows, width), LM_PAD, dtype=np.int64)
    mask = np.zeros((rows, width), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = prompt
        mask[row, width - len(prompt):] = 1
    return ids, mask


def lm_end_token(model, ids, mask) -> int:
    """A token torch's GPT emits early for the first prompt: rows end at different steps."""
    tokens = torch_generate.generate(model, torch.from_numpy(ids[:1]), torch.from_numpy(mask[:1]),
                                     max_new_tokens=3, eos_id=-1)
    return int(tokens[0, -1])


@pytest.mark.parametrize("positional", ["learned", "rotary", "alibi"])
def test_gpt_greedy_equals_torch(positional) -> None:
    theirs, ours = gpt_pair(positional)
    ids, mask = left_padded_prompts()
    end_id = lm_end_token(theirs, ids, mask)
    for eos_id in (-1, end_id):
        expected = torch_generate.generate(theirs, torch.from_numpy(ids), torch.from_numpy(mask),
                                           max_new_tokens=LM_NEW, eos_id=eos_id, pad_id=LM_PAD)
        got = flax_generate.generate(ours, ids, mask, max_new_tokens=LM_NEW, eos_id=eos_id, pad_id=LM_PAD)
        assert numpy(got).tolist() == expected.tolist()
    assert 0 < (numpy(got)[:, ids.shape[1]:] == end_id).any(axis=1).sum() < len(ids)  # some rows ended early


@pytest.mark.parametrize("num_beams, alpha, rule", [(3, 0.0, "gnmt"), (4, 1.0, "power")])
def test_gpt_beam_search_equals_torch(num_beams, alpha, rule) -> None:
    theirs, ours = gpt_pair()
    ids, mask = left_padded_prompts()
    options = dict(max_new_tokens=LM_NEW, num_beams=num_beams, length_penalty=alpha, length_penalty_rule=rule,
                   eos_id=lm_end_token(theirs, ids, mask), pad_id=LM_PAD)
    expected = torch_generate.generate(theirs, torch.from_numpy(ids), torch.from_numpy(mask), **options)
    assert numpy(flax_generate.generate(ours, ids, mask, **options)).tolist() == expected.tolist()
    greedy = flax_generate.generate(ours, ids, mask, max_new_tokens=LM_NEW, eos_id=options["eos_id"], pad_id=LM_PAD)
    if num_beams == 3:  # beams find other answers than greedy: the parity above can fail
        assert numpy(greedy).tolist() != expected.tolist()


def test_gpt_generation_past_the_context_slides_as_torch() -> None:
    theirs, ours = gpt_pair("learned", max_length=8)
    prompt = np.array([[3, 4, 5], [6, 7, 8]])
    expected = torch_generate.generate(theirs, torch.from_numpy(prompt), max_new_tokens=12, eos_id=-1)
    assert numpy(flax_generate.generate(ours, prompt, max_new_tokens=12, eos_id=-1)).tolist() == expected.tolist()
    long_prompt = expected[:, :11].numpy()  # longer than the context itself: its last 8 tokens are read
    assert numpy(flax_generate.generate(ours, long_prompt, max_new_tokens=4, eos_id=-1)).tolist() == \
        expected[:, :15].tolist()
    with pytest.raises(ValueError, match="exceeds the model's context of max_length=8"):
        flax_generate.generate(ours, np.array([[0, 3, 4]]), np.array([[0, 1, 1]]), max_new_tokens=6)
    with pytest.raises(ValueError, match="beam search does not slide"):
        flax_generate.generate(ours, prompt, max_new_tokens=6, num_beams=2)


def test_a_whole_generation_compiles_its_step_once(monkeypatch) -> None:
    """The model runs in Python only while a step is traced: once for the prompt and once
    for every later step, however many tokens; a second call with the same shapes reuses
    the compiled program. With a streamer (called from inside the loop) the program is
    compiled once more, and serves every streamer."""
    _, ours = gpt_pair()
    traced = []
    hidden_states = type(ours).hidden_states

    def counted(self, input_ids, *args, **kwargs):
        traced.append(input_ids.shape)
        return hidden_states(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(type(ours), "hidden_states", counted)
    ids, mask = left_padded_prompts(seed=8, rows=3)  # shapes no other test decodes: nothing compiled yet
    new = 12
    first = numpy(flax_generate.generate(ours, ids, mask, max_new_tokens=new, eos_id=-1))
    assert first.shape == (3, ids.shape[1] + new)
    assert traced == [(3, ids.shape[1]), (3, 1)]  # the prompt, then one step for all new - 1 others
    end_id = int(first[0, -3])  # other limits and end tokens compile nothing new either
    ended = numpy(flax_generate.generate(ours, ids, mask, max_new_tokens=new, eos_id=end_id, pad_id=LM_PAD))
    assert ended.tolist() != first.tolist() and (ended[0, -2:] == LM_PAD).all()
    assert len(traced) == 2  # nothing compiled again
    received = []
    streamed = flax_generate.generate(ours, ids, mask, max_new_tokens=new, eos_id=-1,
                                      streamer=lambda tokens: received.append(numpy(tokens)))
    assert numpy(streamed).tolist() == first.tolist()
    assert np.stack(received, axis=1).tolist() == first[:, ids.shape[1]:].tolist()
    assert len(traced) == 4  # the prompt and the step, in the program that streams
    streamed = flax_generate.generate(ours, ids, mask, max_new_tokens=new, eos_id=-1, streamer=received.append)
    assert numpy(streamed).tolist() == first.tolist() and len(received) == 2 * new
    assert len(traced) == 4  # another streamer: the same program
    beams = numpy(flax_generate.generate(ours, ids, mask, max_new_tokens=new, num_beams=2, eos_id=-1))
    assert beams.shape == first.shape and traced[4:] == [(6, ids.shape[1]), (6, 1)]


def sampled_tokens_keep_to(model, tokens: np.ndarray, prompt_length: int, allowed) -> bool:
    """Whether every new token of ``tokens`` (unpadded rows) is among ``allowed(logits)``, the
    tokens the filter lets through given the tokens before it (the model run once, without a
    cache: causal, so the logits at position j - 1 are those the token at j was drawn from)."""
    logits = np.asarray(flax_generate._decoding_model(model, None)(tokens))  # (b, t, v)
    for position in range(prompt_length, tokens.shape[1]):
        for row, token in zip(allowed(logits[:, position - 1]), tokens[:, position]):
            if token not in row:
                return False
    return True


def test_gpt_sampling_is_repeatable_with_a_seed_and_keeps_to_its_filters() -> None:
    _, ours = gpt_pair()
    ids, mask = left_padded_prompts()
    options = dict(max_new_tokens=LM_NEW, eos_id=-1)
    first = numpy(flax_generate.sample(ours, ids, mask, seed=3, **options))
    assert first.tolist() == numpy(flax_generate.sample(ours, ids, mask, seed=3, **options)).tolist()
    generator = flax_generate.seed_key(3)
    assert first.tolist() == numpy(flax_generate.sample(ours, ids, mask, generator=generator, **options)).tolist()
    assert first.tolist() == numpy(flax_generate.generate(ours, ids, mask, do_sample=True, seed=3, **options)).tolist()
    assert first.tolist() != numpy(flax_generate.sample(ours, ids, mask, seed=4, **options)).tolist()
    assert first.tolist() != numpy(flax_generate.sample(ours, ids, mask, seed=2**40 + 3, **options)).tolist()
    greedy = numpy(flax_generate.generate(ours, ids, mask, **options))
    assert first.tolist() != greedy.tolist()
    assert numpy(flax_generate.generate(ours, ids, mask, top_k=1, seed=0, **options)).tolist() == greedy.tolist()

    prompts = np.array([[3, 4], [5, 9], [7, 7], [12, 3]] * 4)  # unpadded: the model can be rerun on them
    top_3 = numpy(flax_generate.sample(ours, prompts, max_new_tokens=6, eos_id=-1, top_k=3, temperature=3.0, seed=1))
    assert len(set(top_3[:, 2:].ravel().tolist())) > 3  # it samples from more than one token
    assert sampled_tokens_keep_to(ours, top_3, 2, lambda logits: np.argsort(-logits, axis=-1)[:, :3].tolist())
    nucleus = numpy(flax_generate.sample(ours, prompts, max_new_tokens=6, eos_id=-1, top_p=0.6, seed=1))

    def in_nucleus(logits):
        kept = np.isfinite(np.asarray(flax_generate.top_p_filter(logits, 0.6)))
        return [np.flatnonzero(row).tolist() for row in kept]

    assert sampled_tokens_keep_to(ours, nucleus, 2, in_nucleus)
    assert not sampled_tokens_keep_to(ours, nucleus, 2, lambda logits: logits.argmax(axis=-1)[:, None].tolist())


def test_a_bfloat16_model_decodes_in_bfloat16() -> None:
    _, ours = gpt_pair()
    ids, mask = left_padded_prompts(rows=2)
    for options in (dict(num_beams=2), dict(top_p=0.9, seed=1)):
        tokens = numpy(flax_generate.generate(ours, ids, mask, max_new_tokens=4, eos_id=-1, dtype="bfloat16",
                                              **options))
        assert tokens.shape == (2, ids.shape[1] + 4) and tokens[:, :ids.shape[1]].tolist() == ids.tolist()
        assert tokens.min() >= 0 and tokens.max() < LM_VOCAB
    assert ours.token_embedding.weight[...].dtype == jnp.float32  # the model itself is unchanged


def test_decode_checks_its_inputs() -> None:
    _, ours = gpt_pair()
    with pytest.raises(ValueError, match="expected \\(batch, length\\)"):
        flax_generate.generate(ours, np.array([3, 4]))
    with pytest.raises(ValueError, match="token ids are integers"):
        flax_generate.generate(ours, np.array([[3.0, 4.0]]))
    with pytest.raises(ValueError, match="the prompt is empty"):
        flax_generate.generate(ours, np.zeros((1, 0), dtype=np.int64))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        flax_generate.generate(ours, np.array([[3, 4]]), np.array([[1, 1, 1]]))
    with pytest.raises(ValueError, match="max_new_tokens=-1"):
        flax_generate.generate(ours, np.array([[3, 4]]), max_new_tokens=-1)
    with pytest.raises(ValueError, match="num_beams=0"):
        flax_generate.generate(ours, np.array([[3, 4]]), num_beams=0)
    with pytest.raises(ValueError, match="n_best=3"):
        flax_generate.decode(ours, np.array([[3, 4]]), n_best=3)
    with pytest.raises(ValueError, match="beam_size=0"):
        flax_generate.beam_search(transformer_pair()[1], np.array([[3, 4]]), beam_size=0)
    assert numpy(flax_generate.generate(ours, np.array([[3, 4]]), max_new_tokens=0)).tolist() == [[3, 4]]
