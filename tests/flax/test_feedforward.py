"""taa.flax.feedforward against taa.torch.feedforward: every activation, gated or not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx

from taa.flax import feedforward as ff
from taa.flax.weights import load_state_dict, state_dict
from taa.torch import feedforward as tf_

ATOL = 1e-5
ACTIVATIONS = ["relu", "gelu", "gelu_tanh", "swiglu", "geglu"]


def paired(activation: str, bias: bool = True, dropout: float = 0.0, seed: int = 0):
    torch.manual_seed(seed)
    reference = tf_.PositionwiseFeedForward(16, 32, activation, dropout, bias).eval()
    ours = ff.PositionwiseFeedForward(16, 32, activation, dropout, bias, rngs=nnx.Rngs(seed))
    load_state_dict(ours, {k: v.detach().numpy() for k, v in reference.state_dict().items()})
    return ours, reference


def inputs(seed: int = 1) -> np.ndarray:
    return (2 * np.random.default_rng(seed).standard_normal((2, 5, 16))).astype("float32")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_feed_forward_matches_torch(activation: str, bias: bool) -> None:
    ours, reference = paired(activation, bias)
    assert sorted(state_dict(ours)) == sorted(reference.state_dict())
    ours.eval()
    x = inputs()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(x), expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(ours, x), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["relu", "gelu", "gelu_tanh"])
def test_activations_are_torchs(name: str) -> None:
    x = np.linspace(-12, 12, 1001, dtype="float32")
    expected = tf_.ACTIVATIONS[name](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ff.ACTIVATIONS[name](x), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["swiglu", "geglu"])
def test_gate_activations_are_torchs(name: str) -> None:
    x = np.linspace(-12, 12, 1001, dtype="float32")
    expected = tf_.GATED[name](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ff.GATED[name](x), expected, atol=ATOL, rtol=0)


def test_dropout_acts_in_training_only() -> None:
    ours, _ = paired("relu", dropout=0.5)
    x = inputs()
    training = np.asarray(ours(x))  # built in training mode, as torch's
    ours.eval()
    evaluated = np.asarray(ours(x))
    np.testing.assert_array_equal(evaluated, np.asarray(ours(x)))
    assert np.abs(training - evaluated).max() > 1e-3
    ours.train()
    assert np.abs(np.asarray(ours(x)) - evaluated).max() > 1e-3


def test_unknown_activation_is_named() -> None:
    with pytest.raises(ValueError, match="activation='tanh' is not one of relu, gelu, gelu_tanh, swiglu, geglu"):
        ff.PositionwiseFeedForward(16, 32, "tanh", rngs=nnx.Rngs(0))
