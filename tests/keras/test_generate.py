"""The Keras decoder against torch's: tiny random models, torch's weights copied into the
Keras twin, the same sources and prompts; the same tokens, and beam scores within 1e-5.
Also: cached decoding equals recomputation, and sampling repeats with a seed."""

from __future__ import annotations

import functools
import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
from keras import ops  # noqa: E402

from taa import config as cfg  # noqa: E402
from taa.keras import generate as keras_generate  # noqa: E402
from taa.keras.weights import ensure_built, load_state_dict  # noqa: E402
from taa.torch import generate as torch_generate  # noqa: E402

VOCAB, PAD, BOS, EOS = 13, 0, 1, 2
POSITIONALS = ["sinusoidal", "learned", "rotary", "relative"]


def numpy(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else ops.convert_to_numpy(x)


def keras_class(module: str, name: str):
    """The Keras model class ``taa.keras.models.<module>.<name>``."""
    return getattr(importlib.import_module(f"taa.keras.models.{module}"), name)


def keras_twin(torch_model, module: str, name: str):
    """The Keras model of ``torch_model``'s class and config, holding its weights."""
    model = ensure_built(keras_class(module, name)(torch_model.config))
    load_state_dict(model, {k: v.detach().numpy() for k, v in torch_model.state_dict().items()})
    return model


def perturb_vectors(model, seed: int = 1) -> None:
    """Non-zero biases, non-unit norms: a random model whose outputs vary with everything."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)


@functools.cache
def transformer_pair(positional: str = "sinusoidal"):
    """A tiny random Transformer (untied: a tied random model mostly repeats its input) and its Keras twin."""
    from taa.torch.models.transformer import Transformer

    torch.manual_seed(0)
    config = cfg.TransformerConfig(
        d_model=16, n_heads=2, d_ff=32, dropout=0.0, n_encoder_layers=1, n_decoder_layers=2,
        source_vocab_size=VOCAB, target_vocab_size=VOCAB, max_length=40, positional=positional,
        share_embeddings=False, tie_output=False, relative_buckets=8, relative_max_distance=16,
        pad_id=PAD, bos_id=BOS, eos_id=EOS,
    )
    model = Transformer(config).eval()
    perturb_vectors(model)
    return model, keras_twin(model, "transformer", "Transformer")


@functools.cache
def t5_pair(preset: str = "t5-tiny"):
    from taa.torch.models.t5 import T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(cfg.preset(preset, vocab_size=VOCAB, max_length=40)).eval()
    perturb_vectors(model)
    return model, keras_twin(model, "t5", "T5ForConditionalGeneration")


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


LENGTHS = [5, 2, 7, 3]  # a batch of sources of different lengths


# --------------------------------------------------------------------------------------
# Encoder-decoders: greedy_decode and beam_search give torch's tokens and scores
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("positional", POSITIONALS)
def test_transformer_greedy_decode_equals_torch(positional) -> None:
    theirs, ours = transformer_pair(positional)
    source = random_source(0, LENGTHS)
    end_id = frequent_end_token(theirs, source)
    for end in (-1, end_id):
        expected = torch_generate.greedy_decode(theirs, torch.from_numpy(source), max_length=10, end_id=end)
        got = keras_generate.greedy_decode(ours, source, max_length=10, end_id=end)
        assert numpy(got).tolist() == expected.tolist()
    assert 0 < int((expected[:, 1:] == end_id).any(dim=1).sum()) < len(LENGTHS)  # some sentences end early
    # the default limits: each source's length + max_extra
    expected = torch_generate.greedy_decode(theirs, torch.from_numpy(source), max_extra=2, end_id=-1)
    assert numpy(keras_generate.greedy_decode(ours, source, max_extra=2, end_id=-1)).tolist() == expected.tolist()


def assert_same_hypotheses(ours, theirs) -> None:
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs):
        assert [h.tokens for h in mine] == [h.tokens for h in reference]
        assert [h.ended for h in mine] == [h.ended for h in reference]
        assert [h.score for h in mine] == pytest.approx([h.score for h in reference], abs=1e-5)
        assert [h.log_prob for h in mine] == pytest.approx([h.log_prob for h in reference], abs=1e-5)


@pytest.mark.parametrize("beam_size, length_penalty", [(1, 0.0), (2, 0.6), (4, 1.5), (4, 0.0)])
def test_transformer_beam_search_equals_torch(beam_size, length_penalty) -> None:
    theirs, ours = transformer_pair("sinusoidal")
    source = random_source(0, LENGTHS)
    options = dict(beam_size=beam_size, max_extra=3, length_penalty=length_penalty,
                   end_id=frequent_end_token(theirs, source))
    expected = torch_generate.beam_search(theirs, torch.from_numpy(source), return_all=True, **options)
    got = keras_generate.beam_search(ours, source, return_all=True, **options)
    assert_same_hypotheses(got, expected)
    assert any(h.ended for hypotheses in got for h in hypotheses)  # the end token is reached
    assert keras_generate.beam_search(ours, source, **options) == [h[0].tokens for h in expected]


@pytest.mark.parametrize("positional, rule, stopping", [
    ("rotary", "gnmt", "exact"), ("relative", "power", "current_length"), ("learned", "power", "k_finished"),
])
def test_transformer_beam_rules_equal_torch(positional, rule, stopping) -> None:
    theirs, ours = transformer_pair(positional)
    source = random_source(5, [3, 6, 1])
    options = dict(beam_size=3, max_length=8, length_penalty=1.0, length_penalty_rule=rule, stopping=stopping,
                   end_id=frequent_end_token(theirs, source), return_all=True)
    assert_same_hypotheses(keras_generate.beam_search(ours, source, **options),
                           torch_generate.beam_search(theirs, torch.from_numpy(source), **options))


@pytest.mark.parametrize("preset", ["t5-tiny", "t5-v1_1-tiny"])
def test_t5_greedy_and_beam_equal_torch(preset) -> None:
    theirs, ours = t5_pair(preset)
    source = random_source(1, LENGTHS)
    end_id = frequent_end_token(theirs, source)
    expected = torch_generate.greedy_decode(theirs, torch.from_numpy(source), max_length=8, end_id=end_id)
    assert numpy(keras_generate.greedy_decode(ours, source, max_length=8, end_id=end_id)).tolist() == \
        expected.tolist()
    for beam_size, alpha in [(2, 0.6), (4, 0.0)]:
        options = dict(beam_size=beam_size, max_extra=2, length_penalty=alpha, end_id=end_id, return_all=True)
        assert_same_hypotheses(keras_generate.beam_search(ours, source, **options),
                               torch_generate.beam_search(theirs, torch.from_numpy(source), **options))


def greedy_without_cache(model, source: np.ndarray, max_length: int, end_id: int) -> np.ndarray:
    """Keras greedy decoding by recomputing the whole target prefix every step."""
    output = np.full((source.shape[0], 1), BOS, dtype=np.int32)
    finished = np.zeros(source.shape[0], dtype=bool)
    source_padding = model.source_padding(source)
    memory = model.encode(source, source_padding)
    for _ in range(max_length - 1):
        logits = numpy(model.decode(output, memory, source_padding))  # (b, t, v): the prefix as teacher input
        token = np.where(finished, PAD, logits[:, -1].argmax(axis=-1))
        output = np.concatenate([output, token[:, None]], axis=1)
        finished |= token == end_id
        if finished.all():
            break
    return output


@pytest.mark.parametrize("positional", POSITIONALS)
def test_cached_decoding_equals_recomputation(positional) -> None:
    theirs, ours = transformer_pair(positional)
    source = random_source(3, [4, 7, 2])
    end_id = frequent_end_token(theirs, source)
    for end in (-1, end_id):
        cached = numpy(keras_generate.greedy_decode(ours, source, max_length=8, end_id=end))
        assert cached.tolist() == greedy_without_cache(ours, source, 8, end).tolist()


def test_generate_on_an_encoder_decoder_equals_greedy_decode_and_beam_search() -> None:
    _, ours = transformer_pair()
    source = random_source(2, [5, 3])
    greedy = keras_generate.greedy_decode(ours, source, max_length=9)
    assert numpy(keras_generate.generate(ours, source, max_new_tokens=8)).tolist() == numpy(greedy).tolist()
    beams = keras_generate.beam_search(ours, source, beam_size=3, max_length=9, end_id=-1)
    generated = numpy(keras_generate.generate(ours, source, max_new_tokens=8, num_beams=3, eos_id=-1))
    assert generated[:, 1:].tolist() == beams and generated[:, 0].tolist() == [BOS, BOS]


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
    return model, keras_twin(model, "gpt", "GPT")


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
        got = keras_generate.generate(ours, ids, mask, max_new_tokens=LM_NEW, eos_id=eos_id, pad_id=LM_PAD)
        assert numpy(got).tolist() == expected.tolist()
    # one unpadded prompt, no mask
    expected = torch_generate.generate(theirs, torch.from_numpy(ids[-1:, -2:]), max_new_tokens=LM_NEW, eos_id=-1)
    assert numpy(keras_generate.generate(ours, ids[-1:, -2:], max_new_tokens=LM_NEW, eos_id=-1)).tolist() == \
        expected.tolist()


@pytest.mark.parametrize("num_beams, alpha, rule", [(2, 0.6, "gnmt"), (4, 1.0, "power"), (3, 0.0, "gnmt")])
def test_gpt_beam_search_equals_torch(num_beams, alpha, rule) -> None:
    theirs, ours = gpt_pair()
    ids, mask = left_padded_prompts()
    options = dict(max_new_tokens=LM_NEW, num_beams=num_beams, length_penalty=alpha, length_penalty_rule=rule,
                   eos_id=lm_end_token(theirs, ids, mask), pad_id=LM_PAD)
    expected = torch_generate.generate(theirs, torch.from_numpy(ids), torch.from_numpy(mask), **options)
    assert numpy(keras_generate.generate(ours, ids, mask, **options)).tolist() == expected.tolist()
    greedy = keras_generate.generate(ours, ids, mask, max_new_tokens=LM_NEW, eos_id=options["eos_id"], pad_id=LM_PAD)
    if num_beams == 3:  # beams find other answers than greedy: the parity above can fail
        assert numpy(greedy).tolist() != expected.tolist()


def test_gpt_generation_past_the_context_slides_as_torch() -> None:
    theirs, ours = gpt_pair("learned", max_length=8)
    prompt = np.array([[3, 4, 5]])
    expected = torch_generate.generate(theirs, torch.from_numpy(prompt), max_new_tokens=12, eos_id=-1)
    assert numpy(keras_generate.generate(ours, prompt, max_new_tokens=12, eos_id=-1)).tolist() == expected.tolist()
    long_prompt = expected[:, :11].numpy()  # longer than the context itself: its last 8 tokens are read
    assert numpy(keras_generate.generate(ours, long_prompt, max_new_tokens=4, eos_id=-1)).tolist() == \
        expected[:, :15].tolist()
    with pytest.raises(ValueError, match="exceeds the model's context of max_length=8"):
        keras_generate.generate(ours, np.array([[0, 3, 4]]), np.array([[0, 1, 1]]), max_new_tokens=6)
    with pytest.raises(ValueError, match="beam search does not slide"):
        keras_generate.generate(ours, prompt, max_new_tokens=6, num_beams=2)


def test_gpt_sampling_is_repeatable_with_a_seed_and_top_k_one_is_greedy() -> None:
    _, ours = gpt_pair()
    ids, mask = left_padded_prompts()
    options = dict(max_new_tokens=LM_NEW, eos_id=-1, temperature=1.5)
    first = numpy(keras_generate.generate(ours, ids, mask, seed=3, **options))
    assert first.tolist() == numpy(keras_generate.generate(ours, ids, mask, seed=3, **options)).tolist()
    generator = keras_generate.seed_generator(3)
    assert first.tolist() == numpy(keras_generate.generate(ours, ids, mask, generator=generator, **options)).tolist()
    assert first.tolist() != numpy(keras_generate.generate(ours, ids, mask, seed=4, **options)).tolist()
    greedy = numpy(keras_generate.generate(ours, ids, mask, max_new_tokens=LM_NEW, eos_id=-1))
    assert first.tolist() != greedy.tolist()
    top_1 = keras_generate.generate(ours, ids, mask, max_new_tokens=LM_NEW, eos_id=-1, top_k=1, seed=0)
    assert numpy(top_1).tolist() == greedy.tolist()
    sampled = keras_generate.sample(ours, ids, mask, max_new_tokens=LM_NEW, eos_id=-1, seed=3)
    assert numpy(sampled).tolist() == numpy(keras_generate.generate(
        ours, ids, mask, max_new_tokens=LM_NEW, eos_id=-1, do_sample=True, seed=3)).tolist()


def test_streamer_receives_the_tokens_in_order() -> None:
    _, ours = gpt_pair()
    ids, mask = left_padded_prompts()
    received = []
    tokens = keras_generate.generate(ours, ids, mask, max_new_tokens=LM_NEW, eos_id=-1,
                                     streamer=lambda step: received.append(numpy(step)))
    assert np.stack(received, axis=1).tolist() == numpy(tokens)[:, ids.shape[1]:].tolist()


def test_a_bfloat16_model_decodes_in_bfloat16() -> None:
    theirs, _ = gpt_pair()
    model = ensure_built(keras_class("gpt", "GPT")(theirs.config, dtype="bfloat16"))
    load_state_dict(model, {k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    ids, mask = left_padded_prompts(rows=2)
    for options in (dict(), dict(num_beams=2), dict(top_p=0.9, seed=1)):
        tokens = numpy(keras_generate.generate(model, ids, mask, max_new_tokens=4, eos_id=-1, dtype="bfloat16",
                                               **options))
        assert tokens.shape == (2, ids.shape[1] + 4) and tokens[:, :ids.shape[1]].tolist() == ids.tolist()
        assert tokens.min() >= 0 and tokens.max() < LM_VOCAB


def test_decode_checks_its_inputs() -> None:
    _, ours = gpt_pair()
    with pytest.raises(ValueError, match="expected \\(batch, length\\)"):
        keras_generate.generate(ours, np.array([3, 4]))
    with pytest.raises(ValueError, match="token ids are integers"):
        keras_generate.generate(ours, np.array([[3.0, 4.0]]))
    with pytest.raises(ValueError, match="the prompt is empty"):
        keras_generate.generate(ours, np.zeros((1, 0), dtype=np.int64))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        keras_generate.generate(ours, np.array([[3, 4]]), np.array([[1, 1, 1]]))
    with pytest.raises(ValueError, match="max_new_tokens=-1"):
        keras_generate.generate(ours, np.array([[3, 4]]), max_new_tokens=-1)
    with pytest.raises(ValueError, match="num_beams=0"):
        keras_generate.generate(ours, np.array([[3, 4]]), num_beams=0)
    with pytest.raises(ValueError, match="dtype='bfloat16'"):
        keras_generate.generate(ours, np.array([[3, 4]]), dtype="bfloat16")
    with pytest.raises(ValueError, match="n_best=3"):
        keras_generate.decode(ours, np.array([[3, 4]]), n_best=3)
    with pytest.raises(ValueError, match="beam_size=0"):
        keras_generate.beam_search(transformer_pair()[1], np.array([[3, 4]]), beam_size=0)
