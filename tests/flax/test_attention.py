"""taa.flax.attention against taa.torch.attention: masks, both kernels, multi-head attention
on copied weights, the KV cache (growing, and preallocated under nnx.jit), capture, dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from taa.flax import attention as fa
from taa.flax.positional import AlibiBias, RelativePositionBias, RotaryEmbedding
from taa.flax.weights import load_state_dict, state_dict
from taa.torch import attention as ta
from taa.torch.positional import RelativePositionBias as TorchRelativePositionBias
from taa.torch.positional import RotaryEmbedding as TorchRotaryEmbedding

ATOL = 1e-5
B, H, Q, K, E = 2, 4, 5, 7, 8  # batch, heads, queries, keys, head dim
D = 16


def numpy(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def close(actual, expected, atol: float = ATOL) -> None:
    np.testing.assert_allclose(numpy(actual), numpy(expected), atol=atol, rtol=0)


def copy_weights(ours: nnx.Module, reference: torch.nn.Module) -> None:
    load_state_dict(ours, {k: v.detach().numpy() for k, v in reference.state_dict().items()})


def qkv(kv_heads: int = H, queries: int = Q, keys: int = K, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    shapes = [(B, H, queries, E), (B, kv_heads, keys, E), (B, kv_heads, keys, E)]
    return tuple(rng.standard_normal(shape).astype("float32") for shape in shapes)


def make_mask(kind: str, queries: int = Q, keys: int = K, seed: int = 1) -> np.ndarray | None:
    """Boolean masks (True = may attend) of the shapes the kernels take, as numpy arrays."""
    rng = np.random.default_rng(seed)
    padding = (np.arange(keys)[None, :] < np.array([keys, keys - 3])[:, None])[:, None, None, :]  # (b, 1, 1, k)
    causal = np.arange(keys)[None, :] <= np.arange(queries)[:, None] + (keys - queries)  # (q, k)
    if kind == "none":
        return None
    if kind == "padding":
        return padding
    if kind == "causal":
        return causal
    if kind == "combined":
        return padding & causal
    if kind == "random_per_head":
        mask = rng.random((B, H, queries, keys)) < 0.5
        mask[..., -1] = True
        return mask
    if kind == "empty_rows":  # some queries see no key at all
        mask = rng.random((B, 1, queries, keys)) < 0.5
        mask[0, 0, 1] = False
        mask[1, 0, 0] = False
        mask[0, 0, 2] = True
        return mask
    if kind == "empty_batch_row":  # one sequence is all padding
        return np.array([[True] * keys, [False] * keys])[:, None, None, :]
    raise ValueError(kind)


def torch_tensors(*arrays):
    return [None if a is None else torch.from_numpy(np.asarray(a)) for a in arrays]


MASKS = ["none", "padding", "causal", "combined", "random_per_head", "empty_rows", "empty_batch_row"]


# --------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------


def test_padding_mask_from_pad_id_and_from_lengths() -> None:
    tokens = np.array([[5, 6, 0, 0], [7, 0, 0, 0]])
    close(fa.padding_mask(tokens, 0), ta.padding_mask(torch.from_numpy(tokens), 0))
    lengths = np.array([2, 1])
    close(fa.padding_mask(lengths=lengths), ta.padding_mask(lengths=torch.from_numpy(lengths)))
    expected = ta.padding_mask(lengths=torch.from_numpy(lengths), max_length=4)
    close(fa.padding_mask(lengths=lengths, max_length=4), expected)
    close(jax.jit(lambda lengths: fa.padding_mask(lengths=lengths, max_length=4))(lengths), expected)
    with pytest.raises(ValueError, match=r"padding_mask\(lengths=...\) under jax.jit needs max_length"):
        jax.jit(lambda lengths: fa.padding_mask(lengths=lengths))(lengths)
    with pytest.raises(ValueError, match="needs pad_id"):
        fa.padding_mask(tokens)
    with pytest.raises(ValueError, match="or lengths"):
        fa.padding_mask()


def test_causal_mask_is_torchs() -> None:
    """Square, one query over more keys, and an offset block: torch's masks."""
    for queries, keys in [(4, None), (1, 5), (3, 6), (5, 5)]:
        close(fa.causal_mask(queries, keys), ta.causal_mask(queries, keys))


def test_causal_mask_from_a_traced_offset() -> None:
    """Queries at offset..offset+q-1 over a longer buffer: torch's mask for offset + q keys, then blocked."""
    mask = jax.jit(lambda offset: fa.causal_mask(2, 8, offset=offset))(jnp.int32(3))
    expected = np.zeros((2, 8), bool)
    expected[:, :5] = numpy(ta.causal_mask(2, 5))
    np.testing.assert_array_equal(mask, expected)


def test_combine_and_attention_mask_are_torchs() -> None:
    padding = np.array([[True, True, False], [True, False, False]])
    (torch_padding,) = torch_tensors(padding)
    assert fa.combine_masks(None, None) is None
    close(fa.combine_masks(None, fa.causal_mask(3), None), ta.causal_mask(3))
    close(fa.key_padding_to_attention_mask(padding), ta.key_padding_to_attention_mask(torch_padding))
    close(fa.attention_mask(padding), ta.attention_mask(torch_padding))
    close(fa.attention_mask(padding, causal=True), ta.attention_mask(torch_padding, causal=True))
    close(fa.attention_mask(padding, causal=True, query_length=1), ta.attention_mask(torch_padding, True, 1))
    close(fa.attention_mask(causal=True, query_length=3), ta.attention_mask(causal=True, query_length=3))
    assert fa.attention_mask() is None
    with pytest.raises(ValueError, match="needs query_length or key_padding"):
        fa.attention_mask(causal=True)


# --------------------------------------------------------------------------------------
# Scaled dot-product attention
# --------------------------------------------------------------------------------------


# every mask kind once, each with one of the variants (every variant at least once)
KERNEL_CASES = list(zip(MASKS, ["plain", "bias", "gqa", "scale", "bias", "gqa", "scale"]))


@pytest.mark.parametrize("kind, variant", KERNEL_CASES)
def test_both_kernels_match_torch_for_every_mask(kind: str, variant: str) -> None:
    """Readable (with weights) and fused kernels equal torch's for each mask kind; no NaN."""
    q, k, v = qkv(kv_heads=2 if variant == "gqa" else H)
    mask = make_mask(kind)
    bias = np.random.default_rng(3).standard_normal((1, H, Q, K)).astype("float32") if variant == "bias" else None
    scale = 0.7 if variant == "scale" else None
    tq, tk, tv, tmask, tbias = torch_tensors(q, k, v, mask, bias)
    expected, expected_weights = ta.scaled_dot_product_attention(
        tq, tk, tv, tmask, return_weights=True, bias=tbias, scale=scale
    )
    output, weights = fa.scaled_dot_product_attention(q, k, v, mask, return_weights=True, bias=bias, scale=scale)
    close(output, expected)
    close(weights, expected_weights)
    close(fa.fused_scaled_dot_product_attention(q, k, v, mask, bias=bias, scale=scale), expected)
    assert not np.isnan(numpy(output)).any()


@pytest.mark.parametrize("implementation", ["fused", "readable"])
def test_an_additive_mask_as_a_bias_matches_the_boolean_one(implementation: str) -> None:
    """A mask given as an additive bias (large negatives where blocked) gives torch's numbers for
    the boolean mask."""
    q, k, v = qkv()
    mask = make_mask("combined")
    additive = np.where(mask, 0.0, -1e9).astype("float32")
    tq, tk, tv, tmask = torch_tensors(q, k, v, mask)
    expected, _ = ta.attend(tq, tk, tv, tmask, implementation="readable")
    close(fa.attend(q, k, v, bias=additive, implementation=implementation)[0], expected)


@pytest.mark.parametrize("implementation", ["fused", "readable"])
def test_fully_masked_rows_get_zero_weights_and_zero_output(implementation: str) -> None:
    q, k, v = qkv()
    mask = make_mask("empty_rows")
    output, weights = fa.attend(q, k, v, mask, implementation=implementation, return_weights=True)
    output = numpy(output)
    assert not np.isnan(output).any()
    empty = ~mask.any(axis=-1)  # (b, 1, q)
    assert np.all(output.transpose(0, 2, 1, 3)[empty[:, 0]] == 0.0)
    assert np.all(numpy(weights).transpose(0, 2, 1, 3)[empty[:, 0]] == 0.0)


@pytest.mark.parametrize(
    "implementation, queries, keys, with_padding",  # more keys than queries: a cached-causal offset
    [("fused", 5, 5, False), ("readable", 5, 5, True), ("fused", 2, 7, True), ("readable", 1, 7, False)],
)
def test_attend_causal_matches_torch(implementation: str, queries: int, keys: int, with_padding: bool) -> None:
    """causal=True (alone and with padding, square and offset), eagerly and under jax.jit: torch's."""
    q, k, v = qkv(queries=queries, keys=keys)
    mask = make_mask("padding", queries, keys) if with_padding else None
    tq, tk, tv, tmask = torch_tensors(q, k, v, mask)
    expected, _ = ta.attend(tq, tk, tv, tmask, causal=True, implementation="readable")
    output, weights = fa.attend(q, k, v, mask, causal=True, implementation=implementation)
    close(output, expected)
    assert weights is None if implementation == "fused" else weights is not None
    traced, _ = jax.jit(lambda q, k, v: fa.attend(q, k, v, mask, causal=True, implementation=implementation))(q, k, v)
    close(traced, expected)


def test_readable_equals_fused_and_attend_checks_its_implementation() -> None:
    q, k, v = qkv()
    mask = make_mask("combined")
    readable, _ = fa.attend(q, k, v, mask, implementation="readable")
    fused, _ = fa.attend(q, k, v, mask, implementation="fused")
    close(fused, readable)
    with pytest.raises(ValueError, match="is not 'fused' or 'readable'"):
        fa.attend(q, k, v, implementation="flash")
    with pytest.raises(ValueError, match="cannot share"):
        fa.scaled_dot_product_attention(q, *qkv(kv_heads=3)[1:])
    with pytest.raises(ValueError, match="cannot share"):
        fa.fused_scaled_dot_product_attention(q, *qkv(kv_heads=3)[1:])
    with pytest.raises(ValueError, match="is_causal needs as many queries as keys"):
        fa.fused_scaled_dot_product_attention(q, k, v, is_causal=True)


def test_both_kernels_agree_in_bfloat16() -> None:
    """The fused function keeps its scores in float32: the two agree within bfloat16's rounding."""
    q, k, v = (jnp.asarray(a, jnp.bfloat16) for a in qkv())
    mask = make_mask("combined")
    fused, _ = fa.attend(q, k, v, mask)
    readable, _ = fa.attend(q, k, v, mask, implementation="readable")
    assert fused.dtype == readable.dtype == jnp.bfloat16
    np.testing.assert_allclose(numpy(fused.astype(jnp.float32)), numpy(readable.astype(jnp.float32)), atol=5e-2)


def test_dropout_on_the_weights_keeps_the_expectation_and_is_off_at_zero() -> None:
    q, k, v = qkv()
    plain = fa.scaled_dot_product_attention(q, k, v)
    close(fa.scaled_dot_product_attention(q, k, v, dropout_p=0.0), plain)
    _, weights = fa.scaled_dot_product_attention(
        q, k, v, dropout_p=0.5, return_weights=True, dropout_rng=jax.random.key(0)
    )
    weights = numpy(weights)
    assert (weights == 0).mean() > 0.3  # about half dropped, the rest scaled by 2
    _, kept = fa.scaled_dot_product_attention(q, k, v, return_weights=True)
    np.testing.assert_allclose(weights[weights > 0], 2 * numpy(kept)[weights > 0], rtol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_fused_attend_with_dropout_gives_no_weights_and_the_readable_numbers(causal: bool) -> None:
    """As torch's: the fused path returns no weights, with dropout too (which it runs on the
    readable function, the same draws given the same key)."""
    q, k, v = qkv(keys=Q)
    fused = fa.attend(q, k, v, causal=causal, dropout_p=0.5, dropout_rng=jax.random.key(0))
    readable = fa.attend(
        q, k, v, causal=causal, dropout_p=0.5, implementation="readable", dropout_rng=jax.random.key(0)
    )
    assert fused[1] is None and readable[1] is not None
    close(fused[0], readable[0])


# --------------------------------------------------------------------------------------
# Multi-head attention
# --------------------------------------------------------------------------------------

SETTINGS = {
    "self": {},
    "gqa": {"n_kv_heads": 2},
    "mqa": {"n_kv_heads": 1},
    "no_bias": {"bias": False},
    "scale": {"scale": 1.0},
    "head_dim": {"head_dim": 6},
    "cross": {"context_dim": 12},
    "rotary": {"rotary": True},
}


def paired_attention(setting: dict, implementation: str = "fused", seed: int = 0, dropout: float = 0.0):
    setting = dict(setting)
    rotary = setting.pop("rotary", False)
    torch.manual_seed(seed)
    head_dim = setting.get("head_dim") or D // H
    reference = ta.MultiHeadAttention(
        D, H, rotary=TorchRotaryEmbedding(head_dim, 32) if rotary else None, dropout=dropout, **setting
    ).eval()
    ours = fa.MultiHeadAttention(
        D, H, rotary=RotaryEmbedding(head_dim, 32) if rotary else None, implementation=implementation,
        dropout=dropout, rngs=nnx.Rngs(seed), **setting,
    )
    copy_weights(ours, reference)
    ours.eval()
    return ours, reference


def inputs(length: int = Q, width: int = D, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((B, length, width)).astype("float32")


# every setting once, the mask kinds and both implementations spread over them
MHA_CASES = [
    ("fused", "self", "none"), ("readable", "gqa", "padding"), ("fused", "mqa", "causal"),
    ("readable", "no_bias", "empty_batch_row"), ("fused", "scale", "padding"), ("readable", "head_dim", "causal"),
    ("fused", "cross", "padding"), ("readable", "cross", "empty_batch_row"), ("readable", "rotary", "causal"),
    ("fused", "rotary", "padding"),
]


@pytest.mark.parametrize("implementation, setting, kind", MHA_CASES)
def test_multi_head_attention_matches_torch(implementation: str, setting: str, kind: str) -> None:
    """Each layer option (grouped-query, bias, scale, head_dim, cross, rotary) under a mask: torch's
    outputs and weights, and the same outputs without weights."""
    ours, reference = paired_attention(SETTINGS[setting], implementation)
    x = inputs()
    cross = setting == "cross"
    context = inputs(K, 12, seed=3) if cross else None
    keys = K if cross else Q
    mask = None if kind == "causal" else make_mask(kind, Q, keys)
    causal = kind == "causal"
    tx, tcontext, tmask = torch_tensors(x, context, mask)
    with torch.no_grad():
        expected, expected_weights = reference(tx, tcontext, tmask, causal=causal, return_weights=True)
    output, weights = ours(x, context, mask, causal=causal, return_weights=True)
    close(output, expected)
    close(weights, expected_weights)
    output, weights = ours(x, context, mask, causal=causal)
    close(output, expected)
    assert weights is None


def test_multi_head_attention_position_bias_matches_torch() -> None:
    ours, reference = paired_attention({"scale": 1.0})
    x = inputs()
    bias = np.random.default_rng(4).standard_normal((1, H, Q, Q)).astype("float32")
    with torch.no_grad():
        expected, _ = reference(torch.from_numpy(x), causal=True, position_bias=torch.from_numpy(bias))
    close(ours(x, causal=True, position_bias=bias)[0], expected)


@pytest.mark.parametrize("implementation", ["fused", "readable"])
def test_multi_head_attention_traces_under_jit(implementation: str) -> None:
    ours, reference = paired_attention({"n_kv_heads": 2, "rotary": True}, implementation)
    x = inputs()
    mask = make_mask("padding", Q, Q)
    with torch.no_grad():
        expected, _ = reference(*torch_tensors(x), mask=torch.from_numpy(mask), causal=True)
    close(nnx.jit(lambda m, x, mask: m(x, mask=mask, causal=True)[0])(ours, x, mask), expected)


def test_weights_have_torchs_names_and_shapes() -> None:
    ours, reference = paired_attention({"n_kv_heads": 2, "context_dim": 12})
    ours_state = state_dict(ours)
    assert sorted(ours_state) == sorted(reference.state_dict())
    assert {k: v.shape for k, v in ours_state.items()} == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert all(v.dtype == np.float32 for v in ours_state.values())


def test_shared_rotary_tables_are_no_weights() -> None:
    rotary = RotaryEmbedding(4, 16)
    layers = [fa.MultiHeadAttention(D, H, rotary=rotary, rngs=nnx.Rngs(i)) for i in range(2)]
    assert layers[0].rotary is layers[1].rotary
    assert sorted(state_dict(layers[0])) == sorted(ta.MultiHeadAttention(D, H).state_dict())


def test_multi_head_attention_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="d_model=10 is not divisible by n_heads=4"):
        fa.MultiHeadAttention(10, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="n_heads=4 is not divisible by n_kv_heads=3"):
        fa.MultiHeadAttention(16, 4, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="is not 'fused' or 'readable'"):
        fa.MultiHeadAttention(16, 4, implementation="flash", rngs=nnx.Rngs(0))


def test_bfloat16_inputs_give_bfloat16_outputs() -> None:
    ours, _ = paired_attention({"n_kv_heads": 2, "rotary": True})
    output, weights = ours(jnp.asarray(inputs(), jnp.bfloat16), causal=True, return_weights=True)
    assert output.dtype == weights.dtype == jnp.bfloat16
    assert not np.isnan(numpy(output.astype(jnp.float32))).any()


# --------------------------------------------------------------------------------------
# KV cache
# --------------------------------------------------------------------------------------


def decode_in_chunks(attention, x, chunks, cache, step=None, **kwargs):
    """Feed ``x`` chunk by chunk through causal self-attention with ``cache``; the outputs joined."""
    step = step or (lambda attention, cache, x: attention(x, causal=True, cache=cache, **kwargs)[0])
    outputs, start = [], 0
    for size in chunks:
        outputs.append(numpy(step(attention, cache, x[:, start : start + size])))
        start += size
    return np.concatenate(outputs, axis=1)


@pytest.mark.parametrize(
    "implementation, setting, chunks, capacity",
    [("fused", "self", [1, 1, 1, 1, 1], None), ("readable", "gqa", [3, 2], 8), ("fused", "rotary", [3, 2], None),
     ("readable", "rotary", [1, 1, 1, 1, 1], 8)],
)
def test_kv_cache_equals_full_causal_recomputation(implementation: str, setting: str, chunks, capacity) -> None:
    """Chunked cached decoding (growing or preallocated cache) equals torch's full causal pass."""
    ours, reference = paired_attention(SETTINGS[setting], implementation)
    x = inputs()
    with torch.no_grad():
        expected, _ = reference(torch.from_numpy(x), causal=True)
    cache = fa.KVCache(capacity=capacity)
    close(decode_in_chunks(ours, x, chunks, cache), expected)
    assert int(cache.length) == Q and cache.keys.shape == (B, SETTINGS[setting].get("n_kv_heads", H), Q, D // H)
    assert cache.preallocated == (capacity is not None)


@pytest.mark.parametrize("capacity", [None, 8])
def test_kv_cache_without_the_causal_mask_matches_torchs(capacity) -> None:
    """Non-causal self-attention over a cache: each chunk's queries see every key written so
    far, their own chunk's included (and, preallocated, none of the slots after it)."""
    ours, reference = paired_attention({"n_kv_heads": 2, "rotary": True})
    x = inputs()
    ours_cache, torch_cache = fa.KVCache(capacity=capacity), ta.KVCache()
    start = 0
    for size in [2, 1, 2]:
        chunk = x[:, start : start + size]
        with torch.no_grad():
            expected = reference(torch.from_numpy(chunk), cache=torch_cache)[0]
        close(ours(chunk, cache=ours_cache)[0], expected)
        start += size


def test_preallocated_cache_under_jit_compiles_one_step() -> None:
    """The prompt in one jitted call, then one token per jitted call: the step traces once, the
    cache's writes come back out of every call, and the outputs equal recomputation (grouped-query
    and rotary together)."""
    ours, reference = paired_attention({"n_kv_heads": 2, "rotary": True})
    length = 7
    x = inputs(length)
    with torch.no_grad():
        expected, _ = reference(torch.from_numpy(x), causal=True)
    traces = []

    @nnx.jit
    def step(attention, cache, x):
        traces.append(x.shape)
        return attention(x, causal=True, cache=cache)[0]

    cache = fa.KVCache(capacity=length)
    close(decode_in_chunks(ours, x, [3, 1, 1, 1, 1], cache, step), expected)
    assert traces == [(B, 3, D), (B, 1, D)]  # the prompt's trace, then one for every step
    assert isinstance(cache.length, jax.Array) and int(cache.length) == length
    assert cache.key_buffer.shape[-2] == length
    with pytest.raises(ValueError, match="position 8 exceeds the cache's capacity=7"):
        ours(x[:, :1], causal=True, cache=cache)


def test_first_allocation_inside_jit_comes_back_out() -> None:
    ours, _ = paired_attention({})
    cache = fa.KVCache(capacity=6)
    nnx.jit(lambda attention, cache, x: attention(x, causal=True, cache=cache)[0])(ours, cache, inputs(2))
    assert cache.preallocated and int(cache.length) == 2 and cache.key_buffer.shape == (B, H, 6, D // H)
    with pytest.raises(ValueError, match="9 positions exceed the cache's capacity=8"):
        fa.KVCache(capacity=8).append(*qkv(keys=9)[1:])


@pytest.mark.parametrize("capacity", [None, 6])
def test_kv_cache_with_key_padding_mask_matches_torch(capacity) -> None:
    """Left padding, one token a step: the mask covers the keys so far, as torch's (a preallocated
    cache widens it to its capacity)."""
    ours, reference = paired_attention({})
    x = inputs()
    padding = np.array([[True] * Q, [False, False] + [True] * (Q - 2)])
    ours_cache, torch_cache = fa.KVCache(capacity=capacity), ta.KVCache()
    for i in range(Q):
        step = ours(x[:, i : i + 1], mask=fa.key_padding_to_attention_mask(padding[:, : i + 1]), causal=True,
                    cache=ours_cache)[0]
        with torch.no_grad():
            expected = reference(
                torch.from_numpy(x[:, i : i + 1]), mask=torch.from_numpy(padding[:, None, None, : i + 1]),
                causal=True, cache=torch_cache,
            )[0]
        close(step, expected)


def test_preallocated_cache_with_a_full_width_mask_and_position_bias_under_jit() -> None:
    """T5-style decoding under jit: a relative position bias over the whole capacity at a traced
    offset, a padding mask over the whole capacity; equal to torch's cached decoding."""
    capacity = 6
    ours, reference = paired_attention({"scale": 1.0})
    torch.manual_seed(1)
    torch_bias = TorchRelativePositionBias(H, 8, 20, bidirectional=False)
    bias = RelativePositionBias(H, 8, 20, bidirectional=False, rngs=nnx.Rngs(0))
    copy_weights(bias, torch_bias)
    x = inputs()
    padding = np.ones((B, capacity), bool)
    padding[1, :2] = False

    @nnx.jit
    def step(attention, bias, cache, x, mask):
        offset = cache.length
        position_bias = bias(x.shape[1], capacity, offset)  # (1, h, q, capacity)
        return attention(x, mask=mask, causal=True, position_bias=position_bias, cache=cache)[0]

    cache, torch_cache = fa.KVCache(capacity=capacity), ta.KVCache()
    mask = fa.key_padding_to_attention_mask(padding)
    for i in range(Q):
        output = step(ours, bias, cache, x[:, i : i + 1], mask)
        with torch.no_grad():
            expected = reference(
                torch.from_numpy(x[:, i : i + 1]), mask=torch.from_numpy(padding[:, None, None, : i + 1]),
                causal=True, position_bias=torch_bias(1, i + 1, i), cache=torch_cache,
            )[0]
        close(output, expected)


def test_alibi_over_a_preallocated_cache_matches_recomputation() -> None:
    ours, reference = paired_attention({})
    alibi = AlibiBias(H)
    x = inputs()
    full, _ = ours(x, causal=True, position_bias=alibi(Q, Q))
    cache = fa.KVCache(capacity=Q)
    steps = [ours(x[:, i : i + 1], causal=True, position_bias=alibi(1, i + 1, i), cache=cache)[0] for i in range(Q)]
    close(np.concatenate([numpy(s) for s in steps], axis=1), full)


@pytest.mark.parametrize("capacity", [None, 9])
def test_cross_attention_cache_keeps_the_context_projection(capacity) -> None:
    ours, reference = paired_attention({"context_dim": 12})
    x, context = inputs(), inputs(K, 12, seed=3)
    cache = fa.KVCache(capacity=capacity)
    first = ours(x, context, cache=cache)[0]
    keys = cache.keys
    again = ours(x, context * 0.0, cache=cache)[0]  # the cached projection is used, not the new context
    assert cache.keys is not None and cache.length == K and not cache.preallocated
    close(cache.keys, keys)
    close(again, first)
    with torch.no_grad():
        close(first, reference(*torch_tensors(x, context))[0])
    traced = nnx.jit(lambda m, cache, x, context: m(x, context, cache=cache)[0])(ours, cache, x, context * 0.0)
    close(traced, first)


@pytest.mark.parametrize("capacity", [None, 6])
def test_kv_cache_reorder_keeps_the_rows_asked_for(capacity) -> None:
    cache = fa.KVCache(capacity=capacity)
    keys = np.arange(3 * 2 * 4 * 2, dtype="float32").reshape(3, 2, 4, 2)
    cache.append(keys, keys + 1)
    cache.reorder(np.array([2, 2, 0]))
    close(cache.keys, keys[[2, 2, 0]])
    close(cache.values, keys[[2, 2, 0]] + 1)
    cache.reorder(np.array([1]))  # fewer rows: beams finished
    close(cache.keys, keys[[2]])
    fa.KVCache().reorder(np.array([0]))  # an empty cache has nothing to reorder


def test_kv_cache_reorder_under_jit() -> None:
    cache = fa.KVCache(capacity=6)
    keys = np.arange(3 * 2 * 4 * 2, dtype="float32").reshape(3, 2, 4, 2)
    cache.append(keys, keys + 1)
    nnx.jit(lambda cache, rows: cache.reorder(rows))(cache, jnp.array([1, 0, 0]))
    close(cache.keys, keys[[1, 0, 0]])
    close(cache.values, keys[[1, 0, 0]] + 1)
    assert int(cache.length) == 4


def test_kv_cache_takes_keys_at_construction_as_torchs() -> None:
    keys = np.ones((1, 2, 3, 4), "float32")
    cache = fa.KVCache(keys, keys * 2)
    assert cache.length == 3 and cache.capacity is None
    close(cache.values, keys * 2)


# --------------------------------------------------------------------------------------
# Dropout, capture
# --------------------------------------------------------------------------------------


def test_attention_dropout_is_active_only_in_training() -> None:
    ours, _ = paired_attention({}, dropout=0.5)
    x = inputs()
    evaluated = numpy(ours(x)[0])
    close(ours(x)[0], evaluated)
    ours.train()
    assert not ours.deterministic
    first, second = numpy(ours(x)[0]), numpy(ours(x)[0])
    assert np.abs(first - evaluated).max() > 1e-3 and np.abs(first - second).max() > 1e-3
    _, weights = ours(x, return_weights=True)
    assert (numpy(weights) == 0).mean() > 0.3
    jitted = nnx.jit(lambda m, x: m(x)[0])
    assert np.abs(numpy(jitted(ours, x)) - numpy(jitted(ours, x))).max() > 1e-3  # new masks each call
    ours.eval()
    close(ours(x)[0], evaluated)


class TwoAttentions(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.layers = nnx.List([fa.MultiHeadAttention(D, H, rngs=rngs), fa.MultiHeadAttention(D, H, rngs=rngs)])

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x, causal=True)[0]
        return x


def test_capture_attention_records_each_layers_weights() -> None:
    model = TwoAttentions(rngs=nnx.Rngs(0))
    x = inputs()
    plain = model(x)
    with fa.capture_attention(model) as recorded:
        captured = model(x)
    assert sorted(recorded) == ["layers.0", "layers.1"]
    assert [tuple(w.shape) for w in recorded["layers.0"]] == [(B, H, Q, Q)]
    assert np.all(np.triu(numpy(recorded["layers.1"][0]), k=1) == 0)  # causal: nothing above the diagonal
    close(captured, plain)
    assert all(layer.recorded is None for layer in model.layers)
    close(nnx.jit(lambda m, x: m(x))(model, x), plain)  # nothing left behind that stops a trace
