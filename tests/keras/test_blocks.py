"""taa.keras.blocks against taa.torch.blocks on copied weights: layers and stacks, pre- and
post-norm, every model config, the KV cache, config round trips and saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from taa.config import BertConfig, BlockConfig, GPTConfig, T5Config, TransformerConfig
from taa.keras import blocks as kb
from taa.keras.attention import key_padding_to_attention_mask
from taa.keras.norm import RMSNorm
from taa.keras.positional import AlibiBias, RelativePositionBias, RotaryEmbedding
from taa.keras.weights import load_state_dict, named_layers, state_dict
from taa.torch import blocks as tb
from taa.torch import positional as tp

ATOL = 1e-5
B, N, M, D = 2, 5, 6, 16  # batch, target length, source length, d_model
SMALL = dict(d_model=D, n_heads=4, d_ff=32)


def numpy(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else keras.ops.convert_to_numpy(x)


def close(actual, expected, atol: float = ATOL) -> None:
    np.testing.assert_allclose(numpy(actual), numpy(expected), atol=atol, rtol=0)


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Perturb every vector parameter so zero biases and unit norm weights hide nothing."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.dim() == 1:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return module


def copy_weights(ours: keras.layers.Layer, reference: torch.nn.Module) -> None:
    expected = reference.state_dict()
    assert list(state_dict(ours)) == list(expected)  # the same names, in the same order
    load_state_dict(ours, {k: v.detach().numpy() for k, v in expected.items()})


def inputs(length: int = N, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((B, length, D)).astype("float32")


def padding(length: int) -> np.ndarray:
    """(b, 1, 1, k): the second row has two pad positions at the end."""
    return (np.arange(length)[None, :] < np.array([length, length - 2])[:, None])[:, None, None, :]


def as_torch(*arrays):
    return [None if a is None else torch.from_numpy(np.asarray(a)) for a in arrays]


CONFIGS = {
    "block_post": lambda: BlockConfig(**SMALL, norm_first=False),
    "block_pre_swiglu_gqa": lambda: BlockConfig(**SMALL, norm_first=True, activation="swiglu", n_kv_heads=2),
    "transformer_rms_readable": lambda: TransformerConfig(
        **SMALL, norm="rms", attention="readable", source_vocab_size=11, target_vocab_size=11
    ),
    "gpt": lambda: GPTConfig(**SMALL, vocab_size=11, max_length=16),
    "bert": lambda: BertConfig(**SMALL, vocab_size=11, max_length=16),
    "t5": lambda: T5Config(**SMALL, d_kv=6, activation="geglu", vocab_size=11),
}


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True])
def test_residual_matches_torch(norm_first: bool) -> None:
    config = BlockConfig(**SMALL, norm_first=norm_first)
    reference, ours = randomise(tb.Residual(config), 0).eval(), kb.Residual(config)
    ours.build()
    copy_weights(ours, reference)
    x = inputs()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x), torch.tanh)
    close(ours(x, keras.ops.tanh), expected)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("causal", [False, True])
def test_encoder_layer_matches_torch(name: str, causal: bool) -> None:
    config = CONFIGS[name]()
    torch.manual_seed(0)
    reference, ours = randomise(tb.EncoderLayer(config), 0).eval(), kb.EncoderLayer(config)
    ours.build()
    copy_weights(ours, reference)
    x, mask = inputs(), padding(N)
    with torch.no_grad():
        expected = reference(*as_torch(x, mask), causal=causal)
    close(ours(x, mask, causal=causal), expected)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_decoder_layer_matches_torch(name: str) -> None:
    config = CONFIGS[name]()
    torch.manual_seed(0)
    reference, ours = randomise(tb.DecoderLayer(config), 0).eval(), kb.DecoderLayer(config)
    ours.build()
    copy_weights(ours, reference)
    x, memory = inputs(), inputs(M, seed=2)
    self_mask, memory_mask = padding(N), padding(M)
    with torch.no_grad():
        expected = reference(*as_torch(x, memory, self_mask, memory_mask))
    close(ours(x, memory, self_mask, memory_mask), expected)
    with torch.no_grad():
        expected = reference(*as_torch(x, memory))
    close(ours(x, memory), expected)


def test_configs_pick_the_torch_sublayers() -> None:
    t5 = T5Config(**SMALL, d_kv=6, vocab_size=11)
    attention = kb.attention_from_config(t5, scale=1.0)
    assert (attention.head_dim, attention.scale, attention.use_bias) == (6, 1.0, False)
    assert isinstance(kb.norm_from_config(t5), RMSNorm)
    gpt = GPTConfig(**SMALL, vocab_size=11, dropout=0.2, feed_forward_dropout=0.05)
    assert kb.feed_forward_from_config(gpt).dropout.p == 0.05
    assert kb.feed_forward_from_config(BlockConfig(**SMALL, dropout=0.2)).dropout.p == 0.2


# --------------------------------------------------------------------------------------
# Stacks
# --------------------------------------------------------------------------------------


def position_layers(name: str, config, bidirectional: bool):
    """(torch rotary, keras rotary, torch bias, keras bias) for a config's positions."""
    if name == "gpt_rotary":
        return tp.RotaryEmbedding(config.head_dim, 16), RotaryEmbedding(config.head_dim, 16), None, None
    if name == "gpt_alibi":
        return None, None, tp.AlibiBias(config.n_heads), AlibiBias(config.n_heads)
    if name == "t5":
        return None, None, tp.RelativePositionBias(config.n_heads, 8, 20, bidirectional), \
            RelativePositionBias(config.n_heads, 8, 20, bidirectional)
    return None, None, None, None


STACKS = [*CONFIGS, "gpt_rotary", "gpt_alibi"]


def config_of(name: str):
    return CONFIGS["gpt"]() if name.startswith("gpt") else CONFIGS[name]()


def paired_stack(kind: str, name: str, final_norm: bool = True, seed: int = 0):
    config = config_of(name)
    torch_rotary, rotary, torch_bias, bias = position_layers(name, config, bidirectional=kind == "encoder")
    scale = 1.0 if name == "t5" else None
    torch_class, keras_class = (tb.Encoder, kb.Encoder) if kind == "encoder" else (tb.Decoder, kb.Decoder)
    torch.manual_seed(seed)
    reference = torch_class(config, 2, final_norm, torch_rotary, torch_bias, attention_scale=scale)
    reference = randomise(reference, seed).eval()
    ours = keras_class(config, 2, final_norm, rotary, bias, attention_scale=scale)
    ours.build()
    copy_weights(ours, reference)
    return ours, reference


@pytest.mark.parametrize("name", STACKS)
@pytest.mark.parametrize("final_norm", [True, False])
def test_encoder_matches_torch(name: str, final_norm: bool) -> None:
    ours, reference = paired_stack("encoder", name, final_norm)
    x, mask = inputs(), padding(N)
    causal = name.startswith("gpt")
    with torch.no_grad():
        expected = reference(*as_torch(x, mask), causal=causal)
    close(ours(x, mask, causal=causal), expected)


@pytest.mark.parametrize("name", [*CONFIGS, "gpt_rotary"])
@pytest.mark.parametrize("final_norm", [True, False])
def test_decoder_matches_torch(name: str, final_norm: bool) -> None:
    ours, reference = paired_stack("decoder", name, final_norm)
    x, memory, memory_mask = inputs(), inputs(M, seed=2), padding(M)
    with torch.no_grad():
        expected = reference(*as_torch(x, memory, None, memory_mask))
    close(ours(x, memory, None, memory_mask), expected)


@pytest.mark.parametrize("name", ["gpt", "gpt_rotary", "gpt_alibi", "block_pre_swiglu_gqa"])
@pytest.mark.parametrize("chunks", [[1, 1, 1, 1, 1], [3, 2]])
def test_cached_causal_encoder_equals_full_recomputation(name: str, chunks: list[int]) -> None:
    """A decoder-only stack (GPT) decoding step by step gives the full pass's outputs."""
    ours, _ = paired_stack("encoder", name)
    x = inputs()
    full = numpy(ours(x, causal=True))
    cache, steps, start = kb.DecoderCache.empty(2), [], 0
    for size in chunks:
        steps.append(numpy(ours(x[:, start : start + size], causal=True, cache=cache)))
        start += size
    assert cache.length == N
    close(np.concatenate(steps, axis=1), full)


@pytest.mark.parametrize("name", ["block_post", "t5", "gpt_rotary"])
def test_cached_decoder_equals_full_recomputation(name: str) -> None:
    ours, reference = paired_stack("decoder", name)
    x, memory, memory_mask = inputs(), inputs(M, seed=2), padding(M)
    full = numpy(ours(x, memory, None, memory_mask))
    cache = kb.DecoderCache.empty(2)
    steps = [numpy(ours(x[:, i : i + 1], memory, None, memory_mask, cache=cache)) for i in range(N)]
    close(np.concatenate(steps, axis=1), full)
    assert cache.length == N and cache.layers[0].cross_attention.length == M
    torch_cache = tb.DecoderCache.empty(2)  # and torch's cached steps agree with ours
    with torch.no_grad():
        for i in range(N):
            step = reference(*as_torch(x[:, i : i + 1], memory, None, memory_mask), cache=torch_cache)
            close(steps[i], step)


@pytest.mark.parametrize("kind, name", [("encoder", "gpt_alibi"), ("encoder", "gpt_rotary"), ("encoder", "t5"),
                                        ("decoder", "t5")])
def test_stacks_trace_with_an_open_length(kind: str, name: str) -> None:
    """Traced with the length left open (a Lambda on keras.Input((None, d)): the stack's own
    output shape would spare it the trace), a stack whose positions follow the length (a bias
    of (q, k), rotary tables) gives its eager numbers, which are torch's."""
    ours, reference = paired_stack(kind, name)
    causal = name.startswith("gpt")
    x, memory = inputs(), inputs(M, seed=2)
    if kind == "encoder":
        symbolic = keras.Input((None, D))
        model = keras.Model(symbolic, keras.layers.Lambda(lambda x: ours(x, causal=causal))(symbolic))
        with torch.no_grad():
            expected = reference(*as_torch(x), causal=causal)
        close(model(x), expected)
    else:
        symbolic = [keras.Input((None, D)), keras.Input((None, D))]  # target and memory
        model = keras.Model(symbolic, keras.layers.Lambda(lambda pair: ours(*pair))(symbolic))
        with torch.no_grad():
            expected = reference(*as_torch(x, memory))
        close(model([x, memory]), expected)


def test_stacks_give_their_dtype_policy_to_every_sublayer() -> None:
    """A stack made with dtype="mixed_bfloat16" computes in bfloat16 throughout, its variables float32."""
    bias = RelativePositionBias(4, 8, 20, bidirectional=False, dtype="mixed_bfloat16")
    stack = kb.Decoder(CONFIGS["t5"](), 2, True, relative_bias=bias, dtype="mixed_bfloat16")
    stack.build()
    policies = {name: layer.dtype_policy.name for name, layer in named_layers(stack)}
    assert set(policies.values()) == {"mixed_bfloat16"}, policies
    assert {variable.dtype for variable in stack.weights} == {"float32"}
    output = stack(inputs(), inputs(M, seed=2))
    assert keras.backend.standardize_dtype(output.dtype) == "bfloat16"


def test_decoder_cache_reorders_every_layer() -> None:
    cache = kb.DecoderCache.empty(2)
    assert cache.length == 0 and kb.DecoderCache([]).length == 0
    rows = np.arange(3, dtype="float32")[:, None, None, None] * np.ones((3, 1, 2, 1), "float32")
    for layer in cache.layers:
        layer.self_attention.append(rows, rows)
        layer.cross_attention.append(rows, rows)
    cache.reorder(np.array([2, 0, 0]), cross_attention=False)
    close(cache.layers[1].self_attention.keys[:, 0, 0, 0], np.array([2.0, 0.0, 0.0]))
    close(cache.layers[1].cross_attention.keys[:, 0, 0, 0], np.array([0.0, 1.0, 2.0]))
    cache.reorder(np.array([1, 1, 1]))
    close(cache.layers[0].cross_attention.values[:, 0, 0, 0], np.array([1.0, 1.0, 1.0]))
    assert isinstance(kb.LayerCache().self_attention, kb.KVCache)


def test_dropout_acts_in_training_only() -> None:
    layer = kb.EncoderLayer(BlockConfig(**SMALL, dropout=0.3, attention_dropout=0.3))
    x = inputs()
    close(layer(x), layer(x, training=False))
    assert np.abs(numpy(layer(x, training=True)) - numpy(layer(x))).max() > 1e-3


# --------------------------------------------------------------------------------------
# Configs and saving
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_round_trip_keeps_the_model_config(name: str) -> None:
    config = config_of(name)
    rotary = RotaryEmbedding(config.head_dim, 16)
    bias = RelativePositionBias(config.n_heads, 8, 20)
    for layer in (
        kb.Residual(config),
        kb.EncoderLayer(config, rotary, attention_scale=1.0),
        kb.DecoderLayer(config),
        kb.Encoder(config, 2, True, rotary, bias),
        kb.Decoder(config, 1, False, relative_bias=AlibiBias(config.n_heads), attention_scale=0.5),
    ):
        serialized = layer.get_config()
        again = type(layer).from_config(serialized)
        assert again.config == config and type(again.config) is type(config)
        assert again.get_config() == serialized
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert restored.get_config() == serialized


def test_stacks_rebuild_their_layers_and_shared_positions() -> None:
    config = CONFIGS["gpt"]()
    encoder = kb.Encoder.from_config(kb.Encoder(config, 3, False, RotaryEmbedding(4, 16)).get_config())
    assert len(encoder.layers) == 3 and encoder.final_norm is None
    assert encoder.layers[0].self_attention.rotary is encoder.layers[2].self_attention.rotary  # still one table


@pytest.mark.parametrize("name", ["block_post", "gpt_rotary", "t5"])
def test_saved_encoder_layer_and_stack_give_the_same_outputs(tmp_path, name: str) -> None:
    config = config_of(name)
    rotary = RotaryEmbedding(config.head_dim, 16) if name == "gpt_rotary" else None
    bias = RelativePositionBias(config.n_heads, 8, 20) if name == "t5" else None
    x = inputs()
    for layer in (kb.EncoderLayer(config, rotary), kb.Encoder(config, 2, True, rotary, bias)):
        source = keras.Input((N, D))
        model = keras.Model(source, layer(source, causal=True))
        expected = model(x)
        model.save(tmp_path / "block.keras")
        loaded = keras.models.load_model(tmp_path / "block.keras")
        assert loaded.layers[1].config == config
        close(loaded(x), expected)
        close(loaded.layers[1](x, key_padding_to_attention_mask(padding(N)[:, 0, 0])), layer(x, padding(N)))
