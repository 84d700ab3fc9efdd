"""taa.flax.models.t5: parity with the torch T5 (relative bias, tied and untied heads, output
scaling, padding masks), cached decoding (eagerly, and under nnx.jit with a fixed capacity),
shift_right, weights both ways, initialisation, dropout."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from taa import config as cfg
from taa.flax.models.t5 import T5ForConditionalGeneration, shift_right
from taa.flax.weights import state_dict
from taa.torch.models import t5 as torch_t5
from tests.flax.models.twins import (
    assert_close,
    assert_dropout_in_training_only,
    assert_runs_under_jit,
    assert_state_dict_loads_into_torch,
    torch_outputs,
    twins,
)

VARIANTS = {
    "v1.0 (tied, scaled)": ("t5-tiny", {}),
    "v1.1 (untied, gated)": ("t5-v1_1-tiny", {}),
    "tied, unscaled, swiglu, grouped-query": ("t5-tiny", {"scale_decoder_outputs": False, "activation": "swiglu",
                                                         "n_kv_heads": 2}),
    "untied, scaled, readable": ("t5-tiny", {"tie_word_embeddings": False, "scale_decoder_outputs": True,
                                             "attention": "readable"}),
}


def batch(length: int = 9, decoder_length: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Input ids (3, length) with their mask (right padding), decoder ids (3, decoder_length)
    with theirs.

    Distances up to 9 reach T5-tiny's logarithmic buckets (exact ones end at 2 or 4)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 100, (3, length)).astype("int32")
    mask = np.ones((3, length), dtype="int32")
    mask[1, 6:] = mask[2, 3:] = 0
    ids[mask == 0] = 0
    decoder_ids = rng.integers(2, 100, (3, decoder_length)).astype("int32")
    decoder_ids[:, 0] = 0  # the decoder starts with the pad id
    decoder_mask = np.ones((3, decoder_length), dtype="int32")
    decoder_mask[2, 4:] = 0
    return ids, decoder_ids, mask, decoder_mask


def moderate_logits(reference: torch.nn.Module) -> None:
    """An untied head drawn N(0, 1) (v1.1's initialisation) gives logits up to ~20, where float32
    rounding through the layers comes near the 1e-5 the parity tests keep; N(0, 1/d_model)
    gives logits of a few units, and the tests keep that bound at any length."""
    if not reference.config.tie_word_embeddings:
        reference.lm_head.weight.mul_(reference.config.d_model**-0.5)


def built(name: str) -> T5ForConditionalGeneration:
    """A model of preset ``name``, its untied head moderated (:func:`moderate_logits`), in eval mode."""
    model = T5ForConditionalGeneration(cfg.preset(name), rngs=nnx.Rngs(0))
    if not model.config.tie_word_embeddings:
        model.lm_head.weight[...] = model.lm_head.weight[...] * model.config.d_model**-0.5
    model.eval()
    return model


@pytest.mark.parametrize(  # the long lengths once, on the cheapest variant
    "variant, lengths", [(variant, (13, 12) if i == 3 else (9, 6)) for i, variant in enumerate(VARIANTS)]
)
def test_logits_equal_torch(variant: str, lengths: tuple[int, int]) -> None:
    """Each variant (tied/untied, scaled/unscaled, gated, grouped-query, readable), at short and
    long lengths, with and without padding masks: torch's logits."""
    name, overrides = VARIANTS[variant]
    config = cfg.preset(name, **overrides)
    model, reference = twins(
        T5ForConditionalGeneration, torch_t5.T5ForConditionalGeneration, config, moderate_logits
    )
    ids, decoder_ids, mask, decoder_mask = batch(*lengths)
    assert_close(model(ids, decoder_ids), torch_outputs(reference, ids, decoder_ids))
    assert_close(
        model(ids, decoder_ids, mask, decoder_mask), torch_outputs(reference, ids, decoder_ids, mask, decoder_mask)
    )


def test_encode_and_decode_equal_torch() -> None:
    model, reference = twins(T5ForConditionalGeneration, torch_t5.T5ForConditionalGeneration, cfg.preset("t5-tiny"))
    ids, decoder_ids, _, _ = batch()
    padding = np.array(model.source_padding(ids))
    np.testing.assert_array_equal(padding, ids != 0)
    memory = model.encode(ids, padding)
    with torch.no_grad():
        expected_memory = reference.encode(torch.from_numpy(ids), torch.from_numpy(padding))
        expected = reference.decode(torch.from_numpy(decoder_ids), expected_memory, torch.from_numpy(padding))
    assert_close(memory, expected_memory.numpy())
    assert_close(model.decode(decoder_ids, memory, padding), expected.numpy())


@pytest.mark.parametrize("name, capacity", [("t5-tiny", None), ("t5-tiny", 8)])  # v1.1's: the jit test
def test_cached_step_by_step_decoding_equals_full_decode(name: str, capacity) -> None:
    """One token per step through a growing or preallocated cache: the full decode."""
    model = built(name)
    ids, decoder_ids, _, _ = batch()
    padding = model.source_padding(ids)
    memory = model.encode(ids, padding)
    full = model.decode(decoder_ids, memory, padding)
    cache = model.new_cache(capacity)
    steps = [model.decode(decoder_ids[:, t : t + 1], memory, padding, cache=cache) for t in range(6)]
    assert int(cache.length) == 6 and cache.layers[0].cross_attention.length == 9
    assert_close(jnp.concatenate(steps, axis=1), full)


@pytest.mark.parametrize("name", ["t5-tiny", "t5-v1_1-tiny"])
def test_fixed_size_cache_under_jit_equals_full_decode_and_torch(name: str) -> None:
    """Decoding as generation runs it: the relative bias spans the cache's 8 positions, the
    cross-attention keys are made at the first step, and the later steps compile once."""
    model, reference = twins(T5ForConditionalGeneration, torch_t5.T5ForConditionalGeneration, cfg.preset(name),
                             moderate_logits)
    ids, decoder_ids, mask, _ = batch()
    padding = mask.astype(bool)
    memory = model.encode(ids, padding)
    traces = []

    @nnx.jit
    def step(model, target, memory, padding, cache):
        traces.append(target.shape)
        return model.decode(target, memory, padding, cache=cache)

    cache = model.new_cache(capacity=8)
    steps = [step(model, decoder_ids[:, t : t + 1], memory, padding, cache) for t in range(6)]
    cached = jnp.concatenate(steps, axis=1)
    assert_close(cached, model.decode(decoder_ids, memory, padding))
    assert len(traces) == 2  # the first step (no keys kept yet), then every later one
    with torch.no_grad():
        tpadding = torch.from_numpy(padding)
        expected = reference.decode(torch.from_numpy(decoder_ids), reference.encode(torch.from_numpy(ids), tpadding),
                                    tpadding)
    assert_close(cached, expected.numpy())


def test_shift_right_equals_torch() -> None:
    labels = np.array([[5, 6, 7, -100], [8, -100, -100, -100]], dtype="int32")
    expected = torch_t5.shift_right(torch.from_numpy(labels).long(), 0, 0).numpy()
    np.testing.assert_array_equal(np.asarray(shift_right(labels, 0, 0)), expected)
    model = T5ForConditionalGeneration(cfg.preset("t5-tiny", decoder_start_id=3), rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(model.shift_right(labels)), [[3, 5, 6, 7], [3, 8, 0, 0]])


@pytest.mark.parametrize("variant", ["v1.0 (tied, scaled)", "v1.1 (untied, gated)"])
def test_state_dict_loads_strictly_into_torch_and_counts_alike(variant: str) -> None:
    name, overrides = VARIANTS[variant]
    model = T5ForConditionalGeneration(cfg.preset(name, **overrides), rngs=nnx.Rngs(1))
    ids, decoder_ids, mask, _ = batch()
    assert_state_dict_loads_into_torch(model, torch_t5.T5ForConditionalGeneration, (ids, decoder_ids, mask))
    weights = state_dict(model)
    assert "lm_head.weight" in weights and "encoder.relative_bias.embedding.weight" in weights
    assert "decoder.relative_bias.embedding.weight" in weights
    tied = np.array_equal(weights["lm_head.weight"], weights["shared.weight"])
    assert tied == model.config.tie_word_embeddings


def test_initialisation_follows_mesh_tensorflow() -> None:
    config = cfg.preset("t5-tiny", d_model=64, d_kv=16, d_ff=128)
    weights = state_dict(T5ForConditionalGeneration(config, rngs=nnx.Rngs(0)))
    assert weights["shared.weight"].std() == pytest.approx(1.0, rel=0.1)
    assert weights["encoder.layers.0.self_attention.q_proj.weight"].std() == pytest.approx((64 * 16) ** -0.5, rel=0.1)
    assert weights["decoder.layers.1.cross_attention.k_proj.weight"].std() == pytest.approx(64**-0.5, rel=0.1)
    assert weights["encoder.layers.1.feed_forward.w2.weight"].std() == pytest.approx(128**-0.5, rel=0.1)
    assert weights["decoder.relative_bias.embedding.weight"].std() == pytest.approx(64**-0.5, rel=0.3)
    assert (weights["decoder.final_norm.weight"] == 1).all()


@pytest.mark.parametrize("name", ["t5-v1_1-tiny"])
def test_runs_under_jit(name: str) -> None:
    """nnx.jit of the whole model gives its eager logits, with and without masks (t5-tiny's
    decoder runs under jit in the fixed-size cache test, its whole model in the dropout test)."""
    model = built(name)
    ids, decoder_ids, mask, decoder_mask = batch()
    assert_runs_under_jit(model, (ids, decoder_ids))
    assert_runs_under_jit(model, (ids, decoder_ids, mask, decoder_mask))


def test_dropout_acts_in_training_only() -> None:
    config = cfg.preset("t5-tiny", dropout=0.2, attention_dropout=0.1)
    assert_dropout_in_training_only(T5ForConditionalGeneration(config, rngs=nnx.Rngs(0)), batch()[:2])
