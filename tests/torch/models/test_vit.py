"""The Vision Transformer in torch: the paper's patch projection, sizes, pooling, positions, rollout."""

from __future__ import annotations

import pytest
import torch

from taa import config as cfg
from taa.torch.models.vit import (
    PatchEmbedding,
    ViTForImageClassification,
    ViTModel,
    attention_rollout,
    interpolate_positions,
)


def test_the_strided_convolution_is_the_papers_flattened_patch_projection() -> None:
    """Eq. 1: each P x P patch flattened and multiplied by E equals the convolution's output."""
    torch.manual_seed(0)
    embed = PatchEmbedding(cfg.preset("vit-tiny", patch_size=4, image_size=16))
    images = torch.randn(2, 3, 16, 16)
    patches = embed.flattened_patches(images)
    assert patches.shape == (2, 16, 3 * 4 * 4)
    torch.testing.assert_close(patches[0, 1], images[0, :, 0:4, 4:8].reshape(-1))  # row 0, column 1
    torch.testing.assert_close(embed.project_flattened(patches), embed(images), atol=1e-6, rtol=0)


def test_overlapping_patches_see_their_neighbours_and_keep_the_grid() -> None:
    torch.manual_seed(0)
    embed = PatchEmbedding(cfg.preset("vit-tiny", patch_size=4, image_size=16, patch_overlap=1))
    assert embed.projection.weight.shape[-2:] == (6, 6)
    images = torch.randn(1, 3, 16, 16)
    tokens = embed(images)
    assert tokens.shape == (1, 16, 32)
    nudged = images.clone()
    nudged[0, :, 0, 4] += 1.0  # row 0, column 4: patch (0, 1)'s first pixel, one pixel from patch (0, 0)
    moved = (embed(nudged) - tokens).abs().amax(dim=-1)[0]
    assert moved[0] > 0 and moved[1] > 0 and moved[2] == 0  # the neighbour sees it; two patches away does not
    with pytest.raises(ValueError, match="patch_overlap=1: the patches overlap"):
        embed.flattened_patches(images)
    with pytest.raises(cfg.ConfigError, match="patch_overlap=-1 must be >= 0"):
        cfg.preset("vit-tiny", patch_overlap=-1)


def test_vit_b16_has_as_many_parameters_as_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    theirs = transformers.ViTForImageClassification(transformers.ViTConfig())  # its defaults: ViT-B/16, 2 labels
    ours = ViTForImageClassification(cfg.preset("vit-b16", num_labels=theirs.config.num_labels))
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters()) == 85_800_194
    backbone = transformers.ViTModel(transformers.ViTConfig())  # with its pooler
    assert ViTModel(cfg.preset("vit-b16")).num_parameters() == sum(p.numel() for p in backbone.parameters())


def test_outputs_pooling_and_other_image_sizes() -> None:
    torch.manual_seed(0)
    config = cfg.preset("vit-tiny")
    model = ViTForImageClassification(config).eval()
    assert model(torch.randn(3, 3, 16, 16)).shape == (3, 5)
    assert model.vit(torch.randn(1, 3, 24, 32)).shape == (1, 1 + 6 * 8, 32)  # positions interpolated to 6 x 8
    mean = ViTForImageClassification(cfg.preset("vit-tiny", pooling="mean")).eval()
    mean.load_state_dict(model.state_dict())
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        hidden = model.vit(images)
        torch.testing.assert_close(mean(images), model.classifier(hidden[:, 1:].mean(dim=1)))
        torch.testing.assert_close(model(images), model.classifier(hidden[:, 0]))


def test_interpolating_to_the_same_grid_changes_nothing_and_keeps_a_constant_table() -> None:
    table = torch.randn(16, 8)
    assert interpolate_positions(table, (4, 4)) is table
    constant = torch.ones(16, 8)
    torch.testing.assert_close(interpolate_positions(constant, (6, 5)), torch.ones(30, 8))


@pytest.mark.parametrize("shape, message", [
    ((2, 1, 16, 16), "1 channels; the model takes 3"),
    ((2, 3, 15, 16), "15 x 16 pixels does not split into 4 x 4 patches"),
    ((3, 16, 16), "should be \\(batch, channels, height, width\\)"),
])
def test_wrong_images_are_one_line(shape, message) -> None:
    with pytest.raises(ValueError, match=message):
        ViTModel(cfg.preset("vit-tiny"))(torch.randn(*shape))


def test_attention_rollout_mixes_layers_and_keeps_rows_summing_to_one() -> None:
    torch.manual_seed(0)
    layers = [torch.softmax(torch.randn(2, 4, 5, 5), dim=-1) for _ in range(3)]
    rollout = attention_rollout(layers)
    assert rollout.shape == (2, 5, 5)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 5))
    identity = [torch.eye(5).expand(2, 4, 5, 5)] * 2
    torch.testing.assert_close(attention_rollout(identity), torch.eye(5).expand(2, 5, 5))
    one = 0.5 * layers[0].mean(1) + 0.5 * torch.eye(5)
    torch.testing.assert_close(attention_rollout(layers[:1]), one / one.sum(-1, keepdim=True))
