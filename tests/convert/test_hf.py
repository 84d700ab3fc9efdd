"""taa.convert.hf: one entry point for every Hugging Face family, picked from config.json,
working on arrays of any framework.

The parity of each family with transformers is in tests/convert/test_hf_<family>.py; loading
into torch models through this entry point is tests/torch/convert/test_hf.py. Here: the
family lookup, the tokenizer files, and the key maps run on numpy arrays with no framework.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from taa import config as cfg
from taa.convert import hf, hf_gpt2, hf_t5
from taa.convert.hf_folder import write_config
from taa.convert.state_dict import ConversionError

@pytest.mark.parametrize("config, expected", [
    ({"model_type": "gpt2"}, "gpt2"),
    ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, "bert"),
    ({"architectures": ["T5ForConditionalGeneration"]}, "t5"),  # no model_type: the class says
    ({"architectures": ["Foo", "BertModel"]}, "bert"),
])
def test_family_from_model_type_or_architectures(config, expected):
    assert hf.family(config, "config.json") == expected


@pytest.mark.parametrize("config, message", [
    ({"model_type": "llama"}, "config.json: model_type='llama' is not supported (taa converts gpt2, bert, t5, vit, decision_transformer)"),
    ({"architectures": ["LlamaForCausalLM"]}, "config.json: no model_type, and architectures=['LlamaForCausalLM']"),
    ({}, "config.json: no model_type, and architectures=None"),
])
def test_unknown_families_are_one_line_errors(config, message):
    with pytest.raises(ConversionError) as error:
        hf.family(config, "config.json")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_tokenizer_files_are_copied(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json"):
        (source / name).write_text(name)
    (source / "model.safetensors").write_text("not a tokenizer file")
    copied = hf.copy_tokenizer_files(source, tmp_path / "out")
    assert sorted(copied) == ["special_tokens_map.json", "tokenizer.json", "vocab.txt"]
    assert (tmp_path / "out" / "vocab.txt").read_text() == "vocab.txt"
    assert hf.copy_tokenizer_files(tmp_path / "out" / "nothing-here", tmp_path / "none") == []


# --------------------------------------------------------------------------------------
# The key maps on numpy arrays: what a port reuses
# --------------------------------------------------------------------------------------


def _random_folder(folder, hf_config, shapes) -> dict[str, np.ndarray]:
    """A Hugging Face folder of random float32 numpy arrays; every array distinct."""
    rng = np.random.default_rng(0)
    weights = {key: rng.standard_normal(shape).astype(np.float32) for key, shape in shapes.items()}
    write_config(folder, hf_config)
    save_file(weights, str(folder / "model.safetensors"))
    return weights


@pytest.mark.parametrize("tied", [True, False])
def test_gpt2_folder_round_trips_as_numpy_arrays(tmp_path, tied):
    config = cfg.preset("gpt-tiny", vocab_size=23, tie_output=tied)
    backbone, heads = hf_gpt2.hf_shapes(config)
    weights = _random_folder(tmp_path, hf_gpt2.config_to_hf(config), {**backbone, **heads})
    converted = hf.read_hf_folder(tmp_path, framework="np")
    assert (converted.architecture, converted.config, converted.options) == ("GPT", config, {})
    ours = converted.weights
    assert all(isinstance(value, np.ndarray) for value in ours.values())
    # Conv1D (in, out) -> (out, in); the fused c_attn columns are [queries | keys | values]
    d = config.d_model
    np.testing.assert_array_equal(ours["blocks.layers.0.self_attention.v_proj.weight"],
                                  weights["h.0.attn.c_attn.weight"][:, 2 * d:].T)
    np.testing.assert_array_equal(ours["blocks.layers.0.self_attention.q_proj.bias"],
                                  weights["h.0.attn.c_attn.bias"][:d])
    assert (ours["output_projection.weight"] is ours["token_embedding.weight"]) is tied
    hf_config, back = hf.to_hf("GPT", converted.config, ours)
    assert hf_config["architectures"] == ["GPT2LMHeadModel"]
    assert set(back) == {key if key == "lm_head.weight" else f"transformer.{key}" for key in weights}
    for key, value in weights.items():
        np.testing.assert_array_equal(back[key if key == "lm_head.weight" else f"transformer.{key}"], value)


def test_t5_tied_copies_are_compared_on_numpy_arrays(tmp_path):
    config = cfg.preset("t5-tiny")
    shapes = hf_t5.hf_shapes(config)
    weights = _random_folder(tmp_path, hf_t5.config_to_hf(config), shapes)
    converted = hf.read_hf_folder(tmp_path, framework="np")
    assert converted.config == config and converted.architecture == "T5ForConditionalGeneration"
    _, back = hf.to_hf("T5ForConditionalGeneration", config, converted.weights)
    assert back.keys() == weights.keys()
    assert all(np.array_equal(back[key], value) for key, value in weights.items())
    copy = dict(weights, **{"encoder.embed_tokens.weight": weights["shared.weight"] + 1})
    with pytest.raises(ConversionError, match="encoder.embed_tokens.weight differs from shared.weight"):
        hf_t5.state_dict_from_hf(copy, config)


def test_numpy_refuses_bfloat16_files_by_name(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch_file

    write_config(tmp_path, hf_gpt2.config_to_hf(cfg.preset("gpt-tiny")))
    save_torch_file({"wte.weight": torch.zeros(2, 2, dtype=torch.bfloat16)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConversionError, match="wte.weight is bfloat16, which numpy lacks"):
        hf.read_hf_folder(tmp_path, framework="np")


def test_the_numpy_path_imports_no_framework(tmp_path):
    """A port reads and writes Hugging Face folders through these maps without torch."""
    config = cfg.preset("gpt-tiny", vocab_size=23)
    backbone, heads = hf_gpt2.hf_shapes(config)
    _random_folder(tmp_path, hf_gpt2.config_to_hf(config), {**backbone, **heads})
    code = (
        "import sys\n"
        "from taa.convert import hf\n"
        f"converted = hf.read_hf_folder({str(tmp_path)!r}, framework='np')\n"
        "hf.to_hf(converted.architecture, converted.config, converted.weights)\n"
        "print(','.join(m for m in ('torch', 'tensorflow', 'jax', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
