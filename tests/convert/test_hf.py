"""taa.convert.hf: one entry point for every Hugging Face family, picked from config.json.

Tiny random transformers models are built from configs and saved to tmp_path (no
downloads); every family loads into the right taa class with equal outputs, and goes
back to transformers with no missing or unexpected key.
"""

from __future__ import annotations

import json

import pytest
import torch

from taa.convert import hf
from taa.convert.state_dict import ConversionError
from taa.torch.models.bert import BertForMaskedLM, BertForSequenceClassification, BertModel
from taa.torch.models.gpt import GPT
from taa.torch.models.t5 import T5ForConditionalGeneration

transformers = pytest.importorskip("transformers")

IDS = torch.tensor([[5, 7, 9, 11, 3], [4, 4, 8, 2, 6]])
DECODER_IDS = torch.tensor([[0, 5, 6], [0, 7, 8]])


def _randomize(model):
    """Every tensor distinct (norms and biases too), so a swapped key shows."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model.eval()


def build(name: str):
    """A tiny random transformers model of class ``name``."""
    torch.manual_seed(0)
    if name == "GPT2LMHeadModel":
        config = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    elif name.startswith("Bert"):
        config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=16, num_labels=3)
    else:
        config = transformers.T5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                                       relative_attention_num_buckets=8, relative_attention_max_distance=16)
    return _randomize(getattr(transformers, name)(config))


def outputs(model, ours: bool) -> torch.Tensor:
    """Logits (or BertModel's hidden states) on a fixed batch."""
    with torch.no_grad():
        if isinstance(model, (T5ForConditionalGeneration, transformers.T5ForConditionalGeneration)):
            result = model(IDS, DECODER_IDS) if ours else model(input_ids=IDS, decoder_input_ids=DECODER_IDS)
        else:
            result = model(IDS)
    if ours:
        return result
    return result.last_hidden_state if hasattr(result, "last_hidden_state") else result.logits


CLASSES = {
    "GPT2LMHeadModel": GPT,
    "BertModel": BertModel,
    "BertForMaskedLM": BertForMaskedLM,
    "BertForSequenceClassification": BertForSequenceClassification,
    "T5ForConditionalGeneration": T5ForConditionalGeneration,
}


@pytest.mark.parametrize("name", CLASSES)
def test_every_family_loads_and_saves_through_one_entry_point(tmp_path, name):
    theirs = build(name)
    theirs.save_pretrained(tmp_path / "hf", safe_serialization=True)
    ours = hf.load_hf_folder(tmp_path / "hf")
    assert type(ours) is CLASSES[name] and not ours.training
    torch.testing.assert_close(outputs(ours, True), outputs(theirs, False), atol=1e-5, rtol=0)

    hf.save_hf_folder(ours, tmp_path / "back")
    again, info = getattr(transformers, name).from_pretrained(tmp_path / "back", output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    torch.testing.assert_close(outputs(again.eval(), False), outputs(theirs, False), atol=1e-5, rtol=0)


@pytest.mark.parametrize("config, expected", [
    ({"model_type": "gpt2"}, "gpt2"),
    ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, "bert"),
    ({"architectures": ["T5ForConditionalGeneration"]}, "t5"),  # no model_type: the class says
    ({"architectures": ["Foo", "BertModel"]}, "bert"),
])
def test_family_from_model_type_or_architectures(config, expected):
    assert hf.family(config, "config.json") == expected


@pytest.mark.parametrize("config, message", [
    ({"model_type": "llama"}, "config.json: model_type='llama' is not supported (taa converts gpt2, bert, t5)"),
    ({"architectures": ["LlamaForCausalLM"]}, "config.json: no model_type, and architectures=['LlamaForCausalLM']"),
    ({}, "config.json: no model_type, and architectures=None"),
])
def test_unknown_families_are_one_line_errors(config, message):
    with pytest.raises(ConversionError) as error:
        hf.family(config, "config.json")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(ConversionError, match="no such folder"):
        hf.load_hf_folder(tmp_path / "missing")
    with pytest.raises(ConversionError, match=r"no config.json \(not a Hugging Face model folder\)"):
        hf.load_hf_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 10, "n_head": 3}))
    with pytest.raises(ConversionError, match="config.json: d_model=10 is not divisible by n_heads=3") as error:
        hf.load_hf_folder(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_a_model_without_counterpart_is_refused(tmp_path):
    with pytest.raises(ConversionError, match="Linear has no Hugging Face counterpart"):
        hf.save_hf_folder(torch.nn.Linear(2, 2), tmp_path)


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
