"""Hugging Face BERT <-> taa BERT: BertModel, BertForMaskedLM and BertForSequenceClassification.

Equal outputs both ways (with padding), exact round trips, the checkpoint variants met
in practice (bare or ``bert.``-prefixed backbones, buffers, TensorFlow-era names,
pre-training heads, sentence-transformers folders), and one error listing every bad key.
No downloads: tiny random transformers models are built from configs.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from taa import config as cfg
from taa.convert import hf_bert
from taa.convert.state_dict import ConversionError
from taa.torch.convert.hf import load_hf_folder, save_hf_folder
from taa.torch.models.bert import BertForMaskedLM, BertForSequenceClassification, BertModel

transformers = pytest.importorskip("transformers")

VOCAB = 57
CLASSES = {
    "BertModel": BertModel,
    "BertForMaskedLM": BertForMaskedLM,
    "BertForSequenceClassification": BertForSequenceClassification,
}


def hf_model(architecture: str, seed: int = 0, **overrides):
    """A tiny random transformers BERT; every tensor (norms included) distinct, so a swapped key shows."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=20, type_vocab_size=3, num_labels=3, **overrides,
    )
    model = getattr(transformers, architecture)(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids (3, 9), a right-padding mask (rows with 0, 4 and 7 pads), token types."""
    ids = torch.randint(1, VOCAB, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    types = torch.zeros(3, 9, dtype=torch.long)
    types[:, 4:] = 1
    types[0, 7:] = 2
    return ids, mask, types


def assert_same_outputs(theirs, ours, architecture: str) -> None:
    """Equal hidden states / logits (at real tokens) and pooled output, with and without padding."""
    ids, mask, types = inputs()
    with torch.no_grad():
        for attention_mask in (None, mask):
            output = theirs(ids, attention_mask=attention_mask, token_type_ids=types)
            mine = ours(ids, attention_mask, types)
            real = (mask if attention_mask is not None else torch.ones_like(mask)).bool()
            if architecture == "BertModel":
                torch.testing.assert_close(mine[real], output.last_hidden_state[real], atol=1e-5, rtol=0)
                torch.testing.assert_close(ours.pool(mine), output.pooler_output, atol=1e-5, rtol=0)
            elif architecture == "BertForMaskedLM":
                torch.testing.assert_close(mine[real], output.logits[real], atol=1e-5, rtol=0)
            else:
                torch.testing.assert_close(mine, output.logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("architecture", list(CLASSES))
def test_hugging_face_folder_loads_with_equal_outputs(tmp_path, architecture: str) -> None:
    theirs = hf_model(architecture)
    theirs.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_hf_folder(tmp_path)
    assert type(ours) is CLASSES[architecture] and not ours.training
    assert ours.config.num_labels == 3 and ours.config.type_vocab_size == 3 and ours.config.norm_eps == 1e-12
    assert_same_outputs(theirs, ours, architecture)


@pytest.mark.parametrize("architecture", list(CLASSES))
def test_our_folder_loads_into_transformers_with_equal_outputs(tmp_path, architecture: str) -> None:
    torch.manual_seed(0)
    config = cfg.preset("bert-tiny", vocab_size=VOCAB, type_vocab_size=3, num_labels=3, max_length=20)
    ours = CLASSES[architecture](config).eval()
    with torch.no_grad():
        for parameter in ours.parameters():
            parameter.normal_(0.0, 0.2)
    save_hf_folder(ours, tmp_path)
    auto = {"BertModel": "AutoModel", "BertForMaskedLM": "AutoModelForMaskedLM",
            "BertForSequenceClassification": "AutoModelForSequenceClassification"}[architecture]
    theirs, info = getattr(transformers, auto).from_pretrained(tmp_path, output_loading_info=True)
    assert type(theirs).__name__ == architecture
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    assert_same_outputs(theirs.eval(), ours, architecture)
    again = load_hf_folder(tmp_path)
    assert again.config == ours.config
    for key, value in ours.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


@pytest.mark.parametrize("architecture", list(CLASSES))
def test_state_dict_round_trip_is_exact(architecture: str) -> None:
    theirs = hf_model(architecture)
    state = {k: v for k, v in theirs.state_dict().items() if not k.startswith("cls.predictions.decoder.")}
    config = hf_bert.config_from_hf(theirs.config.to_dict())
    back = hf_bert.state_dict_to_hf(hf_bert.state_dict_from_hf(state, config, architecture), config, architecture)
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key


def test_checkpoint_variants_met_in_practice(tmp_path) -> None:
    """A pre-training checkpoint read as masked LM: TensorFlow names, position_ids, pooler and NSP head,
    an explicit (tied) decoder. And a BertModel saved with the ``bert.`` prefix and no pooler."""
    theirs = hf_model("BertForMaskedLM")
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v.clone()
             for k, v in theirs.state_dict().items()}
    state["bert.embeddings.position_ids"] = torch.arange(20)[None]
    state["bert.pooler.dense.weight"], state["bert.pooler.dense.bias"] = torch.zeros(32, 32), torch.zeros(32)
    state["cls.seq_relationship.weight"], state["cls.seq_relationship.bias"] = torch.zeros(2, 32), torch.zeros(2)
    save_file(state, str(tmp_path / "model.safetensors"))
    theirs.config.architectures = ["BertForPreTraining", "BertForMaskedLM"]  # the first one taa knows is used
    theirs.config.save_pretrained(tmp_path)
    assert_same_outputs(theirs, load_hf_folder(tmp_path), "BertForMaskedLM")

    backbone = hf_model("BertModel")
    prefixed = {f"bert.{k}": v.clone() for k, v in backbone.state_dict().items() if not k.startswith("pooler.")}
    folder = tmp_path / "backbone"
    folder.mkdir()
    save_file(prefixed, str(folder / "model.safetensors"))
    backbone.config.save_pretrained(folder)
    ours = load_hf_folder(folder)
    assert ours.pooler is None
    ids, mask, types = inputs()
    with torch.no_grad():
        expected = backbone(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        torch.testing.assert_close(ours(ids, mask, types)[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=0)


def test_sentence_transformers_folder_with_a_module_subfolder(tmp_path) -> None:
    theirs = hf_model("BertModel")
    theirs.save_pretrained(tmp_path / "0_Transformer", safe_serialization=True)
    modules = [
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert_same_outputs(theirs, load_hf_folder(tmp_path), "BertModel")


def test_missing_unexpected_and_misshaped_keys_are_one_error(tmp_path) -> None:
    hf_model("BertForSequenceClassification").save_pretrained(tmp_path, safe_serialization=True)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["bert.encoder.layer.1.attention.self.key.bias"]
    state["bert.encoder.layer.0.attention.self.rotary"] = torch.zeros(4)
    state["classifier.weight"] = torch.zeros(2, 32)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConversionError) as error:
        load_hf_folder(tmp_path)
    message = str(error.value)
    assert "missing keys: bert.encoder.layer.1.attention.self.key.bias" in message
    assert "unexpected keys: bert.encoder.layer.0.attention.self.rotary" in message
    assert "mis-shaped: classifier.weight (2, 32) != expected (3, 32)" in message


def test_config_errors_name_the_field(tmp_path) -> None:
    hf_model("BertModel", position_embedding_type="relative_key").config.save_pretrained(tmp_path)
    with pytest.raises(ConversionError, match=r"config.json: .*position_embedding_type='relative_key'"):
        load_hf_folder(tmp_path)
    with pytest.raises(ConversionError, match=r"norm_first=True \(BERT is post-norm\)"):
        hf_bert.config_to_hf(cfg.preset("bert-tiny", norm_first=True))
    with pytest.raises(ConversionError, match=r"classifier_pooling='mean' \(BertForSequenceClassification pools"):
        hf_bert.config_to_hf(cfg.preset("bert-tiny", classifier_pooling="mean"), "BertForSequenceClassification")
    with pytest.raises(ConversionError, match="architecture='BertForQuestionAnswering'"):
        load_hf_folder(tmp_path, architecture="BertForQuestionAnswering")


def test_readable_attention_and_norms_also_equal_transformers(tmp_path) -> None:
    """The written-out attention and LayerNorm (``attention: readable``), not only the fused kernels."""
    theirs = hf_model("BertModel")
    theirs.save_pretrained(tmp_path, safe_serialization=True)
    fused = load_hf_folder(tmp_path)
    readable = BertModel(dataclasses.replace(fused.config, attention="readable")).eval()
    readable.load_state_dict(fused.state_dict())
    assert_same_outputs(theirs, readable, "BertModel")
