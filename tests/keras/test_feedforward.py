"""taa.keras.feedforward against taa.torch.feedforward: every activation, gated or not."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from taa.keras import feedforward as kf
from taa.keras.weights import load_state_dict, state_dict
from taa.torch import feedforward as tf_

ATOL = 1e-5
ACTIVATIONS = ["relu", "gelu", "gelu_tanh", "swiglu", "geglu"]


def numpy(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else keras.ops.convert_to_numpy(x)


def paired(activation: str, bias: bool = True, dropout: float = 0.0, seed: int = 0):
    torch.manual_seed(seed)
    reference = tf_.PositionwiseFeedForward(16, 32, activation, dropout, bias).eval()
    ours = kf.PositionwiseFeedForward(16, 32, activation, dropout, bias)
    ours.build()
    load_state_dict(ours, {k: v.detach().numpy() for k, v in reference.state_dict().items()})
    return ours, reference


def inputs(seed: int = 1) -> np.ndarray:
    return (2 * np.random.default_rng(seed).standard_normal((2, 5, 16))).astype("float32")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_feed_forward_matches_torch(activation: str, bias: bool) -> None:
    ours, reference = paired(activation, bias)
    assert list(state_dict(ours)) == list(reference.state_dict())
    x = inputs()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(numpy(ours(x)), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["relu", "gelu", "gelu_tanh"])
def test_activations_are_torchs(name: str) -> None:
    x = np.linspace(-12, 12, 1001, dtype="float32")
    expected = tf_.ACTIVATIONS[name](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(numpy(kf.ACTIVATIONS[name](x)), expected, atol=ATOL, rtol=0)


def test_dropout_acts_in_training_only() -> None:
    ours, _ = paired("relu", dropout=0.5)
    x = inputs()
    np.testing.assert_array_equal(numpy(ours(x)), numpy(ours(x, training=False)))
    assert np.abs(numpy(ours(x, training=True)) - numpy(ours(x))).max() > 1e-3


def test_unknown_activation_is_named() -> None:
    with pytest.raises(ValueError, match="activation='tanh' is not one of relu, gelu, gelu_tanh, swiglu, geglu"):
        kf.PositionwiseFeedForward(16, 32, "tanh")


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_config_round_trip(activation: str) -> None:
    layer = kf.PositionwiseFeedForward(16, 32, activation, 0.1, bias=False)
    config = layer.get_config()
    again = kf.PositionwiseFeedForward.from_config(config)
    assert again.get_config() == config and (again.gate is None) == (activation == "gelu")
