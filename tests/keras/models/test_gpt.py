"""taa.keras.models.gpt: parity with the torch GPT, KV cache == full forward, weights, config, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from taa import config as cfg
from taa.keras.models.gpt import GPT, positions_from_mask
from taa.keras.weights import ensure_built, state_dict
from taa.torch.models import gpt as torch_gpt
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

POSITIONALS = ["learned", "rotary", "alibi"]


def batch(rows: int = 3, length: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (rows, length) and a left-padded attention mask: row r has 2r padding tokens."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 64, (rows, length)).astype("int32")
    mask = np.ones((rows, length), dtype="int32")
    for row in range(rows):
        mask[row, : 2 * row] = 0
    return ids, mask


@pytest.mark.parametrize("tie_output", [True, False])
@pytest.mark.parametrize("positional", POSITIONALS)
def test_logits_equal_torch(positional: str, tie_output: bool) -> None:
    config = cfg.preset("gpt-tiny", positional=positional, tie_output=tie_output)
    model, reference = twins(GPT, torch_gpt.GPT, config)
    ids, mask = batch()
    assert_close(model(ids), torch_outputs(reference, ids))
    assert_close(model(ids, mask), torch_outputs(reference, ids, mask))  # left padding
    positions = np.tile(np.arange(7, dtype="int32"), (3, 1))
    assert_close(
        model(ids, position_ids=positions), torch_outputs(reference, ids, position_ids=torch.from_numpy(positions))
    )


def test_post_norm_equals_torch() -> None:
    config = cfg.preset("gpt-tiny", norm_first=False)  # GPT-1: no final norm
    model, reference = twins(GPT, torch_gpt.GPT, config)
    ids, mask = batch()
    assert_close(model(ids, mask), torch_outputs(reference, ids, mask))


def test_positions_from_mask_equal_torch() -> None:
    _, mask = batch(rows=4)
    expected = torch_gpt.positions_from_mask(torch.from_numpy(mask)).numpy()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(positions_from_mask(mask)), expected)


@pytest.mark.parametrize("positional", POSITIONALS)
def test_cached_step_by_step_decoding_equals_full_forward(positional: str) -> None:
    model = GPT(cfg.preset("gpt-tiny", positional=positional))
    ids, _ = batch(length=10)
    full = model(ids)
    cache = model.new_cache()
    prefill = model(ids[:, :4], cache=cache)  # a prompt at once, then one token per step
    steps = [model(ids[:, t : t + 1], cache=cache) for t in range(4, 10)]
    assert cache.length == 10
    assert_close(keras.ops.concatenate([prefill, *steps], axis=1), full)


@pytest.mark.parametrize("positional", POSITIONALS)
def test_cached_decoding_of_left_padded_prompts_equals_full_forward(positional: str) -> None:
    model = GPT(cfg.preset("gpt-tiny", positional=positional))
    ids, mask = batch(length=9)
    full = model(ids, mask)
    cache = model.new_cache()
    outputs = [model(ids[:, :5], mask[:, :5], cache=cache)]
    for t in range(5, 9):  # the mask covers the cached tokens and the new one
        outputs.append(model(ids[:, t : t + 1], mask[:, : t + 1], cache=cache))
    real = mask.astype(bool)  # padding positions' logits are never read
    ours = keras.ops.convert_to_numpy(keras.ops.concatenate(outputs, axis=1))[real]
    np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(full)[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("positional", POSITIONALS)
def test_hidden_states_equal_torch(positional: str) -> None:
    model, reference = twins(GPT, torch_gpt.GPT, cfg.preset("gpt-tiny", positional=positional))
    ids, mask = batch()
    with torch.no_grad():
        expected = reference.hidden_states(torch.from_numpy(ids), torch.from_numpy(mask))
        logits = reference.output_projection(expected[:, -1])
    hidden = model.hidden_states(ids, mask)  # (b, n, d)
    assert tuple(hidden.shape) == (3, 7, 32)
    assert_close(hidden, expected.numpy())
    assert_close(model.output_projection(hidden[:, -1]), logits.numpy())


@pytest.mark.parametrize("positional", POSITIONALS)
def test_traces_with_open_lengths(positional: str) -> None:
    model = ensure_built(GPT(cfg.preset("gpt-tiny", positional=positional)))
    ids, mask = batch()
    assert_traces_with_open_lengths(model, (ids,))
    assert_traces_with_open_lengths(model, (ids, mask))


def test_sublayers_follow_mixed_precision() -> None:
    assert_sublayers_follow_mixed_precision(lambda **options: GPT(cfg.preset("gpt-tiny"), **options))


@pytest.mark.parametrize("tie_output", [True, False])
def test_state_dict_loads_strictly_into_torch(tie_output: bool) -> None:
    model = GPT(cfg.preset("gpt-tiny", tie_output=tie_output))
    ids, _ = batch()
    assert_state_dict_loads_into_torch(model, torch_gpt.GPT, (ids,))
    weights = state_dict(model)
    tied = np.array_equal(weights["output_projection.weight"], weights["token_embedding.weight"])
    assert tied == tie_output


@pytest.mark.parametrize("tie_output", [True, False])
def test_num_parameters_equal_torch(tie_output: bool) -> None:
    config = cfg.preset("gpt-tiny", tie_output=tie_output)
    model, reference = twins(GPT, torch_gpt.GPT, config)
    assert model.num_parameters() == reference.num_parameters()
    assert model.parameter_breakdown() == reference.parameter_breakdown()


def test_initialisation_follows_gpt2() -> None:
    keras.utils.set_random_seed(0)
    weights = state_dict(ensure_built(GPT(cfg.preset("gpt-tiny", n_layers=2, d_model=64, d_ff=256))))
    assert weights["token_embedding.weight"].std() == pytest.approx(0.02, rel=0.1)
    assert weights["blocks.layers.0.self_attention.q_proj.weight"].std() == pytest.approx(0.02, rel=0.1)
    residual = 0.02 / 2  # 0.02 / sqrt(2 * n_layers)
    assert weights["blocks.layers.1.self_attention.out_proj.weight"].std() == pytest.approx(residual, rel=0.1)
    assert weights["blocks.layers.1.feed_forward.w2.weight"].std() == pytest.approx(residual, rel=0.1)
    assert not weights["blocks.layers.0.feed_forward.w1.bias"].any()
    assert (weights["blocks.final_norm.weight"] == 1).all()


def test_config_round_trip_and_save(tmp_path) -> None:
    model = GPT(cfg.preset("gpt-tiny", positional="alibi", tie_output=False))
    ids, mask = batch()
    assert_config_round_trip(model, (ids, mask))
    assert_saves_and_loads(model, (ids, mask), tmp_path)


def test_tied_model_saves_and_loads(tmp_path) -> None:
    model = GPT(cfg.preset("gpt-tiny"))
    ids, _ = batch()
    assert_saves_and_loads(model, (ids,), tmp_path)


def test_fit_with_jit_compile() -> None:
    """The training path traces: one compiled step of model.fit on next-token targets."""
    keras.utils.set_random_seed(0)
    model = ensure_built(GPT(cfg.preset("gpt-tiny")))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    ids = np.random.default_rng(0).integers(0, 64, (4, 9)).astype("int32")
    before = state_dict(model)["blocks.layers.0.feed_forward.w1.weight"]
    history = model.fit(ids[:, :-1], ids[:, 1:], batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(state_dict(model)["blocks.layers.0.feed_forward.w1.weight"], before)


def test_fit_on_a_padded_batch_dataset() -> None:
    """Training on batches whose length varies traces once with the length left open."""
    tf = pytest.importorskip("tensorflow")
    keras.utils.set_random_seed(0)
    model = ensure_built(GPT(cfg.preset("gpt-tiny")))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 64, length).tolist() for length in (5, 9, 7, 4)]
    dataset = tf.data.Dataset.from_tensor_slices(tf.ragged.constant(rows, dtype=tf.int32))
    dataset = dataset.map(lambda row: (row[:-1], row[1:])).padded_batch(2)  # lengths 8, then 6
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("positional", POSITIONALS)
def test_bad_inputs_are_named(positional: str) -> None:
    model = GPT(cfg.preset("gpt-tiny", positional=positional))
    ids, mask = batch()
    with pytest.raises(ValueError, match="position 65 exceeds max_length=64"):
        model(np.zeros((1, 65), dtype="int32"))
    with pytest.raises(ValueError, match="position 65 exceeds max_length=64"):  # compiled for its shape
        model.predict(np.zeros((1, 65), dtype="int32"), verbose=0)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(3, 6\)"):
        model(ids, mask[:, 1:])
