"""Normalisation layers, written out.

LayerNorm (Ba et al. 2016) is the norm of "Attention Is All You Need" §3.1:
every sub-layer's output is ``LayerNorm(x + Sublayer(x))``. RMSNorm (Zhang &
Sennrich 2019) drops the mean subtraction and the bias; T5 and LLaMA use it.

Each is written out in ``reference_forward``, the formula as the papers give it. Like
attention, ``forward`` runs PyTorch's fused kernel for the same formula by default
(``fused=False`` runs the written-out one): on a CPU the written-out LayerNorm launches
about 30 small kernels per call forward and backward against 2, which made a training
step of the base model 5-7% slower (``benchmarks/transformer_vs_torch_nn.py``). Tests pin
the two paths, and ``torch.nn``, to each other.

Notation: ``b`` batch, ``n`` length, ``d`` features (normalised over ``d``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm(nn.Module):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias, over the last dimension."""

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True, fused: bool = True) -> None:
        super().__init__()
        self.eps, self.fused = eps, fused
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: Tensor) -> Tensor:  # (b, n, d) -> (b, n, d)
        if self.fused:
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        return self.reference_forward(x)

    def reference_forward(self, x: Tensor) -> Tensor:  # (b, n, d) -> (b, n, d)
        mean = x.mean(dim=-1, keepdim=True)
        centered = x - mean
        variance = centered.pow(2).mean(dim=-1, keepdim=True)  # biased, as in the paper
        normalized = centered * torch.rsqrt(variance + self.eps)
        out = normalized * self.weight
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}, fused={self.fused}"


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight: scale only, no centring, no bias (T5's norm)."""

    def __init__(self, d_model: int, eps: float = 1e-6, fused: bool = True) -> None:
        super().__init__()
        self.eps, self.fused = eps, fused
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:  # (b, n, d) -> (b, n, d)
        if self.fused:
            return F.rms_norm(x.float(), self.weight.shape, None, self.eps).to(x.dtype) * self.weight
        return self.reference_forward(x)

    def reference_forward(self, x: Tensor) -> Tensor:  # (b, n, d) -> (b, n, d)
        # Accumulate the mean square in float32 even under bf16 autocast, as T5 does.
        mean_square = x.float().pow(2).mean(dim=-1, keepdim=True)
        return (x.float() * torch.rsqrt(mean_square + self.eps)).to(x.dtype) * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, fused={self.fused}"


def make_norm(kind: str, d_model: int, eps: float, bias: bool = True, fused: bool = True) -> nn.Module:
    """The norm a config names: ``"layer"`` or ``"rms"``."""
    if kind == "layer":
        return LayerNorm(d_model, eps=eps, bias=bias, fused=fused)
    if kind == "rms":
        return RMSNorm(d_model, eps=eps, fused=fused)
    raise ValueError(f"norm={kind!r} is not 'layer' or 'rms'")
