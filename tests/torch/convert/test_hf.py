"""taa.torch.convert.hf: one entry point that loads every Hugging Face family into a torch
model, and saves it back.

Tiny random transformers models are built from configs and saved to tmp_path (no
downloads); every family loads into the right taa class with equal outputs, and goes
back to transformers with no missing or unexpected key. A bfloat16 folder passes
through the key maps as torch tensors, bit for bit.
"""

from __future__ import annotations

import json

import pytest
import torch

from taa.convert.state_dict import ConversionError
from taa.torch.convert.hf import load_hf_folder, save_hf_folder
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
    ours = load_hf_folder(tmp_path / "hf")
    assert type(ours) is CLASSES[name] and not ours.training
    torch.testing.assert_close(outputs(ours, True), outputs(theirs, False), atol=1e-5, rtol=0)

    save_hf_folder(ours, tmp_path / "back")
    again, info = getattr(transformers, name).from_pretrained(tmp_path / "back", output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    torch.testing.assert_close(outputs(again.eval(), False), outputs(theirs, False), atol=1e-5, rtol=0)


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(ConversionError, match="no such folder"):
        load_hf_folder(tmp_path / "missing")
    with pytest.raises(ConversionError, match=r"no config.json \(not a Hugging Face model folder\)"):
        load_hf_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 10, "n_head": 3}))
    with pytest.raises(ConversionError, match="config.json: d_model=10 is not divisible by n_heads=3") as error:
        load_hf_folder(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_a_model_without_counterpart_is_refused(tmp_path):
    with pytest.raises(ConversionError, match="Linear has no Hugging Face counterpart"):
        save_hf_folder(torch.nn.Linear(2, 2), tmp_path)


@pytest.mark.parametrize("name", ["GPT2LMHeadModel", "BertForMaskedLM", "T5ForConditionalGeneration"])
def test_a_bfloat16_folder_loads_bit_for_bit(tmp_path, name):
    """numpy has no bfloat16: the torch side keeps the tensors as they are through the key maps."""
    theirs = build(name).to(torch.bfloat16)
    theirs.save_pretrained(tmp_path / "hf", safe_serialization=True)
    ours = load_hf_folder(tmp_path / "hf")
    assert next(ours.parameters()).dtype == torch.float32  # built in float32, cast as they load
    save_hf_folder(ours.to(torch.bfloat16), tmp_path / "back")
    from safetensors.torch import load_file

    written, saved = load_file(str(tmp_path / "back" / "model.safetensors")), theirs.state_dict()
    assert written and all(value.dtype == torch.bfloat16 for value in written.values())
    for key, value in written.items():
        assert torch.equal(value, saved[key]), key
