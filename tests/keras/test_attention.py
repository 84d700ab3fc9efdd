"""taa.keras.attention against taa.torch.attention: masks, both kernels, multi-head
attention on copied weights, the KV cache, capture, config and saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from taa.keras import attention as ka
from taa.keras.positional import RotaryEmbedding
from taa.keras.weights import load_state_dict, state_dict
from taa.torch import attention as ta
from taa.torch.positional import RotaryEmbedding as TorchRotaryEmbedding

ATOL = 1e-5
B, H, Q, K, E = 2, 4, 5, 7, 8  # batch, heads, queries, keys, head dim
D = 16


def numpy(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else keras.ops.convert_to_numpy(x)


def close(actual, expected, atol: float = ATOL) -> None:
    np.testing.assert_allclose(numpy(actual), numpy(expected), atol=atol, rtol=0)


def copy_weights(keras_layer, torch_layer) -> None:
    load_state_dict(keras_layer, {k: v.detach().numpy() for k, v in torch_layer.state_dict().items()})


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


def compiled(function):
    """``function`` compiled by the backend: a TensorFlow graph, or ``jax.jit``."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(function)
    pytest.skip(f"no compiled function for the {keras.backend.backend()} backend here")


MASKS = ["none", "padding", "causal", "combined", "random_per_head", "empty_rows", "empty_batch_row"]


# --------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------


def test_padding_mask_from_pad_id_and_from_lengths() -> None:
    tokens = np.array([[5, 6, 0, 0], [7, 0, 0, 0]])
    close(ka.padding_mask(tokens, 0), ta.padding_mask(torch.from_numpy(tokens), 0))
    lengths = np.array([2, 1])
    close(ka.padding_mask(lengths=lengths), ta.padding_mask(lengths=torch.from_numpy(lengths)))
    expected = ta.padding_mask(lengths=torch.from_numpy(lengths), max_length=4)
    close(ka.padding_mask(lengths=lengths, max_length=4), expected)
    with pytest.raises(ValueError, match="needs pad_id"):
        ka.padding_mask(tokens)
    with pytest.raises(ValueError, match="or lengths"):
        ka.padding_mask()


def test_padding_mask_from_lengths_in_a_compiled_function() -> None:
    lengths = np.array([2, 1], dtype="int32")
    expected = numpy(ta.padding_mask(lengths=torch.from_numpy(lengths), max_length=4))
    close(compiled(lambda lengths: ka.padding_mask(lengths=lengths, max_length=4))(lengths), expected)
    longest = compiled(lambda lengths: ka.padding_mask(lengths=lengths))
    if keras.backend.backend() == "jax":  # a width read from traced values
        with pytest.raises(ValueError, match=r"padding_mask\(lengths=...\) in a compiled function needs max_length"):
            longest(lengths)
    else:  # a graph's shapes may follow its values
        close(longest(lengths), expected[:, :2])


@pytest.mark.parametrize("queries, keys", [(4, None), (1, 5), (3, 6), (5, 5)])
def test_causal_mask_is_torchs(queries: int, keys) -> None:
    close(ka.causal_mask(queries, keys), ta.causal_mask(queries, keys))


def test_combine_and_attention_mask_are_torchs() -> None:
    padding = np.array([[True, True, False], [True, False, False]])
    (torch_padding,) = torch_tensors(padding)
    assert ka.combine_masks(None, None) is None
    close(ka.combine_masks(None, ka.causal_mask(3), None), ta.causal_mask(3))
    close(ka.key_padding_to_attention_mask(padding), ta.key_padding_to_attention_mask(torch_padding))
    close(ka.attention_mask(padding), ta.attention_mask(torch_padding))
    close(ka.attention_mask(padding, causal=True), ta.attention_mask(torch_padding, causal=True))
    close(ka.attention_mask(padding, causal=True, query_length=1), ta.attention_mask(torch_padding, True, 1))
    close(ka.attention_mask(causal=True, query_length=3), ta.attention_mask(causal=True, query_length=3))
    assert ka.attention_mask() is None
    with pytest.raises(ValueError, match="needs query_length or key_padding"):
        ka.attention_mask(causal=True)


# --------------------------------------------------------------------------------------
# Scaled dot-product attention
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("variant", ["plain", "bias", "gqa", "scale"])
def test_both_kernels_match_torch_for_every_mask(kind: str, variant: str) -> None:
    q, k, v = qkv(kv_heads=2 if variant == "gqa" else H)
    mask = make_mask(kind)
    bias = np.random.default_rng(3).standard_normal((1, H, Q, K)).astype("float32") if variant == "bias" else None
    scale = 0.7 if variant == "scale" else None
    tq, tk, tv, tmask, tbias = torch_tensors(q, k, v, mask, bias)
    expected, expected_weights = ta.scaled_dot_product_attention(
        tq, tk, tv, tmask, return_weights=True, bias=tbias, scale=scale
    )
    output, weights = ka.scaled_dot_product_attention(q, k, v, mask, return_weights=True, bias=bias, scale=scale)
    close(output, expected)
    close(weights, expected_weights)
    close(ka.fused_scaled_dot_product_attention(q, k, v, mask, bias=bias, scale=scale), expected)
    assert not np.isnan(numpy(output)).any()


@pytest.mark.parametrize("implementation", ["fused", "readable"])
def test_fully_masked_rows_get_zero_weights_and_zero_output(implementation: str) -> None:
    q, k, v = qkv()
    mask = make_mask("empty_rows")
    output, weights = ka.attend(q, k, v, mask, implementation=implementation, return_weights=True)
    output = numpy(output)
    assert not np.isnan(output).any()
    empty = ~mask.any(axis=-1)  # (b, 1, q)
    assert np.all(output.transpose(0, 2, 1, 3)[empty[:, 0]] == 0.0)
    assert np.all(numpy(weights).transpose(0, 2, 1, 3)[empty[:, 0]] == 0.0)


@pytest.mark.parametrize("implementation", ["fused", "readable"])
@pytest.mark.parametrize("queries, keys", [(5, 5), (2, 7), (1, 7)])  # more keys than queries: a cached-causal offset
@pytest.mark.parametrize("with_padding", [False, True])
def test_attend_causal_matches_torch(implementation: str, queries: int, keys: int, with_padding: bool) -> None:
    q, k, v = qkv(queries=queries, keys=keys)
    mask = make_mask("padding", queries, keys) if with_padding else None
    tq, tk, tv, tmask = torch_tensors(q, k, v, mask)
    expected, _ = ta.attend(tq, tk, tv, tmask, causal=True, implementation="readable")
    output, weights = ka.attend(q, k, v, mask, causal=True, implementation=implementation)
    close(output, expected)
    assert weights is None if implementation == "fused" else weights is not None


def test_readable_equals_fused_and_attend_checks_its_implementation() -> None:
    q, k, v = qkv()
    mask = make_mask("combined")
    readable, _ = ka.attend(q, k, v, mask, implementation="readable")
    fused, _ = ka.attend(q, k, v, mask, implementation="fused")
    close(fused, readable)
    with pytest.raises(ValueError, match="is not 'fused' or 'readable'"):
        ka.attend(q, k, v, implementation="flash")
    with pytest.raises(ValueError, match="cannot share"):
        ka.scaled_dot_product_attention(q, *qkv(kv_heads=3)[1:])
    with pytest.raises(ValueError, match="is_causal needs as many queries as keys"):
        ka.fused_scaled_dot_product_attention(q, k, v, is_causal=True)


def test_dropout_on_the_weights_keeps_the_expectation_and_is_off_at_zero() -> None:
    q, k, v = qkv()
    plain = ka.scaled_dot_product_attention(q, k, v)
    close(ka.scaled_dot_product_attention(q, k, v, dropout_p=0.0), plain)
    seed = keras.random.SeedGenerator(0)
    _, weights = ka.scaled_dot_product_attention(q, k, v, dropout_p=0.5, return_weights=True, seed=seed)
    weights = numpy(weights)
    assert (weights == 0).mean() > 0.3  # about half dropped, the rest scaled by 2
    _, kept = ka.scaled_dot_product_attention(q, k, v, return_weights=True)
    np.testing.assert_allclose(weights[weights > 0], 2 * numpy(kept)[weights > 0], rtol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_fused_attend_with_dropout_gives_no_weights_and_the_readable_numbers(causal: bool) -> None:
    """As torch's: the fused path returns no weights, with dropout too (which it runs on the
    readable function, the same draws given the same seed)."""
    q, k, v = qkv(keys=Q)
    fused = ka.attend(q, k, v, causal=causal, dropout_p=0.5, seed=keras.random.SeedGenerator(0))
    readable = ka.attend(
        q, k, v, causal=causal, dropout_p=0.5, implementation="readable", seed=keras.random.SeedGenerator(0)
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


def paired_attention(setting: dict, implementation: str = "fused", seed: int = 0):
    setting = dict(setting)
    rotary = setting.pop("rotary", False)
    torch.manual_seed(seed)
    head_dim = setting.get("head_dim") or D // H
    reference = ta.MultiHeadAttention(
        D, H, rotary=TorchRotaryEmbedding(head_dim, 32) if rotary else None, **setting
    ).eval()
    ours = ka.MultiHeadAttention(
        D, H, rotary=RotaryEmbedding(head_dim, 32) if rotary else None, implementation=implementation, **setting
    )
    ours.build()
    copy_weights(ours, reference)
    return ours, reference


def inputs(length: int = Q, width: int = D, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((B, length, width)).astype("float32")


@pytest.mark.parametrize("implementation", ["fused", "readable"])
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("kind", ["none", "padding", "causal", "empty_batch_row"])
def test_multi_head_attention_matches_torch(implementation: str, setting: str, kind: str) -> None:
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
def test_causal_attention_traces_with_an_open_length(implementation: str) -> None:
    """Built on keras.Input((None, d)), causal self-attention (grouped-query, rotary) gives the
    eager numbers."""
    attention, _ = paired_attention({"n_kv_heads": 2, "rotary": True}, implementation)
    symbolic = keras.Input((None, D))
    model = keras.Model(symbolic, FirstOutput(attention)(symbolic))  # FirstOutput: causal=True
    x = inputs()
    close(model(x), attention(x, causal=True)[0])


def test_weights_have_torchs_names_and_shapes() -> None:
    ours, reference = paired_attention({"n_kv_heads": 2, "context_dim": 12})
    ours_state = state_dict(ours)
    assert list(ours_state) == list(reference.state_dict())
    assert {k: v.shape for k, v in ours_state.items()} == {k: tuple(v.shape) for k, v in reference.state_dict().items()}


def test_multi_head_attention_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="d_model=10 is not divisible by n_heads=4"):
        ka.MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="n_heads=4 is not divisible by n_kv_heads=3"):
        ka.MultiHeadAttention(16, 4, 3)
    with pytest.raises(ValueError, match="is not 'fused' or 'readable'"):
        ka.MultiHeadAttention(16, 4, implementation="flash")


@pytest.mark.parametrize("implementation", ["fused", "readable"])
@pytest.mark.parametrize("setting", ["self", "gqa", "rotary"])
@pytest.mark.parametrize("chunks", [[1, 1, 1, 1, 1], [2, 3], [3, 1, 1]])
def test_kv_cache_equals_full_causal_recomputation(implementation: str, setting: str, chunks: list[int]) -> None:
    ours, _ = paired_attention(SETTINGS[setting], implementation)
    x = inputs()
    full, _ = ours(x, causal=True)
    cache = ka.KVCache()
    steps, start = [], 0
    for size in chunks:
        steps.append(numpy(ours(x[:, start : start + size], causal=True, cache=cache)[0]))
        start += size
    assert cache.length == Q
    close(np.concatenate(steps, axis=1), full)


def test_kv_cache_with_key_padding_mask_matches_torch() -> None:
    ours, reference = paired_attention({})
    x = inputs()
    padding = np.array([[True] * Q, [False, False] + [True] * (Q - 2)])  # left padding
    ours_cache, torch_cache = ka.KVCache(), ta.KVCache()
    for i in range(Q):
        mask = ka.key_padding_to_attention_mask(padding[:, : i + 1])
        step = ours(x[:, i : i + 1], mask=mask, causal=True, cache=ours_cache)[0]
        with torch.no_grad():
            expected = reference(
                torch.from_numpy(x[:, i : i + 1]), mask=torch.from_numpy(padding[:, None, None, : i + 1]),
                causal=True, cache=torch_cache,
            )[0]
        close(step, expected)


def test_cross_attention_cache_keeps_the_context_projection() -> None:
    ours, _ = paired_attention({"context_dim": 12})
    x, context = inputs(), inputs(K, 12, seed=3)
    cache = ka.KVCache()
    first = ours(x, context, cache=cache)[0]
    keys = cache.keys
    again = ours(x, context * 0.0, cache=cache)[0]  # the cached projection is used, not the new context
    assert cache.keys is keys and cache.length == K
    close(again, first)


def test_kv_cache_reorder_keeps_the_rows_asked_for() -> None:
    cache = ka.KVCache()
    keys = np.arange(3 * 2 * 4 * 2, dtype="float32").reshape(3, 2, 4, 2)
    cache.append(keys, keys + 1)
    cache.reorder(np.array([2, 2, 0]))
    close(cache.keys, keys[[2, 2, 0]])
    close(cache.values, keys[[2, 2, 0]] + 1)
    ka.KVCache().reorder(np.array([0]))  # an empty cache has nothing to reorder


def test_attention_dropout_is_active_only_in_training() -> None:
    ours = ka.MultiHeadAttention(D, H, dropout=0.5, seed=0)
    x = inputs()
    close(ours(x)[0], ours(x, training=False)[0])
    assert np.abs(numpy(ours(x, training=True)[0]) - numpy(ours(x)[0])).max() > 1e-3


# --------------------------------------------------------------------------------------
# Capture, config, saving
# --------------------------------------------------------------------------------------


class TwoAttentions(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.layers = [ka.MultiHeadAttention(D, H), ka.MultiHeadAttention(D, H)]

    def call(self, x):
        for layer in self.layers:
            x = layer(x, causal=True)[0]
        return x


def test_capture_attention_records_each_layers_weights() -> None:
    model = TwoAttentions()
    x = inputs()
    plain = model(x)
    with ka.capture_attention(model) as recorded:
        captured = model(x)
    assert sorted(recorded) == ["layers.0", "layers.1"]
    assert [tuple(w.shape) for w in recorded["layers.0"]] == [(B, H, Q, Q)]
    assert np.all(np.triu(numpy(recorded["layers.1"][0]), k=1) == 0)  # causal: nothing above the diagonal
    close(captured, plain)
    assert all(layer.recorded is None for layer in model.layers)


def test_config_round_trip() -> None:
    layer = ka.MultiHeadAttention(
        D, H, 2, head_dim=6, context_dim=12, bias=False, dropout=0.1, scale=0.5, implementation="readable",
        rotary=RotaryEmbedding(6, 16, base=500.0), name="attention",
    )
    config = layer.get_config()
    again = ka.MultiHeadAttention.from_config(config)
    assert again.get_config() == config
    assert isinstance(again.rotary, RotaryEmbedding) and again.rotary.base == 500.0


@keras.saving.register_keras_serializable(package="taa_tests")
class FirstOutput(keras.Model):
    """A model around one layer, returning its output (MultiHeadAttention also returns weights)."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def build_from_config(self, config):
        self.build(config["input_shape"])

    def call(self, x):
        output = self.layer(x, causal=True)
        return output[0] if isinstance(output, tuple) else output

    def get_config(self):
        return {**super().get_config(), "layer": keras.saving.serialize_keras_object(self.layer)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config.pop("layer")), **config)


def test_save_and_load_give_the_same_outputs(tmp_path) -> None:
    model = FirstOutput(ka.MultiHeadAttention(D, H, 2, rotary=RotaryEmbedding(D // H, 16)))
    x = inputs()
    expected = model(x)
    model.save(tmp_path / "attention.keras")
    loaded = keras.models.load_model(tmp_path / "attention.keras")
    assert isinstance(loaded.layer, ka.MultiHeadAttention) and loaded.layer.n_kv_heads == 2
    close(loaded(x), expected)
