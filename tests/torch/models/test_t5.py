"""T5 built from taa's blocks: config checks, sizes, the KV cache, T5's initialisation.

Parity with Hugging Face's weights, logits and generation is in tests/convert/test_hf_t5.py.
"""

import pytest
import torch

from taa.config import MODEL_TYPES, ConfigError, T5Config, model_config_from_dict, preset
from taa.torch.generate import beam_search, greedy_decode
from taa.torch.models.t5 import T5ForConditionalGeneration, shift_right

TINY_PRESETS = ("t5-tiny", "t5-v1_1-tiny")


def _model(name: str, **overrides) -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(preset(name, **overrides)).eval()


def _padded_source(vocab: int, batch: int = 3, length: int = 9) -> torch.Tensor:
    """(b, m) ids in 2..vocab-1 with trailing padding (id 0) in rows 1 and 2."""
    generator = torch.Generator().manual_seed(1)
    source = torch.randint(2, vocab, (batch, length), generator=generator)
    source[1, 6:] = 0
    source[2, 2:] = 0
    return source


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(d_kv=0), "d_kv=0 must be positive"),
        (dict(norm_first=False), "norm_first=false"),
        (dict(relative_buckets=2), "relative_buckets=2 must be >= 4"),
        (dict(relative_buckets=32, relative_max_distance=16), "relative_max_distance=16 must exceed"),
        (dict(vocab_size=10, decoder_start_id=10), "decoder_start_id=10 is outside the vocabulary"),
        (dict(n_decoder_layers=0), "n_decoder_layers=0 must be positive"),
        (dict(dropout=1.5), "dropout=1.5 must be in [0, 1)"),
    ],
)
def test_config_errors_name_the_field(fields, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        T5Config(**fields)


def test_heads_may_be_narrower_than_d_model():
    """t5-v1_1-small: 6 heads of 64 in 512, which BlockConfig alone would refuse (512 % 6 != 0)."""
    config = preset("t5-v1_1-small")
    assert (config.n_heads, config.d_kv, config.d_model, config.head_dim) == (6, 64, 512, 64)
    model = _model("t5-v1_1-tiny")  # 3 heads of 8 in 32
    attention = model.encoder.layers[0].self_attention
    assert attention.q_proj.weight.shape == (24, 32) and attention.out_proj.weight.shape == (32, 24)


def test_t5_is_a_model_type_and_its_presets_round_trip():
    assert MODEL_TYPES["t5"] is T5Config
    config = model_config_from_dict({"preset": "t5-tiny", "d_ff": 80})
    assert isinstance(config, T5Config) and config.d_ff == 80
    assert model_config_from_dict({"type": "t5", "d_model": 64, "n_heads": 2, "d_kv": 32}).head_dim == 32
    assert config.bos_id == config.decoder_start_id == config.pad_id == 0 and config.eos_id == 1


def test_scale_follows_the_tie_unless_given():
    assert preset("t5-tiny").scale_output is True
    assert preset("t5-v1_1-tiny").scale_output is False
    assert preset("t5-v1_1-tiny", tie_word_embeddings=True, scale_decoder_outputs=False).scale_output is False


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [("t5-small", 60_506_624), ("t5-v1_1-small", 76_961_152)])
def test_parameter_count_equals_transformers(name, expected):
    """Both built on the meta device (no memory, no init cost) from the same config.

    transformers 5 builds every T5 with its head tied to ``shared``; it unties it only when
    a checkpoint holds a different ``lm_head.weight`` (v1.1), so an untied head is added.
    """
    transformers = pytest.importorskip("transformers")
    from taa.convert.hf_t5 import config_to_hf

    config = preset(name)
    hf_fields = {k: v for k, v in config_to_hf(config).items() if k not in ("architectures", "model_type")}
    with torch.device("meta"):
        ours = T5ForConditionalGeneration(config)
        theirs = transformers.T5ForConditionalGeneration(transformers.T5Config(**hf_fields))
    theirs_count = sum(p.numel() for p in theirs.parameters())  # a tied head counts once, as in ours
    if not config.tie_word_embeddings:
        assert theirs.lm_head.weight is theirs.shared.weight
        theirs_count += theirs.lm_head.weight.numel()
    assert ours.num_parameters() == theirs_count == expected
    assert sum(ours.parameter_breakdown().values()) == ours.num_parameters()


def test_tied_head_is_the_shared_embedding():
    tied, untied = _model("t5-tiny"), _model("t5-v1_1-tiny")
    assert tied.lm_head.weight is tied.shared.weight
    assert untied.lm_head.weight is not untied.shared.weight


# --------------------------------------------------------------------------------------
# Forward, KV cache, decoding
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY_PRESETS)
def test_cached_step_by_step_decoding_equals_the_full_forward(name):
    """Decoder self-attention cache + cross-attention keys computed once == recomputing everything."""
    model = _model(name)
    source = _padded_source(model.config.vocab_size)
    target = torch.randint(2, model.config.vocab_size, (3, 7), generator=torch.Generator().manual_seed(2))
    target[:, 0] = model.config.decoder_start_id
    with torch.no_grad():
        full = model(source, target, attention_mask=source != 0)  # (b, n, v)
        padding = model.source_padding(source)
        memory = model.encode(source, padding)
        cache = model.new_cache()
        steps = [model.decode(target[:, t : t + 1], memory, padding, cache=cache) for t in range(target.shape[1])]
    assert cache.length == target.shape[1]
    assert cache.layers[0].cross_attention.length == source.shape[1]  # computed once, kept
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_readable_and_fused_attention_agree():
    """The relative bias (and no 1/sqrt(d) scaling) goes through both attention kernels alike."""
    fused, readable = _model("t5-v1_1-tiny"), _model("t5-v1_1-tiny", attention="readable")
    readable.load_state_dict(fused.state_dict())
    source = _padded_source(100)
    target = torch.randint(2, 100, (3, 5), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(readable(source, target, source != 0), fused(source, target, source != 0))


def test_padding_does_not_change_the_real_tokens_outputs():
    model = _model("t5-tiny")
    source = _padded_source(100)
    target = torch.randint(2, 100, (3, 4), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        padded = model(source, target, attention_mask=source != 0)
        alone = model(source[2:, :2], target[2:])  # row 2 has two real tokens and no padding
    torch.testing.assert_close(padded[2:], alone, atol=1e-5, rtol=0)


def test_dropout_only_in_training():
    model = _model("t5-tiny", dropout=0.5, attention_dropout=0.5)
    source, target = _padded_source(100), torch.randint(2, 100, (3, 4))
    with torch.no_grad():
        assert torch.equal(model(source, target), model(source, target))
        model.train()
        assert not torch.equal(model(source, target), model(source, target))


def test_shift_right_starts_with_the_decoder_start_id():
    labels = torch.tensor([[5, 6, 1, -100], [7, 1, -100, -100]])
    expected = torch.tensor([[0, 5, 6, 1], [0, 7, 1, 0]])
    assert torch.equal(shift_right(labels, decoder_start_id=0, pad_id=0), expected)
    assert torch.equal(_model("t5-tiny").shift_right(labels), expected)
    assert torch.equal(shift_right(labels, decoder_start_id=3, pad_id=2)[:, 0], torch.tensor([3, 3]))


def test_greedy_and_beam_search_run_on_t5():
    """The decoding functions run unchanged; beam 1 with no length penalty is greedy."""
    model = _model("t5-v1_1-tiny")
    source = _padded_source(100)
    greedy = greedy_decode(model, source, max_length=9, end_id=-1)
    assert greedy.shape == (3, 9) and bool((greedy[:, 0] == 0).all())
    beams = beam_search(model, source, beam_size=1, max_length=9, length_penalty=0.0, end_id=-1)
    assert beams == greedy[:, 1:].tolist()


# --------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------


def test_initialisation_follows_t5():
    """Normal, std 1 for the embedding and fan-in scaled projections (HF's factor 1.0); norms 1."""
    config = preset("t5-tiny", d_model=64, d_kv=16, d_ff=128, vocab_size=400)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    d, inner = config.d_model, config.n_heads * config.d_kv
    layer = model.decoder.layers[0]
    expected = {
        "shared": (model.shared.weight, 1.0),
        "q": (layer.self_attention.q_proj.weight, (d * config.d_kv) ** -0.5),
        "k": (layer.cross_attention.k_proj.weight, d**-0.5),
        "o": (layer.self_attention.out_proj.weight, inner**-0.5),
        "wi": (layer.feed_forward.w1.weight, d**-0.5),
        "wo": (layer.feed_forward.w2.weight, config.d_ff**-0.5),
    }
    for name, (weight, std) in expected.items():
        assert abs(weight.std().item() / std - 1) < 0.1, name
    assert bool((layer.feed_forward_residual.norm.weight == 1).all())
    assert bool((model.encoder.final_norm.weight == 1).all())
