"""taa.keras.models.t5: parity with the torch T5 (relative bias, tied and untied heads, output
scaling), cached decoding, shift_right, weights, config, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from taa import config as cfg
from taa.keras.models.t5 import T5ForConditionalGeneration, shift_right
from taa.keras.weights import ensure_built, state_dict
from taa.torch.models import t5 as torch_t5
from tests.keras.models.twins import (
    assert_close,
    assert_config_round_trip,
    assert_saves_and_loads,
    assert_state_dict_loads_into_torch,
    assert_sublayers_follow_mixed_precision,
    assert_traces_with_open_lengths,
    torch_outputs,
    twins,
)

VARIANTS = {
    "v1.0 (tied, scaled)": ("t5-tiny", {}),
    "v1.1 (untied, gated)": ("t5-v1_1-tiny", {}),
    "tied, unscaled": ("t5-tiny", {"scale_decoder_outputs": False}),
    "untied, scaled": ("t5-tiny", {"tie_word_embeddings": False, "scale_decoder_outputs": True}),
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


@pytest.mark.parametrize("lengths", [(9, 6), (13, 12)])
@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_equal_torch(variant: str, lengths: tuple[int, int]) -> None:
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
    padding = keras.ops.convert_to_numpy(model.source_padding(ids))
    np.testing.assert_array_equal(padding, ids != 0)
    memory = model.encode(ids, padding)
    with torch.no_grad():
        expected_memory = reference.encode(torch.from_numpy(ids), torch.from_numpy(padding))
        expected = reference.decode(torch.from_numpy(decoder_ids), expected_memory, torch.from_numpy(padding))
    assert_close(memory, expected_memory.numpy())
    assert_close(model.decode(decoder_ids, memory, padding), expected.numpy())


@pytest.mark.parametrize("name", ["t5-tiny", "t5-v1_1-tiny"])
def test_cached_step_by_step_decoding_equals_full_decode(name: str) -> None:
    model = T5ForConditionalGeneration(cfg.preset(name))
    ids, decoder_ids, _, _ = batch()
    padding = model.source_padding(ids)
    memory = model.encode(ids, padding)
    full = model.decode(decoder_ids, memory, padding)
    cache = model.new_cache()
    steps = [model.decode(decoder_ids[:, t : t + 1], memory, padding, cache=cache) for t in range(6)]
    assert cache.length == 6
    assert_close(keras.ops.concatenate(steps, axis=1), full)


def test_shift_right_equals_torch() -> None:
    labels = np.array([[5, 6, 7, -100], [8, -100, -100, -100]], dtype="int32")
    expected = torch_t5.shift_right(torch.from_numpy(labels).long(), 0, 0).numpy()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(shift_right(labels, 0, 0)), expected)
    model = T5ForConditionalGeneration(cfg.preset("t5-tiny", decoder_start_id=3))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.shift_right(labels)), [[3, 5, 6, 7], [3, 8, 0, 0]])


@pytest.mark.parametrize("variant", ["v1.0 (tied, scaled)", "v1.1 (untied, gated)"])
def test_state_dict_loads_strictly_into_torch_and_counts_alike(variant: str) -> None:
    name, overrides = VARIANTS[variant]
    model = T5ForConditionalGeneration(cfg.preset(name, **overrides))
    ids, decoder_ids, mask, _ = batch()
    assert_state_dict_loads_into_torch(model, torch_t5.T5ForConditionalGeneration, (ids, decoder_ids, mask))
    reference = torch_t5.T5ForConditionalGeneration(model.config)
    assert model.num_parameters() == reference.num_parameters()
    assert model.parameter_breakdown() == reference.parameter_breakdown()
    assert ("lm_head.weight" in state_dict(model)) and "encoder.relative_bias.embedding.weight" in state_dict(model)


def test_initialisation_follows_mesh_tensorflow() -> None:
    keras.utils.set_random_seed(0)
    config = cfg.preset("t5-tiny", d_model=64, d_kv=16, d_ff=128)
    weights = state_dict(ensure_built(T5ForConditionalGeneration(config)))
    assert weights["shared.weight"].std() == pytest.approx(1.0, rel=0.1)
    assert weights["encoder.layers.0.self_attention.q_proj.weight"].std() == pytest.approx((64 * 16) ** -0.5, rel=0.1)
    assert weights["decoder.layers.1.cross_attention.k_proj.weight"].std() == pytest.approx(64**-0.5, rel=0.1)
    assert weights["encoder.layers.1.feed_forward.w2.weight"].std() == pytest.approx(128**-0.5, rel=0.1)
    assert (weights["decoder.final_norm.weight"] == 1).all()


@pytest.mark.parametrize("name", ["t5-tiny", "t5-v1_1-tiny"])
def test_traces_with_open_lengths(name: str) -> None:
    model = ensure_built(T5ForConditionalGeneration(cfg.preset(name)))
    ids, decoder_ids, mask, decoder_mask = batch()
    assert_traces_with_open_lengths(model, (ids, decoder_ids))
    assert_traces_with_open_lengths(model, (ids, decoder_ids, mask, decoder_mask))


def test_sublayers_follow_mixed_precision() -> None:
    assert_sublayers_follow_mixed_precision(
        lambda **options: T5ForConditionalGeneration(cfg.preset("t5-v1_1-tiny"), **options)
    )


def test_config_round_trip_and_save(tmp_path) -> None:
    model = T5ForConditionalGeneration(cfg.preset("t5-v1_1-tiny"))
    ids, decoder_ids, mask, decoder_mask = batch()
    inputs = (ids, decoder_ids, mask, decoder_mask)
    assert_config_round_trip(model, inputs)
    assert_saves_and_loads(model, inputs, tmp_path)
