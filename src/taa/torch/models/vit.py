"""The Vision Transformer: the Transformer encoder over image patches.

ViT (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale", §3.1) reads an image as a sequence:

- the image (C, H, W) is cut into N = HW / P^2 patches of P x P pixels, each flattened to
  P^2 C values and projected linearly to D (Eq. 1). A convolution with a P x P kernel and
  stride P computes exactly that projection (:class:`PatchEmbedding`, and
  :meth:`PatchEmbedding.flattened_patches` for the paper's form);
- a learned class token x_class goes in front (like BERT's [CLS]), and learned 1-D
  position embeddings are added: z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos (Eq. 1);
- L pre-norm encoder layers of multi-head self-attention and a GELU MLP (Eq. 2-3), the
  blocks of :mod:`taa.torch.blocks`, then a final LayerNorm (Eq. 4);
- the classification head reads the class token's final state y = LN(z_L^0) (Eq. 4), or
  the mean of the patch tokens' (global average pooling, §D.3).

Images of another size than the position table was made for get their positions
interpolated bicubically over the patch grid (§3.2, "Fine-tuning and higher resolution").

Class and module names follow transformers (``ViTModel``, ``ViTForImageClassification``)
and map one to one onto theirs (:mod:`taa.convert.hf_vit`); they are called as theirs are:
``model(pixel_values)`` with (batch, channels, height, width) floats.

Notation: ``b`` batch, ``c`` channels, ``h``/``w`` height and width in pixels, ``p`` patch
size, ``n`` patches, ``d`` d_model, ``k`` classes.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taa.config import ViTConfig
from taa.torch.blocks import Encoder
from taa.torch.dropout import Dropout
from taa.torch.models.bert import BertModel, BertPooler
from taa.torch.models.transformer import Transformer


def truncated_normal_init_(model: nn.Module, std: float) -> None:
    """ViT's initialisation (as transformers' and timm's): linear and convolution weights from
    N(0, std) truncated at two standard deviations, biases zero; norms keep ones and zeros."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class PatchEmbedding(nn.Module):
    """Cut an image into P x P patches and project each to d_model (Eq. 1's x_p E)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.patch_size, self.num_channels, self.overlap = config.patch_size, config.num_channels, config.patch_overlap
        # kernel = stride = P: each output position sees one patch, once (overlap o: a P + 2o
        # kernel, padded by o, so each patch also sees o pixels of its neighbours)
        self.projection = nn.Conv2d(config.num_channels, config.d_model, config.patch_size + 2 * self.overlap,
                                    stride=config.patch_size, padding=self.overlap)

    def forward(self, pixel_values: Tensor) -> Tensor:  # (b, c, h, w) -> (b, n, d)
        self.check(pixel_values)
        return self.projection(pixel_values).flatten(2).transpose(1, 2)  # (b, d, h/p, w/p) -> (b, n, d)

    def check(self, pixel_values: Tensor) -> None:
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values should be (batch, channels, height, width), got shape "
                             f"{tuple(pixel_values.shape)}")
        _, channels, height, width = pixel_values.shape
        if channels != self.num_channels:
            raise ValueError(f"pixel_values have {channels} channels; the model takes {self.num_channels}")
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"an image of {height} x {width} pixels does not split into {p} x {p} patches")

    def flattened_patches(self, pixel_values: Tensor) -> Tensor:
        """The paper's x_p: (b, c, h, w) -> (b, n, p*p*c), each patch flattened channel-first
        (the convolution kernel's order), patches in row-major order; patches that do not overlap."""
        if self.overlap:
            raise ValueError(f"patch_overlap={self.overlap}: the patches overlap; the paper's flattened "
                             f"patches are the non-overlapping ones")
        self.check(pixel_values)
        b, c, h, w = pixel_values.shape
        p = self.patch_size
        patches = pixel_values.reshape(b, c, h // p, p, w // p, p)  # (b, c, rows, p, cols, p)
        return patches.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)

    def project_flattened(self, patches: Tensor) -> Tensor:
        """Eq. 1's x_p E as a matrix product on :meth:`flattened_patches`: the same numbers as forward."""
        weight = self.projection.weight.flatten(1)  # (d, c*p*p)
        return patches @ weight.T + self.projection.bias


def interpolate_positions(table: Tensor, grid: tuple[int, int]) -> Tensor:
    """Patch position embeddings (n, d) of a square grid -> (rows * cols, d), resized
    bicubically to ``grid`` = (rows, cols) (§3.2: "2D interpolation of the pre-trained
    position embeddings, according to their location in the original image")."""
    n, d = table.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"a position table of {n} patches is not a square grid")
    if (side, side) == grid:
        return table
    square = table.reshape(1, side, side, d).permute(0, 3, 1, 2)  # (1, d, side, side)
    resized = F.interpolate(square, size=grid, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], d)


class ViTEmbeddings(nn.Module):
    """The patch embeddings, the class token in front, the learned positions, dropout (Eq. 1)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        d = config.d_model
        self.patch_size = config.patch_size
        self.patch_embeddings = PatchEmbedding(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches + 1, d))  # class token first
        self.dropout = Dropout(config.dropout)

    def forward(self, pixel_values: Tensor) -> Tensor:  # (b, c, h, w) -> (b, 1 + n, d)
        x = self.patch_embeddings(pixel_values)  # (b, n, d)
        b = x.shape[0]
        grid = (pixel_values.shape[2] // self.patch_size, pixel_values.shape[3] // self.patch_size)
        table = self.position_embeddings[0]  # (1 + n0, d)
        positions = torch.cat([table[:1], interpolate_positions(table[1:], grid)])  # (1 + n, d)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)  # (b, 1 + n, d)
        return self.dropout(x + positions.to(x.dtype))


class ViTModel(nn.Module):
    """The ViT encoder: ``model(pixel_values)`` -> the last hidden states (b, 1 + n, d), after
    the final LayerNorm (Eq. 4's LN), the class token first.

    The pooler is transformers' (a ``ViTModel`` of theirs has one unless built with
    ``add_pooling_layer=False``); :meth:`pool` applies it. The classifier needs none.
    """

    def __init__(self, config: ViTConfig, pooler: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embeddings = ViTEmbeddings(config)
        self.encoder = Encoder(config, config.n_layers, final_norm=True)
        self.pooler = BertPooler(config) if pooler else None  # transformers' pooler: tanh(W z_L^0 + b)
        truncated_normal_init_(self, config.init_std)
        nn.init.trunc_normal_(self.embeddings.position_embeddings, std=config.init_std,
                              a=-2 * config.init_std, b=2 * config.init_std)
        nn.init.trunc_normal_(self.embeddings.cls_token, std=config.init_std,
                              a=-2 * config.init_std, b=2 * config.init_std)

    def forward(self, pixel_values: Tensor) -> Tensor:  # (b, c, h, w) -> (b, 1 + n, d)
        return self.encoder(self.embeddings(pixel_values))

    pool = BertModel.pool  # last hidden states -> the pooled class token (b, d)
    build_options = BertModel.build_options  # {"pooler": ...}: what model.yaml keeps to build it again
    num_parameters = Transformer.num_parameters
    parameter_breakdown = Transformer.parameter_breakdown


def pool_image(hidden: Tensor, pooling: str) -> Tensor:
    """The image's vector from the last hidden states (b, 1 + n, d) -> (b, d): the class
    token's (``"cls"``) or the mean of the patch tokens' (``"mean"``)."""
    return hidden[:, 0] if pooling == "cls" else hidden[:, 1:].mean(dim=1)


class ViTForImageClassification(nn.Module):
    """ViT with a linear classifier (Eq. 4's head): ``model(pixel_values)`` -> logits (b, k)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.vit = ViTModel(config, pooler=False)
        self.dropout = Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        truncated_normal_init_(self.classifier, config.init_std)

    def forward(self, pixel_values: Tensor) -> Tensor:  # (b, c, h, w) -> (b, k)
        return self.classifier(self.dropout(pool_image(self.vit(pixel_values), self.config.pooling)))

    num_parameters = Transformer.num_parameters
    parameter_breakdown = Transformer.parameter_breakdown


@torch.no_grad()
def attention_rollout(attentions: list[Tensor], residual: bool = True) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020; ViT §D.8): how much each input token flows
    into each output token through all the layers. ``attentions``: each layer's weights
    (b, heads, t, t); heads are averaged, the residual connection is counted as half the
    flow (0.5 A + 0.5 I, rows renormalised), and the layers' matrices are multiplied.
    Returns (b, t, t); row 0 is the class token's attention over the image (t = 1 + n)."""
    rollout: Optional[Tensor] = None
    for weights in attentions:
        flow = weights.float().mean(dim=1)  # (b, t, t)
        if residual:
            flow = 0.5 * flow + 0.5 * torch.eye(flow.shape[-1], dtype=flow.dtype, device=flow.device)
            flow = flow / flow.sum(dim=-1, keepdim=True)
        rollout = flow if rollout is None else flow @ rollout
    if rollout is None:
        raise ValueError("attention rollout needs the attention weights of at least one layer")
    return rollout
