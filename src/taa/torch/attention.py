"""Attention: the one module every taa model uses ("Attention Is All You Need" §3.2).

Scaled dot-product attention (§3.2.1, equation 1):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

Multi-head attention (§3.2.2) projects queries, keys and values h times, attends in
each head in parallel, concatenates the heads and projects back:

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

Masks are boolean with True = "may attend", broadcastable to (b, h, q, k). A query
with nothing to attend to (a fully masked row) gets all-zero weights and a zero
output, never NaN.

Which kernel computes equation 1 on a given device and dtype (PyTorch's fused one or the
readable one written out here) is decided in :mod:`taa.torch.kernels`; both give the same
numbers, and tests pin them to each other.

Notation: ``b`` batch, ``h`` query heads, ``g`` key/value heads, ``q`` query length,
``k`` key length, ``e`` head dim, ``d`` d_model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taa.torch import kernels
from taa.torch.dropout import dropout
from taa.torch.positional import RotaryEmbedding

# --------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------


def padding_mask(
    tokens: Optional[Tensor] = None,
    pad_id: Optional[int] = None,
    *,
    lengths: Optional[Tensor] = None,
    max_length: Optional[int] = None,
) -> Tensor:
    """(b, n) bool, True at real tokens: from token ids and a pad id, or from lengths."""
    if tokens is not None:
        if pad_id is None:
            raise ValueError("padding_mask(tokens) needs pad_id")
        return tokens != pad_id
    if lengths is None:
        raise ValueError("padding_mask needs tokens and pad_id, or lengths")
    max_length = int(lengths.max()) if max_length is None else max_length
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def causal_mask(query_length: int, key_length: Optional[int] = None, device=None) -> Tensor:
    """(q, k) bool: query i may attend key j when j <= i (aligned at the end when k > q).

    With a KV cache the q new queries sit at positions k-q..k-1, so key j is visible
    to query i when j <= i + (k - q).
    """
    key_length = query_length if key_length is None else key_length
    offset = key_length - query_length
    query_positions = torch.arange(query_length, device=device)[:, None] + offset
    return torch.arange(key_length, device=device)[None, :] <= query_positions


def key_padding_to_attention_mask(key_padding: Tensor) -> Tensor:
    """(b, k) padding mask -> (b, 1, 1, k), broadcastable over heads and queries."""
    return key_padding[:, None, None, :]


def combine_masks(*masks: Optional[Tensor]) -> Optional[Tensor]:
    """Logical AND of broadcastable boolean masks; None entries are ignored."""
    combined = None
    for mask in masks:
        if mask is not None:
            combined = mask if combined is None else combined & mask
    return combined


def attention_mask(
    key_padding: Optional[Tensor] = None,
    causal: bool = False,
    query_length: Optional[int] = None,
    device=None,
) -> Optional[Tensor]:
    """Padding and causal masks combined into one (b, 1, q, k) or (q, k) boolean mask, on the
    padding mask's device (``device`` when there is none)."""
    mask = key_padding_to_attention_mask(key_padding) if key_padding is not None else None
    if causal:
        if query_length is None and key_padding is None:
            raise ValueError("attention_mask(causal=True) needs query_length or key_padding")
        key_length = key_padding.shape[-1] if key_padding is not None else query_length
        query_length = key_length if query_length is None else query_length
        device = key_padding.device if key_padding is not None else device
        mask = combine_masks(mask, causal_mask(query_length, key_length, device))
    return mask


# --------------------------------------------------------------------------------------
# Scaled dot-product attention: the readable reference and the fused kernel
# --------------------------------------------------------------------------------------


def _repeat_kv_heads(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """Grouped-query attention: each of the g key/value heads serves h/g query heads."""
    heads, kv_heads = query.shape[-3], key.shape[-3]
    if heads == kv_heads:
        return key, value
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} key/value heads")
    groups = heads // kv_heads
    return key.repeat_interleave(groups, dim=-3), value.repeat_interleave(groups, dim=-3)


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    *,
    bias: Optional[Tensor] = None,
    scale: Optional[float] = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """The readable reference of equation 1: softmax(Q K^T / sqrt(d_k) + bias, masked) V.

    query (b, h, q, e), key and value (b, g, k, e) with g dividing h; ``mask`` bool,
    True = may attend, broadcastable to (b, h, q, k); ``bias`` added to the logits
    (T5's relative positions); ``scale`` defaults to 1/sqrt(e). Returns the output
    (b, h, q, e) and, with ``return_weights``, the weights (b, h, q, k).
    """
    key, value = _repeat_kv_heads(query, key, value)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    # Scaling the queries equals scaling the scores, on k/e times fewer numbers.
    scores = torch.matmul(query * scale, key.transpose(-2, -1))  # (b, h, q, k)
    if bias is not None:
        bias = bias.to(scores.dtype)  # as the fused kernel takes it: scores keep their dtype
    if mask is not None:
        # The mask as an additive bias of its own small shape: 0 where a key may be seen,
        # a large finite negative where not, so masked keys get exactly zero weight. Half
        # the dtype's minimum leaves room for the scores (no overflow to -inf, no NaN).
        # One broadcast addition: masked_fill with a broadcast mask was ~14x slower on CPUs.
        blocked = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
        blocked.masked_fill_(~mask, torch.finfo(scores.dtype).min / 2)
        bias = blocked if bias is None else bias + blocked  # still the small shape
    if bias is not None:
        scores = scores + bias  # one pass over the (b, h, q, k) scores
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        empty_rows = kernels.empty_query_rows(mask)  # (.., q, 1): queries that see no key, or None
        if empty_rows is not None:
            weights = weights.masked_fill(empty_rows, 0.0)  # zero weights there, not uniform ones
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p)
    output = torch.matmul(weights, value)  # (b, h, q, e)
    return (output, weights) if return_weights else output


def fused_scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    *,
    bias: Optional[Tensor] = None,
    scale: Optional[float] = None,
    is_causal: bool = False,
) -> Tensor:
    """Same numbers as :func:`scaled_dot_product_attention`, on PyTorch's fused kernel."""
    key, value = _repeat_kv_heads(query, key, value)
    return kernels.fused_attention(query, key, value, mask, dropout_p, bias=bias, scale=scale, is_causal=is_causal)


def attend(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Optional[Tensor] = None,
    *,
    causal: bool = False,
    bias: Optional[Tensor] = None,
    scale: Optional[float] = None,
    dropout_p: float = 0.0,
    implementation: str = "fused",
    return_weights: bool = False,
) -> tuple[Tensor, Optional[Tensor]]:
    """Equation 1 on the fused kernel where it is the faster one, else on the readable one.

    The readable kernel also runs on request and whenever weights are wanted.
    ``causal`` adds the causal mask (aligned at the end when keys outnumber queries, as
    with a KV cache). Returns (output, weights or None).
    """
    query_length, key_length = query.shape[-2], key.shape[-2]
    if implementation not in ("fused", "readable"):
        raise ValueError(f"attention implementation {implementation!r} is not 'fused' or 'readable'")
    fused = implementation == "fused" and not return_weights and kernels.use_fused_attention(query)
    is_causal = False
    if causal and query_length > 1:  # one query at the end of the keys sees them all
        if fused and mask is None and bias is None and query_length == key_length:
            is_causal = True  # the fused kernel's own causal path: no mask tensor at all
        else:
            mask = combine_masks(mask, causal_mask(query_length, key_length, query.device))
    if fused:
        output = fused_scaled_dot_product_attention(
            query, key, value, mask, dropout_p, bias=bias, scale=scale, is_causal=is_causal
        )
        return output, None
    output, weights = scaled_dot_product_attention(
        query, key, value, mask, dropout_p, return_weights=True, bias=bias, scale=scale
    )
    return output, weights


# --------------------------------------------------------------------------------------
# Multi-head attention with a KV cache
# --------------------------------------------------------------------------------------


@dataclass
class KVCache:
    """Keys and values already computed, for incremental decoding.

    Self-attention appends one step's keys and values at a time; cross-attention
    stores the encoder memory's projections once and reuses them.

    With ``capacity`` set (generation knows its longest sequence up front), the first
    append allocates room for ``capacity`` positions and later ones are copied into it:
    ``keys``/``values`` are then views of the filled part, and a step no longer copies
    the whole cache the way concatenation does. Appending past the capacity falls back
    to concatenation.
    """

    keys: Optional[Tensor] = None  # (b, g, t, e)
    values: Optional[Tensor] = None  # (b, g, t, e)
    capacity: Optional[int] = None  # positions to allocate at the first append; None: concatenate
    key_buffer: Optional[Tensor] = field(default=None, repr=False)  # (b, g, capacity, e) when preallocated
    value_buffer: Optional[Tensor] = field(default=None, repr=False)

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        length, new = self.length, keys.shape[-2]
        if self.capacity is not None and self.key_buffer is None and self.keys is None:
            shape = (*keys.shape[:-2], max(self.capacity, new), keys.shape[-1])
            self.key_buffer, self.value_buffer = keys.new_empty(shape), values.new_empty(shape)
        if self.key_buffer is not None and length + new <= self.key_buffer.shape[-2]:
            self.key_buffer[..., length : length + new, :] = keys  # in place: no copy of the earlier steps
            self.value_buffer[..., length : length + new, :] = values
            self.keys = self.key_buffer[..., : length + new, :]
            self.values = self.value_buffer[..., : length + new, :]
        elif self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.key_buffer = self.value_buffer = None  # full: grow by concatenation from here on
            self.keys = torch.cat([self.keys, keys], dim=-2)
            self.values = torch.cat([self.values, values], dim=-2)
        return self.keys, self.values

    def reorder(self, indices: Tensor) -> None:
        """Keep batch rows ``indices`` (beam search reorders hypotheses each step)."""
        if self.key_buffer is not None:
            length = self.length
            for name in ("key_buffer", "value_buffer"):
                buffer = getattr(self, name)
                reordered = buffer.new_empty((indices.numel(), *buffer.shape[1:]))
                reordered[..., :length, :] = buffer[..., :length, :].index_select(0, indices)
                setattr(self, name, reordered)
            self.keys = self.key_buffer[..., :length, :]
            self.values = self.value_buffer[..., :length, :]
        elif self.keys is not None:
            self.keys = self.keys.index_select(0, indices)
            self.values = self.values.index_select(0, indices)


class MultiHeadAttention(nn.Module):
    """Multi-head attention (§3.2.2): self-attention, or cross-attention given a context.

    ``n_kv_heads`` < ``n_heads`` gives grouped-query attention (Ainslie et al. 2023);
    ``rotary`` rotates queries and keys by position (self-attention only); ``scale``
    overrides 1/sqrt(head_dim) (T5 uses 1).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: Optional[int] = None,
        *,
        head_dim: Optional[int] = None,
        context_dim: Optional[int] = None,
        bias: bool = True,
        dropout: float = 0.0,
        scale: Optional[float] = None,
        implementation: str = "fused",
        rotary: Optional[RotaryEmbedding] = None,
    ) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
            head_dim = d_model // n_heads
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}")
        context_dim = d_model if context_dim is None else context_dim
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.dropout, self.scale, self.implementation = dropout, scale, implementation
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=bias)  # W^Q for all heads
        self.k_proj = nn.Linear(context_dim, n_kv_heads * head_dim, bias=bias)  # W^K
        self.v_proj = nn.Linear(context_dim, n_kv_heads * head_dim, bias=bias)  # W^V
        self.out_proj = nn.Linear(n_heads * head_dim, d_model, bias=bias)  # W^O
        self.rotary = rotary
        self.recorded: Optional[list[Tensor]] = None  # set by capture_attention()

    def _split_heads(self, x: Tensor, heads: int) -> Tensor:  # (b, n, heads*e) -> (b, heads, n, e)
        batch, length, _ = x.shape
        return x.view(batch, length, heads, self.head_dim).transpose(1, 2)

    def _project_together(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention's Q, K and V as one product with [W^Q; W^K; W^V] (the same numbers).

        One larger matrix product instead of three, as transformers' GPT-2 (whose c_attn is
        stacked) does; the stacked weight is rebuilt each call (autograd splits its gradient
        back). :func:`taa.torch.kernels.stack_qkv_projections` says from how many rows it pays.
        """
        projections = (self.q_proj, self.k_proj, self.v_proj)
        weight = torch.cat([p.weight for p in projections])
        bias = torch.cat([p.bias for p in projections]) if self.q_proj.bias is not None else None
        width, kv_width = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        q, k, v = F.linear(x, weight, bias).split([width, kv_width, kv_width], dim=-1)
        return self._split_heads(q, self.n_heads), self._split_heads(k, self.n_kv_heads), \
            self._split_heads(v, self.n_kv_heads)

    def forward(
        self,
        x: Tensor,
        context: Optional[Tensor] = None,
        mask: Optional[Tensor] = None,
        *,
        causal: bool = False,
        position_bias: Optional[Tensor] = None,
        cache: Optional[KVCache] = None,
        return_weights: bool = False,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """x (b, q, d); context (b, k, d_context) for cross-attention, else x itself.

        ``mask`` is over all keys, cached ones included. Returns (output (b, q, d),
        weights (b, h, q, k) or None).
        """
        batch, query_length, _ = x.shape
        stacked = context is None and kernels.stack_qkv_projections(batch * query_length, x.device)
        if stacked:  # self-attention over many rows: Q, K and V from one product
            queries, keys, values = self._project_together(x)
        else:
            queries = self._split_heads(self.q_proj(x), self.n_heads)  # (b, h, q, e)
        if context is not None:  # cross-attention: the context's keys never change
            if cache is not None and cache.keys is not None:
                keys, values = cache.keys, cache.values
            else:
                keys = self._split_heads(self.k_proj(context), self.n_kv_heads)  # (b, g, k, e)
                values = self._split_heads(self.v_proj(context), self.n_kv_heads)
                if cache is not None:
                    cache.append(keys, values)
        else:  # self-attention: new keys join the cached ones
            if not stacked:
                keys = self._split_heads(self.k_proj(x), self.n_kv_heads)  # (b, g, q, e)
                values = self._split_heads(self.v_proj(x), self.n_kv_heads)
            if self.rotary is not None:
                offset = cache.length if cache is not None else 0
                queries, keys = self.rotary(queries, offset), self.rotary(keys, offset)
            if cache is not None:
                keys, values = cache.append(keys, values)
        want_weights = return_weights or self.recorded is not None
        output, weights = attend(
            queries, keys, values, mask,
            causal=causal,
            bias=position_bias,
            scale=self.scale,
            dropout_p=self.dropout if self.training else 0.0,
            implementation=self.implementation,
            return_weights=want_weights,
        )  # (b, h, q, e)
        if self.recorded is not None:
            self.recorded.append(weights.detach())
        output = output.transpose(1, 2).reshape(batch, query_length, self.n_heads * self.head_dim)
        return self.out_proj(output), (weights if return_weights else None)


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[dict[str, list[Tensor]]]:
    """Record every attention module's weights while the block runs.

    >>> with capture_attention(model) as weights:
    ...     model(source, target)
    >>> weights["encoder.layers.0.self_attention"][0].shape  # (b, h, q, k)

    Recording switches those modules to the readable kernel, which returns weights.
    """
    modules = {name: m for name, m in model.named_modules() if isinstance(m, MultiHeadAttention)}
    recorded: dict[str, list[Tensor]] = {name: [] for name in modules}
    for name, module in modules.items():
        module.recorded = recorded[name]
    try:
        yield recorded
    finally:
        for module in modules.values():
            module.recorded = None
