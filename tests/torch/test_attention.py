"""Attention: the readable and fused kernels, masks, multi-head attention and its KV cache."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from taa.torch import kernels
from taa.torch.attention import (
    KVCache,
    MultiHeadAttention,
    attend,
    attention_mask,
    capture_attention,
    causal_mask,
    combine_masks,
    fused_scaled_dot_product_attention,
    key_padding_to_attention_mask,
    padding_mask,
    scaled_dot_product_attention,
)
from taa.torch.positional import RotaryEmbedding

pytestmark = pytest.mark.usefixtures("single_thread")

ATOL = 1e-5
B, H, Q, K, E = 2, 4, 5, 7, 8  # batch, heads, queries, keys, head dim


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def qkv(
    kv_heads: int = H, queries: int = Q, keys: int = K, seed: int = 0, requires_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, queries, E, generator=generator)
    k = torch.randn(B, kv_heads, keys, E, generator=generator)
    v = torch.randn(B, kv_heads, keys, E, generator=generator)
    return tuple(t.requires_grad_(requires_grad) for t in (q, k, v))


def make_mask(kind: str, queries: int = Q, keys: int = K, seed: int = 1) -> torch.Tensor | None:
    """Boolean masks (True = may attend) of every shape the kernels accept."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([keys, max(keys - 3, 1)])
    padding = key_padding_to_attention_mask(padding_mask(lengths=lengths, max_length=keys))  # (b, 1, 1, k)
    causal = causal_mask(queries, keys)  # (q, k)
    if kind == "none":
        return None
    if kind == "padding":
        return padding
    if kind == "causal":
        return causal
    if kind == "combined":
        return combine_masks(padding, causal)
    if kind == "random":  # per query, shared over heads; every row keeps one key
        mask = torch.rand(B, 1, queries, keys, generator=generator) < 0.6
        mask[..., 0] = True
        return mask
    if kind == "random_per_head":
        mask = torch.rand(B, H, queries, keys, generator=generator) < 0.5
        mask[..., -1] = True
        return mask
    if kind == "empty_rows":  # some rows see nothing at all
        mask = torch.rand(B, 1, queries, keys, generator=generator) < 0.5
        mask[0, 0, 1] = False
        mask[1, 0, 0] = False
        mask[1, 0, queries - 1] = False
        mask[0, 0, 2] = True
        return mask
    if kind == "empty_batch_row":  # one sequence is all padding
        return torch.tensor([[True] * keys, [False] * keys])[:, None, None, :]
    raise ValueError(kind)


MASK_KINDS = ["none", "padding", "causal", "combined", "random", "random_per_head", "empty_rows", "empty_batch_row"]
VARIANTS = ["plain", "bias", "scale", "gqa", "gqa_bias_scale"]


def run_all(q, k, v, mask, bias=None, scale=None) -> dict[str, torch.Tensor]:
    """The output of every way taa has to compute attention."""
    readable, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True, bias=bias, scale=scale)
    outputs = {
        "readable": readable,
        "readable_no_weights": scaled_dot_product_attention(q, k, v, mask, bias=bias, scale=scale),
        "fused": fused_scaled_dot_product_attention(q, k, v, mask, bias=bias, scale=scale),
        "attend_fused": attend(q, k, v, mask, bias=bias, scale=scale)[0],
        "attend_readable": attend(q, k, v, mask, bias=bias, scale=scale, implementation="readable")[0],
        "attend_weights": attend(q, k, v, mask, bias=bias, scale=scale, return_weights=True)[0],
    }
    assert attend(q, k, v, mask, bias=bias, scale=scale)[1] is None
    torch.testing.assert_close(
        attend(q, k, v, mask, bias=bias, scale=scale, return_weights=True)[1], weights, atol=0, rtol=0
    )
    return outputs


def reference_attention(q, k, v, mask=None, bias=None, scale=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Equation 1 in float64 with explicit loops over nothing fancy; empty rows -> zeros."""
    q, k, v = q.double(), k.double(), v.double()
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = q @ k.transpose(-1, -2) * scale
    if bias is not None:
        scores = scores + bias.double()
    if mask is not None:
        mask = mask.expand(scores.shape)
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # an all -inf row gives NaN -> 0
    return (weights @ v).float(), weights.float()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_every_kernel_agrees_for_every_mask(kind: str, variant: str) -> None:
    kv_heads = 2 if variant.startswith("gqa") else H
    q, k, v = qkv(kv_heads, seed=3)
    mask = make_mask(kind)
    bias = torch.randn(1, H, Q, K, generator=torch.Generator().manual_seed(4)) if "bias" in variant else None
    scale = 0.37 if "scale" in variant else None
    expected, expected_weights = reference_attention(q, k, v, mask, bias, scale)
    for name, output in run_all(q, k, v, mask, bias, scale).items():
        assert output.shape == (B, H, Q, E), name
        torch.testing.assert_close(output, expected, atol=ATOL, rtol=0, msg=lambda m: f"{name}: {m}")
    _, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True, bias=bias, scale=scale)
    close(weights, expected_weights)


def test_scale_override_changes_the_result() -> None:
    q, k, v = qkv(seed=5)
    default = scaled_dot_product_attention(q, k, v)
    close(scaled_dot_product_attention(q, k, v, scale=E**-0.5), default)
    assert not torch.allclose(scaled_dot_product_attention(q, k, v, scale=1.0), default, atol=1e-3)
    close(fused_scaled_dot_product_attention(q, k, v, scale=1.0), scaled_dot_product_attention(q, k, v, scale=1.0))


def test_grouped_query_attention_equals_repeated_heads() -> None:
    q, k, v = qkv(kv_heads=2, seed=6)
    mask = make_mask("combined")
    repeated_k, repeated_v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    expected = scaled_dot_product_attention(q, repeated_k, repeated_v, mask)
    close(scaled_dot_product_attention(q, k, v, mask), expected)
    close(fused_scaled_dot_product_attention(q, k, v, mask), expected)
    # query heads 0, 1 share key/value head 0: with identical queries their outputs agree
    q_same = q.clone()
    q_same[:, 1] = q_same[:, 0]
    out = attend(q_same, k, v, mask)[0]
    close(out[:, 1], out[:, 0])
    with pytest.raises(ValueError, match="cannot share"):
        scaled_dot_product_attention(q, *qkv(kv_heads=3)[1:])


@pytest.mark.parametrize("kind", ["random", "random_per_head", "empty_rows", "combined"])
def test_masked_positions_get_exactly_zero_weight(kind: str) -> None:
    q, k, v = qkv(seed=7)
    mask = make_mask(kind)
    q = q * 30  # sharp softmax: masked logits would win if the mask leaked
    bias = torch.randn(1, H, Q, K) * 50
    _, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True, bias=bias)
    full_mask = mask.expand(B, H, Q, K)
    assert torch.all(weights[~full_mask] == 0.0)
    rows = full_mask.any(-1)
    close(weights.sum(-1)[rows], torch.ones(int(rows.sum())))


@pytest.mark.parametrize("path", ["readable", "fused", "attend_fused", "attend_readable"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fully_masked_rows_are_zero_and_never_nan(path: str, with_bias: bool) -> None:
    q, k, v = qkv(kv_heads=2, seed=8, requires_grad=True)
    mask = make_mask("empty_rows")
    bias = torch.randn(1, H, Q, K, requires_grad=True) if with_bias else None
    if path == "readable":
        output, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True, bias=bias)
    elif path == "fused":
        output, weights = fused_scaled_dot_product_attention(q, k, v, mask, bias=bias), None
    else:
        implementation = path.removeprefix("attend_")
        output, weights = attend(q, k, v, mask, bias=bias, implementation=implementation, return_weights=False)
    empty = ~mask.any(-1)  # (b, 1, q)
    empty_rows = empty[:, :, :, None].expand(B, H, Q, E)
    assert int(empty.sum()) == 3
    assert torch.all(output[empty_rows] == 0.0)
    assert torch.isfinite(output).all()
    if weights is not None:
        assert torch.all(weights[empty[..., None].expand(B, H, Q, K)] == 0.0)
    (output * torch.randn_like(output)).sum().backward()
    grads = [q.grad, k.grad, v.grad] + ([bias.grad] if with_bias else [])
    for grad in grads:
        assert grad is not None and torch.isfinite(grad).all()
    # an empty row's query influences nothing
    assert torch.all(q.grad[empty.expand(B, H, Q)] == 0.0)


def test_gradients_of_both_kernels_agree_with_masks() -> None:
    mask = make_mask("empty_rows")
    grads = []
    for kernel in (scaled_dot_product_attention, fused_scaled_dot_product_attention):
        q, k, v = qkv(kv_heads=2, seed=9, requires_grad=True)
        out = kernel(q, k, v, mask)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((q.grad, k.grad, v.grad))
    for ours, theirs in zip(*grads):
        close(ours, theirs, atol=1e-4)


# --------------------------------------------------------------------------------------
# Causal attention through attend()
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["fused", "readable"])
@pytest.mark.parametrize("queries,keys", [(5, 5), (3, 7), (1, 7), (1, 1)])
@pytest.mark.parametrize("with_padding", [False, True])
def test_attend_causal_equals_explicit_mask(implementation: str, queries: int, keys: int, with_padding: bool) -> None:
    q, k, v = qkv(queries=queries, keys=keys, seed=10)
    padding = make_mask("padding", queries, keys) if with_padding else None
    out, _ = attend(q, k, v, padding, causal=True, implementation=implementation)
    expected, _ = reference_attention(q, k, v, combine_masks(padding, causal_mask(queries, keys)))
    close(out, expected)


def test_attend_rejects_unknown_implementation() -> None:
    with pytest.raises(ValueError, match="implementation"):
        attend(*qkv(), implementation="flash")


# --------------------------------------------------------------------------------------
# Mask helpers
# --------------------------------------------------------------------------------------


def test_padding_mask_from_pad_id_and_from_lengths() -> None:
    tokens = torch.tensor([[5, 6, 7, 0, 0], [3, 0, 4, 0, 0], [9, 9, 9, 9, 9]])
    expected = torch.tensor(
        [[True, True, True, False, False], [True, False, True, False, False], [True] * 5]
    )
    assert torch.equal(padding_mask(tokens, pad_id=0), expected)
    lengths = torch.tensor([3, 1, 5])
    from_lengths = padding_mask(lengths=lengths)
    assert from_lengths.dtype == torch.bool
    assert torch.equal(from_lengths, torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]).bool())
    assert padding_mask(lengths=lengths, max_length=7).shape == (3, 7)
    assert not padding_mask(lengths=lengths, max_length=7)[:, 5:].any()
    with pytest.raises(ValueError, match="pad_id"):
        padding_mask(tokens)
    with pytest.raises(ValueError):
        padding_mask()


def test_causal_mask() -> None:
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]]).bool())
    # more keys than queries (KV cache): the queries are the last ones, aligned at the end
    assert torch.equal(causal_mask(2, 4), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]).bool())
    assert torch.equal(causal_mask(1, 5), torch.ones(1, 5, dtype=torch.bool))
    for q in range(1, 6):
        for k in range(q, 8):
            assert torch.equal(causal_mask(q, k), causal_mask(k)[k - q :])


def test_combine_masks() -> None:
    a = torch.tensor([[True, False, True]])
    b = torch.tensor([[True], [False]])
    assert combine_masks() is None
    assert combine_masks(None, None) is None
    assert combine_masks(None, a, None) is a
    assert torch.equal(combine_masks(a, b), torch.tensor([[True, False, True], [False, False, False]]))


def test_attention_mask() -> None:
    key_padding = torch.tensor([[True, True, False], [True, True, True]])
    mask = attention_mask(key_padding)
    assert mask.shape == (2, 1, 1, 3)
    assert torch.equal(mask[:, 0, 0], key_padding)
    causal = attention_mask(key_padding, causal=True)
    assert causal.shape == (2, 1, 3, 3)
    assert torch.equal(causal, key_padding[:, None, None, :] & causal_mask(3))
    assert torch.equal(attention_mask(key_padding, causal=True, query_length=1), key_padding[:, None, None, :])
    assert torch.equal(attention_mask(causal=True, query_length=4), causal_mask(4))
    assert attention_mask() is None
    with pytest.raises(ValueError, match="query_length"):
        attention_mask(causal=True)


# --------------------------------------------------------------------------------------
# MultiHeadAttention against torch.nn.MultiheadAttention
# --------------------------------------------------------------------------------------

D, HEADS = 16, 4


def paired_attention(implementation: str = "fused", seed: int = 0) -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    torch.manual_seed(seed)
    theirs = nn.MultiheadAttention(D, HEADS, batch_first=True, dropout=0.0).eval()
    with torch.no_grad():
        theirs.in_proj_bias.normal_()
        theirs.out_proj.bias.normal_()
    ours = MultiHeadAttention(D, HEADS, implementation=implementation).eval()
    q_w, k_w, v_w = theirs.in_proj_weight.chunk(3)
    q_b, k_b, v_b = theirs.in_proj_bias.chunk(3)
    ours.load_state_dict(
        {
            "q_proj.weight": q_w, "q_proj.bias": q_b,
            "k_proj.weight": k_w, "k_proj.bias": k_b,
            "v_proj.weight": v_w, "v_proj.bias": v_b,
            "out_proj.weight": theirs.out_proj.weight, "out_proj.bias": theirs.out_proj.bias,
        }
    )
    return ours, theirs


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("implementation", ["fused", "readable"])
@pytest.mark.parametrize("setting", ["padding", "causal", "causal_padding", "cross", "cross_padding"])
def test_multi_head_attention_matches_torch(implementation: str, setting: str) -> None:
    ours, theirs = paired_attention(implementation)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, D, generator=generator)
    cross = setting.startswith("cross")
    context = torch.randn(3, 9, D, generator=generator) if cross else None
    keys = context if cross else x
    key_length = keys.shape[1]
    real = padding_mask(lengths=torch.tensor([key_length, key_length - 2, 3]), max_length=key_length)
    use_padding = setting.endswith("padding")
    causal = setting.startswith("causal")
    torch_kwargs = {}
    if use_padding:
        torch_kwargs["key_padding_mask"] = ~real  # torch: True = ignore
    if causal:
        torch_kwargs["attn_mask"] = ~causal_mask(6)  # torch: True = not allowed
    expected, expected_weights = theirs(x, keys, keys, need_weights=True, average_attn_weights=False, **torch_kwargs)
    mask = key_padding_to_attention_mask(real) if use_padding else None
    output, weights = ours(x, context, mask, causal=causal, return_weights=True)
    assert output.shape == expected.shape == (3, 6, D)
    assert weights.shape == expected_weights.shape == (3, HEADS, 6, key_length)
    assert max_diff(output, expected) <= 1e-5
    assert max_diff(weights, expected_weights) <= 1e-5
    # without weights the fused kernel runs: the same numbers
    assert max_diff(ours(x, context, mask, causal=causal)[0], expected) <= 1e-5
    assert ours(x, context, mask, causal=causal)[1] is None


@pytest.mark.parametrize("n_kv_heads, bias, rotary", [(4, True, False), (2, False, False), (4, True, True)])
def test_stacked_qkv_product_equals_three_products(monkeypatch, n_kv_heads: int, bias: bool, rotary: bool) -> None:
    # From kernels.STACKED_PROJECTION_ROWS rows up, self-attention computes Q, K, V as one product with
    # the stacked weight: the same outputs and the same gradients for each of W^Q, W^K, W^V.
    torch.manual_seed(3)
    rope = RotaryEmbedding(D // HEADS, 64) if rotary else None
    layer = MultiHeadAttention(D, HEADS, n_kv_heads, bias=bias, rotary=rope)
    x = torch.randn(4, 20, D, requires_grad=True)  # 80 rows: above the default threshold
    results = []
    for rows in (10**9, 1):  # three products, then one
        monkeypatch.setattr(kernels, "STACKED_PROJECTION_ROWS", rows)
        output, _ = layer(x, causal=True)
        output.square().sum().backward()
        grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
        results.append((output.detach(), grads, x.grad.clone()))
        layer.zero_grad(), x.grad.zero_()
    (out_a, grads_a, x_a), (out_b, grads_b, x_b) = results
    close(out_b, out_a)
    close(x_b, x_a)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        close(grads_b[name], grads_a[name])


def test_multi_head_attention_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="n_kv_heads"):
        MultiHeadAttention(16, 4, 3)
    custom = MultiHeadAttention(16, 4, 2, head_dim=6, context_dim=10)
    assert custom.q_proj.weight.shape == (24, 16)
    assert custom.k_proj.weight.shape == (12, 10)
    assert custom.out_proj.weight.shape == (16, 24)
    x, context = torch.randn(2, 3, 16), torch.randn(2, 5, 10)
    out, weights = custom(x, context, return_weights=True)
    assert out.shape == (2, 3, 16) and weights.shape == (2, 4, 3, 5)


# --------------------------------------------------------------------------------------
# KV cache
# --------------------------------------------------------------------------------------

CACHE_SETTINGS = [
    pytest.param(dict(), id="mha"),
    pytest.param(dict(n_kv_heads=2), id="gqa"),
    pytest.param(dict(rotary=True), id="rotary"),
    pytest.param(dict(n_kv_heads=1, rotary=True), id="rotary_mqa"),
]


def cached_module(settings_: dict, implementation: str) -> MultiHeadAttention:
    torch.manual_seed(11)
    rotary = RotaryEmbedding(D // HEADS, max_length=32) if settings_.get("rotary") else None
    return MultiHeadAttention(
        D, HEADS, settings_.get("n_kv_heads"), implementation=implementation, rotary=rotary
    ).eval()


@pytest.mark.parametrize("implementation", ["fused", "readable"])
@pytest.mark.parametrize("chunks", [[1] * 8, [3, 1, 2, 2], [5, 3], [8]], ids=["tokens", "mixed", "two", "one"])
@pytest.mark.parametrize("settings_", CACHE_SETTINGS)
def test_kv_cache_equals_full_causal_recomputation(settings_: dict, chunks: list[int], implementation: str) -> None:
    attention = cached_module(settings_, implementation)
    x = torch.randn(2, 8, D, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        full, _ = attention(x, causal=True)
        cache, pieces, start = KVCache(), [], 0
        for size in chunks:
            piece, _ = attention(x[:, start : start + size], causal=True, cache=cache)
            pieces.append(piece)
            start += size
            assert cache.length == start
    assert cache.keys.shape == (2, settings_.get("n_kv_heads") or HEADS, 8, D // HEADS)
    assert max_diff(torch.cat(pieces, dim=1), full) <= 1e-5


def test_kv_cache_with_key_padding_mask() -> None:
    attention = cached_module({"n_kv_heads": 2}, "fused")
    x = torch.randn(2, 6, D)
    real = torch.tensor([[True] * 6, [True, True, False, True, True, True]])
    with torch.no_grad():
        full, _ = attention(x, mask=key_padding_to_attention_mask(real), causal=True)
        cache, pieces = KVCache(), []
        for t in range(6):  # the mask always covers every key seen so far
            mask = key_padding_to_attention_mask(real[:, : t + 1])
            pieces.append(attention(x[:, t : t + 1], mask=mask, causal=True, cache=cache)[0])
    assert max_diff(torch.cat(pieces, dim=1), full) <= 1e-5


def test_cross_attention_cache_projects_the_context_once() -> None:
    attention = cached_module({}, "fused")
    x, context = torch.randn(2, 4, D), torch.randn(2, 9, D)
    with torch.no_grad():
        full, _ = attention(x, context)
        cache = KVCache()
        first, _ = attention(x[:, :2], context, cache=cache)
        keys = cache.keys
        # the cached projections are reused: a different context is ignored once cached
        second, _ = attention(x[:, 2:], torch.zeros_like(context), cache=cache)
    assert cache.keys is keys and cache.length == 9
    assert max_diff(torch.cat([first, second], dim=1), full) <= 1e-5


def test_kv_cache_reorder() -> None:
    cache = KVCache()
    keys, values = torch.arange(3.0)[:, None, None, None].expand(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    cache.append(keys, values)
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.keys[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0]
    assert torch.equal(cache.values[2], values[0])
    empty = KVCache()
    empty.reorder(torch.tensor([0]))
    assert empty.length == 0


# --------------------------------------------------------------------------------------
# Properties of MultiHeadAttention
# --------------------------------------------------------------------------------------

_PROPERTY_MODULES = {
    implementation: cached_module({"n_kv_heads": 2, "rotary": True}, implementation)
    for implementation in ("fused", "readable")
}


@settings(max_examples=30, deadline=None)
@given(
    length=st.integers(1, 6),
    extra=st.integers(1, 4),
    causal=st.booleans(),
    implementation=st.sampled_from(["fused", "readable"]),
    seed=st.integers(0, 2**16),
)
def test_appended_padding_changes_nothing(length: int, extra: int, causal: bool, implementation: str, seed: int):
    attention = _PROPERTY_MODULES[implementation]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, length, D, generator=generator)
    padded = torch.cat([x, torch.randn(2, extra, D, generator=generator) * 10], dim=1)
    real = torch.arange(length + extra) < length
    mask = key_padding_to_attention_mask(real.expand(2, -1))
    with torch.no_grad():
        expected, _ = attention(x, causal=causal)
        out, _ = attention(padded, mask=mask, causal=causal)
    assert max_diff(out[:, :length], expected) <= 1e-5


@settings(max_examples=30, deadline=None)
@given(
    length=st.integers(2, 8),
    data=st.data(),
    implementation=st.sampled_from(["fused", "readable"]),
    seed=st.integers(0, 2**16),
)
def test_causal_outputs_ignore_the_future(length: int, data, implementation: str, seed: int) -> None:
    t = data.draw(st.integers(0, length - 2))
    attention = _PROPERTY_MODULES[implementation]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, length, D, generator=generator)
    changed = x.clone()
    changed[:, t + 1 :] = torch.randn(2, length - t - 1, D, generator=generator)
    with torch.no_grad():
        before, _ = attention(x, causal=True)
        after, _ = attention(changed, causal=True)
    assert max_diff(before[:, : t + 1], after[:, : t + 1]) <= 1e-5
    assert max_diff(before[:, t + 1 :], after[:, t + 1 :]) > 1e-4  # the future itself does change


# --------------------------------------------------------------------------------------
# capture_attention
# --------------------------------------------------------------------------------------


class _TwoAttentions(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attention = MultiHeadAttention(D, HEADS)
        self.cross_attention = MultiHeadAttention(D, HEADS, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attention(x, causal=True)[0]
        return x + self.cross_attention(x, context)[0]


def test_capture_attention_records_weights() -> None:
    torch.manual_seed(13)
    model = _TwoAttentions().eval()
    x, context = torch.randn(2, 5, D), torch.randn(2, 7, D)
    with torch.no_grad():
        plain = model(x, context)
        with capture_attention(model) as recorded:
            captured = model(x, context)
            model(x[:, :3], context)
    assert set(recorded) == {"self_attention", "cross_attention"}
    assert [w.shape for w in recorded["self_attention"]] == [(2, HEADS, 5, 5), (2, HEADS, 3, 3)]
    assert [w.shape for w in recorded["cross_attention"]] == [(2, HEADS, 5, 7), (2, HEADS, 3, 7)]
    self_weights = recorded["self_attention"][0]
    close(self_weights.sum(-1), torch.ones(2, HEADS, 5))
    assert torch.all(self_weights[..., ~causal_mask(5)] == 0.0)
    assert max_diff(captured, plain) <= 1e-5
    # recording stops when the block ends
    assert model.self_attention.recorded is None and model.cross_attention.recorded is None
    model(x, context)
    assert len(recorded["self_attention"]) == 2
