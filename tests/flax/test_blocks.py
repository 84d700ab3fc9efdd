"""taa.flax.blocks against taa.torch.blocks on copied weights: layers and stacks, pre- and
post-norm, every model config, the KV cache (growing, and fixed-size under nnx.jit),
dropout in training only, bfloat16."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from taa.config import BertConfig, BlockConfig, GPTConfig, T5Config, TransformerConfig
from taa.flax import blocks as fb
from taa.flax.norm import RMSNorm
from taa.flax.positional import AlibiBias, RelativePositionBias, RotaryEmbedding
from taa.flax.weights import load_state_dict, state_dict
from taa.torch import blocks as tb
from taa.torch import positional as tp

ATOL = 1e-5
B, N, M, D = 2, 5, 6, 16  # batch, target length, source length, d_model
SMALL = dict(d_model=D, n_heads=4, d_ff=32)


def numpy(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


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


def copy_weights(ours: nnx.Module, reference: torch.nn.Module) -> None:
    """The torch weights into ours (the same names), and ours into eval mode."""
    expected = reference.state_dict()
    assert sorted(state_dict(ours)) == sorted(expected)
    load_state_dict(ours, {k: v.detach().numpy() for k, v in expected.items()})
    ours.eval()


def inputs(length: int = N, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((B, length, D)).astype("float32")


def padding(length: int) -> np.ndarray:
    """(b, 1, 1, k): the second row has two pad positions at the end."""
    return (np.arange(length)[None, :] < np.array([length, length - 2])[:, None])[:, None, None, :]


def as_torch(*arrays):
    return [None if a is None else torch.from_numpy(np.asarray(a)) for a in arrays]


def rngs() -> nnx.Rngs:
    return nnx.Rngs(0)


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
    reference, ours = randomise(tb.Residual(config), 0).eval(), fb.Residual(config, rngs=rngs())
    copy_weights(ours, reference)
    x = inputs()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x), torch.tanh)
    close(ours(jnp.asarray(x), jnp.tanh), expected)


@pytest.mark.parametrize("name, causal", [(name, i % 2 == 1) for i, name in enumerate(CONFIGS)])
def test_encoder_layer_matches_torch(name: str, causal: bool) -> None:
    """Every config's encoder layer (padding mask, with and without causal) equals torch's."""
    config = CONFIGS[name]()
    torch.manual_seed(0)
    reference, ours = randomise(tb.EncoderLayer(config), 0).eval(), fb.EncoderLayer(config, rngs=rngs())
    copy_weights(ours, reference)
    x, mask = inputs(), padding(N)
    with torch.no_grad():
        expected = reference(*as_torch(x, mask), causal=causal)
    close(ours(x, mask, causal=causal), expected)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_decoder_layer_matches_torch(name: str) -> None:
    """Every config's decoder layer, with and without masks, equals torch's."""
    config = CONFIGS[name]()
    torch.manual_seed(0)
    reference, ours = randomise(tb.DecoderLayer(config), 0).eval(), fb.DecoderLayer(config, rngs=rngs())
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
    attention = fb.attention_from_config(t5, scale=1.0, rngs=rngs())
    assert (attention.head_dim, attention.scale, attention.q_proj.bias) == (6, 1.0, None)
    assert isinstance(fb.norm_from_config(t5, rngs=rngs()), RMSNorm)
    gpt = GPTConfig(**SMALL, vocab_size=11, dropout=0.2, feed_forward_dropout=0.05)
    assert fb.feed_forward_from_config(gpt, rngs=rngs()).dropout.p == 0.05
    assert fb.feed_forward_from_config(BlockConfig(**SMALL, dropout=0.2), rngs=rngs()).dropout.p == 0.2


def test_dropout_acts_in_training_only() -> None:
    """Built in training mode, as torch's: dropout changes the output, and a second call draws
    other masks; eval() makes the layer deterministic, train() active again."""
    layer = fb.EncoderLayer(BlockConfig(**SMALL, dropout=0.3, attention_dropout=0.3), rngs=rngs())
    x = inputs()
    first, second = numpy(layer(x)), numpy(layer(x))
    assert np.abs(first - second).max() > 1e-3
    layer.eval()
    evaluated = numpy(layer(x))
    close(layer(x), evaluated, atol=0)
    assert np.abs(first - evaluated).max() > 1e-3
    layer.train()
    assert np.abs(numpy(layer(x)) - evaluated).max() > 1e-3


# --------------------------------------------------------------------------------------
# Stacks
# --------------------------------------------------------------------------------------


def position_layers(name: str, config, bidirectional: bool):
    """(torch rotary, flax rotary, torch bias, flax bias) for a config's positions."""
    if name == "gpt_rotary":
        return tp.RotaryEmbedding(config.head_dim, 16), RotaryEmbedding(config.head_dim, 16), None, None
    if name == "gpt_alibi":
        return None, None, tp.AlibiBias(config.n_heads), AlibiBias(config.n_heads)
    if name == "t5":
        return None, None, tp.RelativePositionBias(config.n_heads, 8, 20, bidirectional), \
            RelativePositionBias(config.n_heads, 8, 20, bidirectional, rngs=rngs())
    return None, None, None, None


STACKS = [*CONFIGS, "gpt_rotary", "gpt_alibi"]


def config_of(name: str):
    return CONFIGS["gpt"]() if name.startswith("gpt") else CONFIGS[name]()


def paired_stack(kind: str, name: str, final_norm: bool = True, seed: int = 0):
    config = config_of(name)
    torch_rotary, rotary, torch_bias, bias = position_layers(name, config, bidirectional=kind == "encoder")
    scale = 1.0 if name == "t5" else None
    torch_class, flax_class = (tb.Encoder, fb.Encoder) if kind == "encoder" else (tb.Decoder, fb.Decoder)
    torch.manual_seed(seed)
    reference = torch_class(config, 2, final_norm, torch_rotary, torch_bias, attention_scale=scale)
    reference = randomise(reference, seed).eval()
    ours = flax_class(config, 2, final_norm, rotary, bias, attention_scale=scale, rngs=rngs())
    copy_weights(ours, reference)
    return ours, reference


@pytest.mark.parametrize("name, final_norm", [(name, i % 2 == 0) for i, name in enumerate(STACKS)])
def test_encoder_matches_torch(name: str, final_norm: bool) -> None:
    """Every config's and position kind's encoder stack (with or without a final norm): torch's."""
    ours, reference = paired_stack("encoder", name, final_norm)
    x, mask = inputs(), padding(N)
    causal = name.startswith("gpt")
    with torch.no_grad():
        expected = reference(*as_torch(x, mask), causal=causal)
    close(ours(x, mask, causal=causal), expected)


@pytest.mark.parametrize("name, final_norm", [(name, i % 2 == 1) for i, name in enumerate([*CONFIGS, "gpt_rotary"])])
def test_decoder_matches_torch(name: str, final_norm: bool) -> None:
    """Every config's decoder stack (with or without a final norm, memory padding): torch's."""
    ours, reference = paired_stack("decoder", name, final_norm)
    x, memory, memory_mask = inputs(), inputs(M, seed=2), padding(M)
    with torch.no_grad():
        expected = reference(*as_torch(x, memory, None, memory_mask))
    close(ours(x, memory, None, memory_mask), expected)


@pytest.mark.parametrize("kind, name", [("encoder", "gpt_alibi"), ("encoder", "t5"), ("decoder", "gpt_rotary")])
def test_stacks_run_under_jit(kind: str, name: str) -> None:
    """nnx.jit of a stack gives its eager outputs (the T5 decoder's: in the cached-decoder test)."""
    ours, _ = paired_stack(kind, name)
    x, memory, mask = inputs(), inputs(M, seed=2), padding(M)
    if kind == "encoder":
        causal = name.startswith("gpt")
        run = nnx.jit(lambda stack, x: stack(x, causal=causal))
        close(run(ours, x), ours(x, causal=causal))
    else:
        run = nnx.jit(lambda stack, x, memory, mask: stack(x, memory, None, mask))
        close(run(ours, x, memory, mask), ours(x, memory, None, mask))


@pytest.mark.parametrize(
    "name, chunks, capacity",
    [("gpt", [1, 1, 1, 1, 1], None), ("gpt_rotary", [3, 2], 8), ("gpt_alibi", [1, 1, 1, 1, 1], 8),
     ("block_pre_swiglu_gqa", [3, 2], None)],
)
def test_cached_causal_encoder_equals_full_recomputation(name: str, chunks: list[int], capacity) -> None:
    """A decoder-only stack (GPT) decoding step by step gives the full pass's outputs, with a
    growing cache and with a fixed-size one (its length then an int32 scalar)."""
    ours, _ = paired_stack("encoder", name)
    x = inputs()
    full = numpy(ours(x, causal=True))
    cache, steps, start = fb.DecoderCache.empty(2, capacity), [], 0
    for size in chunks:
        steps.append(numpy(ours(x[:, start : start + size], causal=True, cache=cache)))
        start += size
    assert int(cache.length) == N
    close(np.concatenate(steps, axis=1), full)


@pytest.mark.parametrize("name", ["gpt_rotary", "gpt_alibi", "t5"])
def test_fixed_size_cache_decodes_under_jit_with_one_trace_per_shape(name: str) -> None:
    """A cache built with a capacity goes in and out of nnx.jit: a prompt of three, then one
    token per step, gives the full pass's outputs, and the single-token steps trace once."""
    ours, _ = paired_stack("encoder", name)
    x, traces = inputs(), []

    @nnx.jit
    def step(stack, x, cache):
        traces.append(x.shape)
        return stack(x, causal=True, cache=cache)

    cache = fb.DecoderCache.empty(2, capacity=8)
    steps = [step(ours, x[:, :3], cache)] + [step(ours, x[:, t : t + 1], cache) for t in range(3, N)]
    close(jnp.concatenate(steps, axis=1), ours(x, causal=True))
    assert int(cache.length) == N and cache.layers[1].self_attention.capacity == 8
    assert traces == [(B, 3, D), (B, 1, D)]  # the prompt, then every single-token step


@pytest.mark.parametrize("name", ["block_post", "t5"])  # rotary caches: the cached-encoder test
def test_cached_decoder_equals_full_recomputation_and_torch(name: str) -> None:
    """Cross-attending decoder stacks, one token per step: full recomputation, torch's cached
    steps, and a fixed-capacity cache under nnx.jit."""
    ours, reference = paired_stack("decoder", name)
    x, memory, memory_mask = inputs(), inputs(M, seed=2), padding(M)
    full = numpy(ours(x, memory, None, memory_mask))
    cache = fb.DecoderCache.empty(2)
    steps = [numpy(ours(x[:, i : i + 1], memory, None, memory_mask, cache=cache)) for i in range(N)]
    close(np.concatenate(steps, axis=1), full)
    assert cache.length == N and cache.layers[0].cross_attention.length == M
    torch_cache = tb.DecoderCache.empty(2)  # and torch's cached steps agree with ours
    with torch.no_grad():
        for i in range(N):
            step = reference(*as_torch(x[:, i : i + 1], memory, None, memory_mask), cache=torch_cache)
            close(steps[i], step)

    run = nnx.jit(lambda stack, x, memory, mask, cache: stack(x, memory, None, mask, cache=cache))
    cache = fb.DecoderCache.empty(2, capacity=N)
    jitted = [run(ours, x[:, i : i + 1], memory, memory_mask, cache) for i in range(N)]
    close(jnp.concatenate(jitted, axis=1), full)


def test_decoder_cache_reorders_every_layer() -> None:
    cache = fb.DecoderCache.empty(2)
    assert cache.length == 0 and fb.DecoderCache([]).length == 0
    rows = jnp.arange(3, dtype=jnp.float32)[:, None, None, None] * jnp.ones((3, 1, 2, 1))
    for layer in cache.layers:
        layer.self_attention.append(rows, rows)
        layer.cross_attention.append(rows, rows)
    cache.reorder(jnp.array([2, 0, 0]), cross_attention=False)
    close(cache.layers[1].self_attention.keys[:, 0, 0, 0], np.array([2.0, 0.0, 0.0]))
    close(cache.layers[1].cross_attention.keys[:, 0, 0, 0], np.array([0.0, 1.0, 2.0]))
    cache.reorder(jnp.array([1, 1, 1]))
    close(cache.layers[0].cross_attention.values[:, 0, 0, 0], np.array([1.0, 1.0, 1.0]))
    assert isinstance(fb.LayerCache().self_attention, fb.KVCache)
    assert cache.key_length(3) == 5 and fb.DecoderCache.empty(1, capacity=9).key_length(3) == 9


def test_stacks_compute_in_bfloat16() -> None:
    """bfloat16 inputs flow through in bfloat16 (the parameters stay float32), close to float32's."""
    ours, _ = paired_stack("decoder", "t5")
    x, memory = inputs(), inputs(M, seed=2)
    output = ours(jnp.asarray(x, jnp.bfloat16), jnp.asarray(memory, jnp.bfloat16))
    assert output.dtype == jnp.bfloat16
    assert {value.dtype for value in state_dict(ours).values()} == {np.dtype("float32")}
    close(output.astype(jnp.float32), ours(x, memory), atol=0.1)


def test_gradients_reach_every_parameter() -> None:
    ours, _ = paired_stack("decoder", "gpt_rotary")
    x, memory = inputs(), inputs(M, seed=2)
    grads = nnx.grad(lambda stack: jnp.sum(stack(x, memory) ** 2))(ours)
    leaves = jax.tree.leaves(nnx.to_pure_dict(grads))
    assert len(leaves) == len(state_dict(ours)) and all(float(jnp.abs(g).max()) > 0 for g in leaves)
