"""taa.keras.positional against taa.torch.positional: sinusoids, learned positions, RoPE,
T5's relative buckets and bias, ALiBi."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from taa.keras import positional as kp
from taa.keras.weights import load_state_dict, state_dict
from taa.torch import positional as tp

ATOL = 1e-5


def numpy(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else keras.ops.convert_to_numpy(x)


def close(actual, expected, atol: float = ATOL) -> None:
    np.testing.assert_allclose(numpy(actual), numpy(expected), atol=atol, rtol=0)


def copy_weights(keras_layer, torch_layer) -> None:
    load_state_dict(keras_layer, {k: v.detach().numpy() for k, v in torch_layer.state_dict().items()})


def inputs(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


@pytest.mark.parametrize("max_length, d_model", [(64, 16), (256, 64), (50, 7)])
def test_sinusoidal_table_is_torchs(max_length: int, d_model: int) -> None:
    close(kp.sinusoidal_table(max_length, d_model), tp.sinusoidal_table(max_length, d_model))


def test_sinusoidal_encoding_adds_the_table_from_an_offset() -> None:
    ours, reference = kp.SinusoidalPositionalEncoding(16, 32), tp.SinusoidalPositionalEncoding(16, 32)
    x = inputs(2, 5, 16)
    close(ours(x), reference(torch.from_numpy(x)))
    close(ours(x, 7), reference(torch.from_numpy(x), 7))
    assert state_dict(ours) == {} == reference.state_dict()
    with pytest.raises(ValueError, match="position 33 exceeds max_length=32"):
        ours(x, 28)


def test_learned_positions_match_torch_with_offsets_and_position_ids() -> None:
    torch.manual_seed(0)
    reference = tp.LearnedPositionalEmbedding(12, 8)
    ours = kp.LearnedPositionalEmbedding(12, 8)
    ours.build()
    copy_weights(ours, reference)
    assert list(state_dict(ours)) == ["embedding.weight"]
    x = inputs(2, 4, 8)
    tx = torch.from_numpy(x)
    with torch.no_grad():
        close(ours(x), reference(tx))
        close(ours(x, 3), reference(tx, 3))
        ids = np.array([[0, 0, 1, 2], [0, 1, 2, 3]])
        close(ours(x, position_ids=ids), reference(tx, position_ids=torch.from_numpy(ids)))
    with pytest.raises(ValueError, match="position 13 exceeds max_length=12"):
        ours(x, 9)
    with pytest.raises(ValueError, match="position 13 exceeds max_length=12"):
        ours(x, position_ids=ids + 9)


@pytest.mark.parametrize("offset", [0, 3])
def test_rotary_embedding_is_torchs(offset: int) -> None:
    ours, reference = kp.RotaryEmbedding(8, 16), tp.RotaryEmbedding(8, 16)
    x = inputs(2, 3, 5, 8)
    close(ours(x, offset), reference(torch.from_numpy(x), offset))
    # the roll with a signed sine is the paper's x cos + rotate_half(x) sin
    cos, sin = ours.cos[offset : offset + 5], ours.sin[offset : offset + 5]
    close(ours(x, offset), x * cos + numpy(kp.RotaryEmbedding.rotate_half(x)) * sin)
    assert state_dict(ours) == {}


def test_rotary_embedding_checks_its_sizes() -> None:
    with pytest.raises(ValueError, match="even head dimension, got 5"):
        kp.RotaryEmbedding(5)
    with pytest.raises(ValueError, match="position 17 exceeds max_length=16"):
        kp.RotaryEmbedding(8, 16)(inputs(1, 1, 5, 8), 12)


def test_rotated_scores_depend_on_the_offset_only() -> None:
    rotary = kp.RotaryEmbedding(8, 64)
    q, k = inputs(1, 1, 1, 8, seed=1), inputs(1, 1, 1, 8, seed=2)
    score = lambda i, j: float(numpy(keras.ops.sum(rotary(q, i) * rotary(k, j))))  # noqa: E731
    assert score(5, 2) == pytest.approx(score(13, 10), abs=1e-5)


@pytest.mark.parametrize(
    "layer, shape",
    [
        pytest.param(kp.SinusoidalPositionalEncoding(8, 32), (None, 8), id="sinusoidal"),
        pytest.param(kp.LearnedPositionalEmbedding(12, 8), (None, 8), id="learned"),
        pytest.param(kp.RotaryEmbedding(8, 16), (3, None, 8), id="rotary"),
    ],
)
def test_positions_trace_with_an_open_length(layer, shape: tuple) -> None:
    """Traced with the length left open (a Lambda on keras.Input: the layer's own output shape
    would spare it the trace), positions from an offset are the eager ones."""
    symbolic = keras.Input(shape)
    model = keras.Model(symbolic, keras.layers.Lambda(lambda x: layer(x, 2))(symbolic))
    x = inputs(2, *(5 if size is None else size for size in shape))
    close(model(x), layer(x, 2))


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 20)])
def test_relative_position_buckets_are_torchs(bidirectional: bool, num_buckets: int, max_distance: int) -> None:
    relative = np.arange(-300, 301)[None, :]
    expected = tp.relative_position_bucket(torch.from_numpy(relative), bidirectional, num_buckets, max_distance)
    np.testing.assert_array_equal(
        numpy(kp.relative_position_bucket(relative, bidirectional, num_buckets, max_distance)), numpy(expected)
    )


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("query_length, key_length, offset", [(5, 5, 0), (1, 6, 5), (3, 9, 6)])
def test_relative_position_bias_matches_torch(bidirectional: bool, query_length: int, key_length: int, offset: int):
    torch.manual_seed(0)
    reference = tp.RelativePositionBias(4, 8, 20, bidirectional)
    ours = kp.RelativePositionBias(4, 8, 20, bidirectional)
    ours.build()
    copy_weights(ours, reference)
    with torch.no_grad():
        expected = reference(query_length, key_length, offset)
    close(ours(query_length, key_length, offset), expected)


@pytest.mark.parametrize("n_heads", [1, 2, 3, 5, 6, 8, 12, 16])
def test_alibi_slopes_are_torchs(n_heads: int) -> None:
    close(kp.alibi_slopes(n_heads), tp.alibi_slopes(n_heads))


@pytest.mark.parametrize("query_length, key_length, offset", [(4, 4, 0), (1, 7, 6), (2, 9, 7)])
def test_alibi_bias_matches_torch(query_length: int, key_length: int, offset: int) -> None:
    close(kp.AlibiBias(6)(query_length, key_length, offset), tp.AlibiBias(6)(query_length, key_length, offset))
    with pytest.raises(ValueError, match="at least one head, got 0"):
        kp.alibi_slopes(0)


@pytest.mark.parametrize(
    "layer",
    [
        kp.SinusoidalPositionalEncoding(16, 40),
        kp.LearnedPositionalEmbedding(12, 8),
        kp.RotaryEmbedding(8, 24, base=500.0),
        kp.RelativePositionBias(4, 8, 20, bidirectional=False),
        kp.AlibiBias(3),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_config_round_trip(layer) -> None:
    config = layer.get_config()
    again = type(layer).from_config(config)
    assert again.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config
