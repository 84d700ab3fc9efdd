"""GPT: parameter count against transformers, KV cache == full forward, padding, causality, init, config."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from taa import config as cfg
from taa.config import ConfigError, GPTConfig
from taa.torch.models.gpt import GPT, positions_from_mask

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(cfg.preset("gpt-tiny", **overrides)).eval()


def test_gpt2_small_has_as_many_parameters_as_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        ours = GPT(cfg.preset("gpt2-small"))
        theirs = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    assert ours.num_parameters() == theirs.num_parameters() == 124_439_808
    assert sum(ours.parameter_breakdown().values()) == ours.num_parameters()


def test_shakespeare_preset_is_nanogpt_shape() -> None:
    config = cfg.preset("gpt-shakespeare-char")
    assert (config.n_layers, config.n_heads, config.d_model, config.max_length, config.vocab_size) == (6, 6, 384, 256, 65)
    assert config.dropout == 0.2 and config.norm_first and config.activation == "gelu_tanh"


def test_logits_shape_and_tied_head() -> None:
    model = tiny()
    logits = model(torch.randint(0, 64, (2, 7)))
    assert logits.shape == (2, 7, 64)
    assert model.output_projection.weight is model.token_embedding.weight
    untied = tiny(tie_output=False)
    assert untied.output_projection.weight is not untied.token_embedding.weight
    assert untied.num_parameters() == model.num_parameters() + 64 * 32


@pytest.mark.parametrize("positional", ["learned", "rotary", "alibi"])
def test_cached_step_by_step_decoding_equals_full_forward(positional: str) -> None:
    model = tiny(positional=positional)
    ids = torch.randint(0, 64, (3, 12))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        prefill = model(ids[:, :5], cache=cache)  # a prompt at once, then one token per step
        steps = [model(ids[:, t : t + 1], cache=cache) for t in range(5, 12)]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat([prefill, *steps], dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("positional", ["learned", "rotary", "alibi"])
def test_cached_decoding_of_left_padded_prompts_equals_each_prompt_alone(positional: str) -> None:
    model = tiny(positional=positional)
    prompts = [torch.randint(0, 64, (n,)) for n in (6, 3, 1)]
    continuation = torch.randint(0, 64, (3, 4))
    batch = torch.zeros(3, 6, dtype=torch.long)
    mask = torch.zeros(3, 6, dtype=torch.long)
    for row, prompt in enumerate(prompts):  # left padding
        batch[row, 6 - len(prompt):] = prompt
        mask[row, 6 - len(prompt):] = 1
    with torch.no_grad():
        cache = model.new_cache()
        outputs = [model(batch, mask, cache=cache)[:, -1]]
        for t in range(4):
            mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)
            outputs.append(model(continuation[:, t : t + 1], mask, cache=cache)[:, -1])
        for row, prompt in enumerate(prompts):
            alone = model(torch.cat([prompt, continuation[row]])[None])[0]  # (n, v)
            expected = alone[len(prompt) - 1 :]  # the logits after the prompt and after each new token
            torch.testing.assert_close(torch.stack([o[row] for o in outputs]), expected, atol=1e-5, rtol=0)


def test_rotary_positions_replace_the_learned_table() -> None:
    """positional="rotary": no position table (max_length x d fewer parameters), queries and
    keys rotated in every layer. (Caching and left padding: the tests above.)"""
    learned, rotary = tiny(), tiny(positional="rotary")
    assert rotary.position_embedding is None
    assert rotary.num_parameters() == learned.num_parameters() - 64 * 32
    assert all(layer.self_attention.rotary is not None for layer in rotary.blocks.layers)
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        rotated = rotary(ids)
        for layer in rotary.blocks.layers:
            layer.self_attention.rotary = None
        assert not torch.allclose(rotary(ids), rotated, atol=1e-4)  # the rotation is applied
    with pytest.raises(ConfigError, match="even head_dim"):
        cfg.preset("gpt-tiny", positional="rotary", d_model=30, n_heads=10)


def test_alibi_adds_its_bias_and_has_no_position_table() -> None:
    """positional="alibi": no position table; the stack adds the slopes' distance penalty
    (the logits change without it), and the penalty lets a token see where it stands."""
    learned, alibi = tiny(), tiny(positional="alibi")
    assert alibi.position_embedding is None and alibi.blocks.relative_bias is not None
    assert alibi.num_parameters() == learned.num_parameters() - 64 * 32
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        biased = alibi(ids)
        alibi.blocks.relative_bias = None
        assert not torch.allclose(alibi(ids), biased, atol=1e-4)
    with pytest.raises(ValueError, match="exceeds max_length=64"):
        tiny(positional="alibi")(torch.zeros(1, 65, dtype=torch.long))


def test_positions_from_mask_count_from_the_first_real_token() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]])
    assert torch.equal(positions_from_mask(mask), expected)


@given(length=st.integers(2, 10), changed=st.integers(0, 9), seed=st.integers(0, 1000))
def test_a_token_never_changes_the_logits_before_it(length: int, changed: int, seed: int) -> None:
    changed = changed % length
    model = tiny()
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (1, length), generator=generator)
    other = ids.clone()
    other[0, changed] = (other[0, changed] + 1) % 64
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[:, :changed], model(other)[:, :changed], atol=1e-6, rtol=0)
        assert not torch.allclose(model(ids)[:, changed], model(other)[:, changed])


def test_readable_attention_gives_the_fused_logits() -> None:
    ids = torch.randint(0, 64, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :4] = 0
    fused, readable = tiny(), tiny(attention="readable")
    readable.load_state_dict(fused.state_dict())
    with torch.no_grad():
        real = mask.bool()
        torch.testing.assert_close(readable(ids, mask)[real], fused(ids, mask)[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("positional", ["learned", "rotary", "alibi"])
def test_too_long_input_raises(positional: str) -> None:
    model = tiny(positional=positional)
    with pytest.raises(ValueError, match="exceeds max_length=64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    cache = model.new_cache()
    model(torch.zeros(1, 64, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="exceeds max_length=64"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4))


def test_gpt2_initialisation_scales_the_residual_projections() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(d_model=128, n_heads=4, d_ff=512, n_layers=8, vocab_size=500, max_length=64))
    residual_std = 0.02 / (2 * 8) ** 0.5
    layer = model.blocks.layers[3]
    assert layer.self_attention.out_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
    assert layer.feed_forward.w2.weight.std().item() == pytest.approx(residual_std, rel=0.05)
    assert layer.self_attention.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(layer.feed_forward.w1.bias == 0)


def test_config_validation_and_model_sections() -> None:
    with pytest.raises(ConfigError, match="eos_id=70 is outside the vocabulary of 64"):
        cfg.preset("gpt-tiny", eos_id=70)
    with pytest.raises(ConfigError, match="vocab_size=0 must be positive"):
        GPTConfig(vocab_size=0)
    section = cfg.model_config_from_dict({"type": "gpt", "vocab_size": 10, "d_model": 16, "n_heads": 2, "d_ff": 32})
    assert isinstance(section, GPTConfig) and section.vocab_size == 10
    assert cfg.model_config_from_dict(cfg.model_config_to_dict(section)) == section
    assert isinstance(cfg.model_config_from_dict({"preset": "gpt-tiny", "type": "gpt"}), GPTConfig)
    with pytest.raises(ConfigError, match=r"model.type='bert' does not match preset 'gpt-tiny'"):
        cfg.model_config_from_dict({"preset": "gpt-tiny", "type": "bert"})
    with pytest.raises(ConfigError, match=r"model.type='lstm' is not one of"):
        cfg.model_config_from_dict({"type": "lstm"})
