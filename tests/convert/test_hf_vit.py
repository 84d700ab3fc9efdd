"""Hugging Face ViT <-> taa ViT: ViTModel (with or without its pooler) and ViTForImageClassification.

Equal outputs both ways on tiny random models (float32, 1e-5), exact round trips, an image
of another size through interpolated positions, and one error for what taa cannot read.
No downloads: tiny random transformers models are built from configs.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from taa import config as cfg
from taa.convert import hf_vit
from taa.convert.state_dict import ConversionError
from taa.torch.convert.hf import load_hf_folder, save_hf_folder
from taa.torch.models.vit import ViTForImageClassification, ViTModel

transformers = pytest.importorskip("transformers")

CLASSES = {"ViTModel": ViTModel, "ViTForImageClassification": ViTForImageClassification}


def hf_model(architecture: str, seed: int = 0, pooler: bool = True, **overrides):
    """A tiny random transformers ViT; every tensor (norms included) distinct, so a swapped key shows."""
    torch.manual_seed(seed)
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, image_size=16,
        patch_size=4, num_channels=3, num_labels=5, **overrides,
    )
    model = (transformers.ViTModel(config, add_pooling_layer=pooler) if architecture == "ViTModel"
             else transformers.ViTForImageClassification(config)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


def pixels(size: int = 16) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def assert_same_outputs(theirs, ours, architecture: str, size: int = 16) -> None:
    images = pixels(size)
    with torch.no_grad():
        output = theirs(images, interpolate_pos_encoding=size != 16)
        mine = ours(images)
        if architecture == "ViTModel":
            torch.testing.assert_close(mine, output.last_hidden_state, atol=1e-5, rtol=0)
            if ours.pooler is not None:
                torch.testing.assert_close(ours.pool(mine), output.pooler_output, atol=1e-5, rtol=0)
        else:
            assert mine.shape == (2, 5)
            torch.testing.assert_close(mine, output.logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("architecture", list(CLASSES))
def test_hugging_face_folder_loads_with_equal_outputs(tmp_path, architecture: str) -> None:
    theirs = hf_model(architecture)
    theirs.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_hf_folder(tmp_path)
    assert type(ours) is CLASSES[architecture] and not ours.training
    assert (ours.config.num_labels, ours.config.image_size, ours.config.patch_size) == (5, 16, 4)
    assert_same_outputs(theirs, ours, architecture)
    assert_same_outputs(theirs, ours, architecture, size=24)  # positions interpolated as transformers does


def test_a_vit_model_without_pooler_loads_without_one(tmp_path) -> None:
    theirs = hf_model("ViTModel", pooler=False)
    theirs.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_hf_folder(tmp_path)
    assert ours.pooler is None
    assert_same_outputs(theirs, ours, "ViTModel")


@pytest.mark.parametrize("architecture", list(CLASSES))
def test_our_folder_loads_into_transformers_with_equal_outputs(tmp_path, architecture: str) -> None:
    torch.manual_seed(0)
    ours = CLASSES[architecture](cfg.preset("vit-tiny")).eval()
    with torch.no_grad():
        for parameter in ours.parameters():
            parameter.normal_(0.0, 0.2)
    save_hf_folder(ours, tmp_path)
    auto = {"ViTModel": "AutoModel", "ViTForImageClassification": "AutoModelForImageClassification"}[architecture]
    theirs, info = getattr(transformers, auto).from_pretrained(tmp_path, output_loading_info=True)
    assert type(theirs).__name__ == architecture
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    assert_same_outputs(theirs.eval(), ours, architecture)
    again = load_hf_folder(tmp_path)
    assert again.config == ours.config
    for key, value in ours.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


@pytest.mark.parametrize("architecture", list(CLASSES))
def test_state_dict_round_trip_is_exact(tmp_path, architecture: str) -> None:
    theirs = hf_model(architecture)
    theirs.save_pretrained(tmp_path, safe_serialization=True)
    state = load_file(str(tmp_path / "model.safetensors"))  # the names on disk (transformers may rename in memory)
    config = hf_vit.config_from_hf(theirs.config.to_dict())
    back = hf_vit.state_dict_to_hf(hf_vit.state_dict_from_hf(state, config, architecture), config, architecture)
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key


def test_what_taa_cannot_read_is_one_line(tmp_path) -> None:
    theirs = hf_model("ViTModel", qkv_bias=False)
    theirs.save_pretrained(tmp_path / "nobias", safe_serialization=True)
    with pytest.raises(ConversionError, match=r"config.json: ViT config: unsupported qkv_bias=false"):
        load_hf_folder(tmp_path / "nobias")

    theirs = hf_model("ViTForImageClassification")
    theirs.save_pretrained(tmp_path / "cut", safe_serialization=True)
    weights = load_file(str(tmp_path / "cut" / "model.safetensors"))
    del weights["classifier.bias"]
    weights["vit.embeddings.position_embeddings"] = torch.zeros(1, 5, 32)
    save_file(weights, str(tmp_path / "cut" / "model.safetensors"))
    with pytest.raises(ConversionError) as error:
        load_hf_folder(tmp_path / "cut")
    message = str(error.value)
    assert "\n" not in message and "classifier.bias" in message and "position_embeddings" in message

    config = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert config["model_type"] == "vit"
    with pytest.raises(ConversionError, match="pooling='mean'"):
        hf_vit.config_to_hf(cfg.preset("vit-tiny", pooling="mean"), "ViTForImageClassification")
    with pytest.raises(ConversionError, match=r"patch_overlap=1 \(ViT's patches do not overlap\)"):
        hf_vit.config_to_hf(cfg.preset("vit-tiny", patch_overlap=1))


def test_taa_convert_takes_a_vit_folder_both_ways(tmp_path) -> None:
    from click.testing import CliRunner

    from taa.cli import main

    theirs = hf_model("ViTForImageClassification")
    theirs.save_pretrained(tmp_path / "hf", safe_serialization=True)
    runner = CliRunner()
    result = runner.invoke(main, ["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "taa")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["convert", "--to-hf", str(tmp_path / "taa"), "--out", str(tmp_path / "back")])
    assert result.exit_code == 0, result.output
    again = transformers.ViTForImageClassification.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(pixels()).logits, theirs(pixels()).logits, atol=1e-5, rtol=0)
