"""The position-wise feed-forward network against its formulas (paper §3.3, GELU, SwiGLU)."""

from __future__ import annotations

import math

import pytest
import torch

from taa.torch.feedforward import PositionwiseFeedForward

pytestmark = pytest.mark.usefixtures("single_thread")


def _linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    out = x @ layer.weight.T
    return out + layer.bias if layer.bias is not None else out


def _gelu(x: torch.Tensor) -> torch.Tensor:  # the exact (erf) GELU of Hendrycks & Gimpel
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


@pytest.mark.parametrize("bias", [True, False])
def test_relu_is_max_0_xw1_b1_w2_b2(bias: bool) -> None:
    torch.manual_seed(0)
    ffn = PositionwiseFeedForward(8, 32, "relu", bias=bias).eval()
    x = torch.randn(2, 5, 8)
    expected = _linear(torch.clamp(_linear(x, ffn.w1), min=0.0), ffn.w2)
    torch.testing.assert_close(ffn(x), expected, atol=1e-5, rtol=0)
    assert ffn.gate is None
    assert (ffn.w1.bias is not None) == bias


def test_gelu() -> None:
    torch.manual_seed(1)
    ffn = PositionwiseFeedForward(8, 32, "gelu").eval()
    x = torch.randn(2, 5, 8)
    expected = _linear(_gelu(_linear(x, ffn.w1)), ffn.w2)
    torch.testing.assert_close(ffn(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bias", [True, False])
def test_swiglu(bias: bool) -> None:
    torch.manual_seed(2)
    ffn = PositionwiseFeedForward(8, 32, "swiglu", bias=bias).eval()
    x = torch.randn(2, 5, 8)
    a = _linear(x, ffn.w1)
    swish = a * torch.sigmoid(a)
    expected = _linear(swish * _linear(x, ffn.gate), ffn.w2)
    torch.testing.assert_close(ffn(x), expected, atol=1e-5, rtol=0)
    assert ffn.gate.weight.shape == (32, 8)


def test_gelu_tanh_is_the_written_out_approximation() -> None:
    torch.manual_seed(5)
    ffn = PositionwiseFeedForward(8, 32, "gelu_tanh").eval()
    x = torch.randn(2, 5, 8)
    a = _linear(x, ffn.w1)
    gelu = 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))
    torch.testing.assert_close(ffn(x), _linear(gelu, ffn.w2), atol=1e-5, rtol=0)


def test_geglu_gates_with_the_tanh_gelu() -> None:
    torch.manual_seed(6)
    ffn = PositionwiseFeedForward(8, 32, "geglu", bias=False).eval()
    x = torch.randn(2, 5, 8)
    a = _linear(x, ffn.w1)
    gelu = 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))
    torch.testing.assert_close(ffn(x), _linear(gelu * _linear(x, ffn.gate), ffn.w2), atol=1e-5, rtol=0)


def test_each_position_is_transformed_separately() -> None:
    torch.manual_seed(3)
    ffn = PositionwiseFeedForward(8, 16, "gelu").eval()
    x = torch.randn(1, 6, 8)
    whole = ffn(x)
    for i in range(6):
        torch.testing.assert_close(ffn(x[:, i : i + 1]), whole[:, i : i + 1], atol=1e-6, rtol=0)


def test_dropout_only_in_training() -> None:
    torch.manual_seed(4)
    ffn = PositionwiseFeedForward(8, 64, "relu", dropout=0.5)
    x = torch.randn(2, 4, 8)
    ffn.eval()
    torch.testing.assert_close(ffn(x), ffn(x))
    ffn.train()
    assert not torch.allclose(ffn(x), ffn.eval()(x))


@pytest.mark.parametrize("activation", ["tanh", "ReLU", "", "reglu"])
def test_bad_activation_raises(activation: str) -> None:
    with pytest.raises(ValueError, match="activation"):
        PositionwiseFeedForward(8, 16, activation)
