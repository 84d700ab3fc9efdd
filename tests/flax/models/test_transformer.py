"""taa.flax.models.transformer: parity with the torch Transformer (post- and pre-norm, every
kind of position, shared and tied matrices, source padding), cached decoding (eagerly, and
under nnx.jit with a fixed capacity), weights both ways, initialisation, dropout."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from taa import config as cfg
from taa.flax.models.transformer import Transformer, tie
from taa.flax.weights import parameters, state_dict
from taa.torch.models import transformer as torch_transformer
from tests.flax.models.twins import (
    assert_close,
    assert_dropout_in_training_only,
    assert_runs_under_jit,
    assert_state_dict_loads_into_torch,
    torch_outputs,
    twins,
)

# every option that changes the math at least once, independent ones combined
PAPER = "paper (post-norm, sinusoids, shared and tied, relu)"
LEARNED = "pre-norm, rms, learned, nothing shared"
ROTARY = "post-norm with final norms, rotary, separate vocabularies, tied output, swiglu, grouped-query"
RELATIVE = "pre-norm, relative bias, shared, untied, readable, gelu, multi-query"
NONE = "no positions"
VARIANTS = {
    PAPER: {},
    LEARNED: {
        "norm_first": True, "norm": "rms", "positional": "learned", "share_embeddings": False, "tie_output": False,
        "source_vocab_size": 40,
    },
    ROTARY: {
        "final_norm": True, "positional": "rotary", "share_embeddings": False, "source_vocab_size": 40,
        "activation": "swiglu", "n_kv_heads": 2,
    },
    RELATIVE: {
        "norm_first": True, "positional": "relative", "relative_buckets": 8, "relative_max_distance": 16,
        "tie_output": False, "attention": "readable", "activation": "gelu", "n_kv_heads": 1,
    },
    NONE: {"positional": "none"},
}


def batch() -> tuple[np.ndarray, np.ndarray]:
    """Source (3, 9) and target (3, 6) ids, both with right padding (pad_id 0)."""
    rng = np.random.default_rng(0)
    source = rng.integers(3, 40, (3, 9)).astype("int32")
    source[1, 6:] = source[2, 2:] = 0
    target = rng.integers(3, 40, (3, 6)).astype("int32")
    target[:, 0] = 1  # bos
    target[2, 4:] = 0
    return source, target


def built(variant: str) -> Transformer:
    model = Transformer(cfg.preset("vaswani-tiny", **VARIANTS[variant]), rngs=nnx.Rngs(0))
    model.eval()
    return model


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_equal_torch(variant: str) -> None:
    """Each variant's logits (source and target padding) equal torch's on the same weights."""
    config = cfg.preset("vaswani-tiny", **VARIANTS[variant])
    model, reference = twins(Transformer, torch_transformer.Transformer, config)
    source, target = batch()
    assert_close(model(source, target), torch_outputs(reference, source, target))


def test_encode_and_decode_equal_torch() -> None:
    """encode, source_padding and decode (with both paddings) equal torch's."""
    model, reference = twins(Transformer, torch_transformer.Transformer, cfg.preset("vaswani-tiny"))
    source, target = batch()
    padding = model.source_padding(source)
    np.testing.assert_array_equal(np.asarray(padding), source != 0)
    memory = model.encode(source)
    assert memory.shape == (3, 9, 32)
    with torch.no_grad():
        expected_memory = reference.encode(torch.from_numpy(source))
        expected = reference.decode(
            torch.from_numpy(target), expected_memory, torch.from_numpy(source != 0), torch.from_numpy(target != 0)
        )
    assert_close(memory, expected_memory.numpy())
    assert_close(model.decode(target, memory, padding, target != 0), expected.numpy())


# ROTARY and RELATIVE decode with a cache in the jit and grouped-query tests below
@pytest.mark.parametrize("variant, capacity", [(PAPER, None), (LEARNED, 8)])
def test_cached_step_by_step_decoding_equals_full_decode(variant: str, capacity) -> None:
    """Two tokens, then one per step, through a growing or preallocated cache: the full decode."""
    model = built(variant)
    source, target = batch()
    padding = model.source_padding(source)
    memory = model.encode(source, padding)
    full = model.decode(target, memory, padding)
    cache = model.new_cache(capacity)
    steps = [model.decode(target[:, :2], memory, padding, cache=cache)]  # two tokens, then one per step
    steps += [model.decode(target[:, t : t + 1], memory, padding, cache=cache) for t in range(2, 6)]
    assert int(cache.length) == 6
    assert_close(jnp.concatenate(steps, axis=1), full)


@pytest.mark.parametrize("variant", [PAPER, LEARNED, ROTARY, RELATIVE])
def test_fixed_size_cache_under_jit_equals_full_decode(variant: str) -> None:
    """Decoding as generation runs it: the cache holds 8 positions from the start, and the
    single-token steps compile once."""
    model = built(variant)
    source, target = batch()
    padding = model.source_padding(source)
    memory = model.encode(source, padding)
    full = model.decode(target, memory, padding)
    traces = []

    @nnx.jit
    def step(model, target, memory, padding, cache):
        traces.append(target.shape)
        return model.decode(target, memory, padding, cache=cache)

    cache = model.new_cache(capacity=8)
    steps = [step(model, target[:, :2], memory, padding, cache)]
    steps += [step(model, target[:, t : t + 1], memory, padding, cache) for t in range(2, 6)]
    assert_close(jnp.concatenate(steps, axis=1), full)
    assert int(cache.length) == 6 and traces == [(3, 2), (3, 1)]


@pytest.mark.parametrize("variant", [RELATIVE])
def test_grouped_query_cache_equals_recomputation_and_torch(variant: str) -> None:
    """n_kv_heads < n_heads: the cache holds the shared heads; two tokens, then one per step."""
    config = cfg.preset("vaswani-tiny", **VARIANTS[variant])
    assert config.n_kv_heads < config.n_heads
    model, reference = twins(Transformer, torch_transformer.Transformer, config)
    source, target = batch()
    padding = source != 0
    memory = model.encode(source, padding)
    cache = model.new_cache()
    steps = [model.decode(target[:, :2], memory, padding, cache=cache)]
    steps += [model.decode(target[:, t : t + 1], memory, padding, cache=cache) for t in range(2, 6)]
    assert cache.layers[0].self_attention.keys.shape == (3, config.n_kv_heads, 6, config.head_dim)
    cached = jnp.concatenate(steps, axis=1)
    with torch.no_grad():
        tsource, ttarget, tpadding = torch.from_numpy(source), torch.from_numpy(target), torch.from_numpy(padding)
        expected = reference.decode(ttarget, reference.encode(tsource, tpadding), tpadding)
    assert_close(cached, model.decode(target, memory, padding))
    assert_close(cached, expected.numpy())


@pytest.mark.parametrize("capacity", [None, 6])
def test_cache_reordered_mid_decoding_equals_torch_and_recomputation(capacity) -> None:
    """DecoderCache.reorder after three tokens (beam search keeps rows 2, 0, 0), cross-attention
    included: the rest decodes as the reordered rows decode from scratch, and as torch's."""
    model, reference = twins(Transformer, torch_transformer.Transformer, cfg.preset("vaswani-tiny", n_kv_heads=2))
    source, target = batch()
    indices = np.array([2, 0, 0])
    padding = source != 0
    memory = model.encode(source, padding)
    cache = model.new_cache(capacity)
    steps = [model.decode(target[:, :3], memory, padding, cache=cache)]
    cache.reorder(jnp.asarray(indices))
    steps = [steps[0][indices]]
    memory, padding, target = memory[indices], padding[indices], target[indices]
    steps += [model.decode(target[:, t : t + 1], memory, padding, cache=cache) for t in range(3, 6)]
    cached = jnp.concatenate(steps, axis=1)
    assert_close(cached, model.decode(target, memory, padding))  # the reordered rows from scratch

    source, target, rows = torch.from_numpy(source), torch.from_numpy(batch()[1]), torch.from_numpy(indices)
    with torch.no_grad():
        padding = reference.source_padding(source)
        memory = reference.encode(source, padding)
        cache = reference.new_cache()
        steps = [reference.decode(target[:, :3], memory, padding, cache=cache)]
        cache.reorder(rows)
        steps, memory, padding, target = [steps[0][rows]], memory[rows], padding[rows], target[rows]
        steps += [reference.decode(target[:, t : t + 1], memory, padding, cache=cache) for t in range(3, 6)]
    assert_close(cached, torch.cat(steps, dim=1).numpy())


@pytest.mark.parametrize("variant", [PAPER, LEARNED, RELATIVE])
def test_state_dict_loads_strictly_into_torch_and_counts_alike(variant: str) -> None:
    """Ours into a fresh torch twin, strictly (shared, separate, untied matrices): same outputs, counts."""
    model = Transformer(cfg.preset("vaswani-tiny", **VARIANTS[variant]), rngs=nnx.Rngs(1))
    assert_state_dict_loads_into_torch(model, torch_transformer.Transformer, batch())


def test_shared_matrices_appear_under_every_torch_name() -> None:
    model = Transformer(cfg.preset("vaswani-tiny"), rngs=nnx.Rngs(0))
    weights = state_dict(model)
    for alias in ("target_embedding.weight", "output_projection.weight"):
        np.testing.assert_array_equal(weights[alias], weights["source_embedding.weight"])
    assert model.output_projection.weight is model.source_embedding.weight  # one parameter
    assert model.tied_weights == tie("source_embedding.weight", "target_embedding.weight", "output_projection.weight")
    untied = state_dict(Transformer(cfg.preset("vaswani-tiny", **VARIANTS[LEARNED]),
                                    rngs=nnx.Rngs(0)))
    assert not np.array_equal(untied["output_projection.weight"], untied["target_embedding.weight"])


def test_tie_names_the_first_name_as_the_source_as_torch_registers_it() -> None:
    assert tie("token_embedding.weight", "output_projection.weight") == {
        "output_projection.weight": "token_embedding.weight"}
    assert tie("bert.embeddings.word_embeddings.weight", "mlm_head.decoder.weight") == {
        "mlm_head.decoder.weight": "bert.embeddings.word_embeddings.weight"}
    assert tie("source_embedding.weight") == {}
    model = Transformer(cfg.preset("vaswani-tiny", share_embeddings=True, tie_output=True), rngs=nnx.Rngs(0))
    assert "source_embedding.weight" in parameters(model) and "output_projection.weight" not in parameters(model)


def test_initialisation_is_glorot_with_scaled_embeddings() -> None:
    config = cfg.preset("vaswani-tiny", d_model=64, d_ff=128, positional="learned", tie_output=False)
    weights = state_dict(Transformer(config, rngs=nnx.Rngs(0)))
    assert weights["source_embedding.weight"].std() == pytest.approx(64**-0.5, rel=0.1)
    assert weights["target_positions.embedding.weight"].std() == pytest.approx(64**-0.5, rel=0.1)
    glorot = (2 / (64 + 128)) ** 0.5  # uniform(-a, a), a = sqrt(6 / (fan_in + fan_out)): std a / sqrt(3)
    assert weights["encoder.layers.0.feed_forward.w1.weight"].std() == pytest.approx(glorot, rel=0.1)
    assert np.abs(weights["encoder.layers.0.feed_forward.w1.weight"]).max() <= (6 / (64 + 128)) ** 0.5
    assert not weights["decoder.layers.1.cross_attention.out_proj.bias"].any()
    assert (weights["decoder.layers.1.feed_forward_residual.norm.weight"] == 1).all()
    tied = state_dict(Transformer(cfg.preset("vaswani-tiny", d_model=64), rngs=nnx.Rngs(0)))
    assert tied["output_projection.weight"].std() == pytest.approx(64**-0.5, rel=0.1)  # an embedding's scale


@pytest.mark.parametrize("variant", [PAPER, RELATIVE])
def test_runs_under_jit(variant: str) -> None:
    assert_runs_under_jit(built(variant), batch())


def test_dropout_acts_in_training_only() -> None:
    config = cfg.preset("vaswani-tiny", dropout=0.2, attention_dropout=0.1)
    assert_dropout_in_training_only(Transformer(config, rngs=nnx.Rngs(0)), batch())
