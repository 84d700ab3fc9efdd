"""Hugging Face GPT2LMHeadModel <-> taa GPT: equal logits both ways, exact round trips, loud failures.

No downloads: tiny random transformers models are built from configs and saved to tmp_path.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from taa import config as cfg
from taa.convert import hf_gpt2
from taa.convert.state_dict import ConversionError
from taa.torch.convert.hf import load_hf_folder, save_hf_folder
from taa.torch.models.gpt import GPT, positions_from_mask

transformers = pytest.importorskip("transformers")

VOCAB = 61


def hf_model(seed: int = 0, **overrides) -> "transformers.GPT2LMHeadModel":
    """A tiny random GPT-2 whose every tensor (norms included) is distinct, so a swapped key shows."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=24, n_embd=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2,
        **overrides,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (3, 10) and a left-padding mask: rows with 0, 3 and 9 pads."""
    ids = torch.randint(0, VOCAB, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :9] = 0
    return ids, mask


def assert_same_logits(theirs, ours: GPT) -> None:
    """Equal logits without a mask, and at every real token of a left-padded batch."""
    ids, mask = batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, atol=1e-5, rtol=0)
        # transformers takes the positions of a padded batch from position_ids, as its generate() does
        expected = theirs(ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
        real = mask.bool()
        torch.testing.assert_close(ours(ids, mask)[real], expected[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("tied", [True, False])
def test_hugging_face_folder_loads_with_equal_logits(tmp_path, tied: bool) -> None:
    theirs = hf_model(tie_word_embeddings=tied)
    theirs.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_hf_folder(tmp_path)
    assert isinstance(ours, GPT) and not ours.training
    assert ours.config.tie_output is tied
    assert (ours.output_projection.weight is ours.token_embedding.weight) is tied
    assert (ours.config.bos_id, ours.config.eos_id, ours.config.d_ff) == (1, 2, 128)
    assert_same_logits(theirs, ours)


@pytest.mark.parametrize("tied", [True, False])
def test_our_folder_loads_into_transformers_with_equal_logits(tmp_path, tied: bool) -> None:
    torch.manual_seed(0)
    ours = GPT(cfg.preset("gpt-tiny", vocab_size=VOCAB, tie_output=tied, eos_id=2)).eval()
    save_hf_folder(ours, tmp_path)
    theirs, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    assert theirs.config.tie_word_embeddings is tied and theirs.config.eos_token_id == 2
    assert_same_logits(theirs.eval(), ours)
    # ... and back: the config and every tensor survive the round trip
    again = load_hf_folder(tmp_path)
    assert again.config == ours.config
    for key, value in ours.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_state_dict_round_trip_is_exact_and_layouts_are_fixed() -> None:
    theirs = hf_model()
    state = {k: v for k, v in theirs.state_dict().items() if k != "lm_head.weight"}  # tied: not saved
    config = hf_gpt2.config_from_hf(theirs.config.to_dict())
    ours = hf_gpt2.state_dict_from_hf(state, config)
    back = hf_gpt2.state_dict_to_hf(ours, config)
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    # Conv1D (in, out) -> nn.Linear (out, in); the fused c_attn columns are [queries | keys | values]
    c_attn = state["transformer.h.1.attn.c_attn.weight"]  # (d, 3d)
    assert torch.equal(ours["blocks.layers.1.self_attention.k_proj.weight"], c_attn[:, 32:64].t())
    assert torch.equal(ours["blocks.layers.1.feed_forward.w1.weight"], state["transformer.h.1.mlp.c_fc.weight"].t())


def test_bare_checkpoint_with_old_buffers_and_a_saved_head_loads(tmp_path) -> None:
    """The original OpenAI layout: no ``transformer.`` prefix, causal-mask buffers, lm_head saved."""
    theirs = hf_model()
    state = {k.removeprefix("transformer."): v.clone() for k, v in theirs.state_dict().items()}
    for i in range(2):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 24, 24))
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, str(tmp_path / "model.safetensors"))
    theirs.config.save_pretrained(tmp_path)
    assert_same_logits(theirs, load_hf_folder(tmp_path))


def test_missing_unexpected_and_misshaped_keys_are_one_error(tmp_path) -> None:
    hf_model().save_pretrained(tmp_path, safe_serialization=True)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["transformer.h.1.ln_2.bias"]
    state["transformer.h.0.attn.rotary.weight"] = torch.zeros(3)
    state["transformer.wpe.weight"] = torch.zeros(23, 32)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConversionError) as error:
        load_hf_folder(tmp_path)
    message = str(error.value)
    assert "missing keys: transformer.h.1.ln_2.bias" in message
    assert "unexpected keys: transformer.h.0.attn.rotary.weight" in message
    assert "mis-shaped: transformer.wpe.weight (23, 32) != expected (24, 32)" in message


def test_folder_and_config_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ConversionError, match="no config.json"):
        load_hf_folder(tmp_path)
    hf_model(scale_attn_by_inverse_layer_idx=True, activation_function="silu").config.save_pretrained(tmp_path)
    with pytest.raises(ConversionError, match=r"config.json: .*scale_attn_by_inverse_layer_idx=True.*'silu'"):
        load_hf_folder(tmp_path)
    hf_model().config.save_pretrained(tmp_path)
    with pytest.raises(ConversionError, match="no model.safetensors"):
        load_hf_folder(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ConversionError, match="safetensors only"):
        load_hf_folder(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2ForTokenClassification"]}))
    with pytest.raises(ConversionError, match="has none of GPT2LMHeadModel"):
        load_hf_folder(tmp_path)
    with pytest.raises(ConversionError, match="norm_first=False .*; activation='swiglu'"):
        hf_gpt2.config_to_hf(cfg.preset("gpt-tiny", norm_first=False, activation="swiglu"))
    with pytest.raises(ConversionError, match="positional='rotary'"):
        hf_gpt2.config_to_hf(cfg.preset("gpt-tiny", positional="rotary"))


def test_readable_attention_and_norms_also_equal_transformers(tmp_path) -> None:
    """The written-out attention and LayerNorm (``attention: readable``), not only the fused kernels."""
    theirs = hf_model()
    theirs.save_pretrained(tmp_path, safe_serialization=True)
    fused = load_hf_folder(tmp_path)
    readable = GPT(dataclasses.replace(fused.config, attention="readable")).eval()
    readable.load_state_dict(fused.state_dict())
    assert_same_logits(theirs, readable)
