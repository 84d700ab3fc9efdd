"""LayerNorm and RMSNorm against torch.nn and the formulas they implement."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taa.torch.norm import LayerNorm, RMSNorm, make_norm

pytestmark = pytest.mark.usefixtures("single_thread")


def _randomise(*modules: nn.Module, seed: int = 0) -> None:
    """Give every module the same random parameters (so ones/zeros cannot hide a bug)."""
    generator = torch.Generator().manual_seed(seed)
    for parameters in zip(*(m.parameters() for m in modules)):
        value = torch.randn(parameters[0].shape, generator=generator)
        for p in parameters:
            with torch.no_grad():
                p.copy_(value)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 1e-6])
def test_layer_norm_matches_torch(bias: bool, eps: float, fused: bool) -> None:
    torch.manual_seed(0)
    ours, theirs = LayerNorm(16, eps=eps, bias=bias, fused=fused), nn.LayerNorm(16, eps=eps, bias=bias)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    _randomise(ours, theirs)
    x = torch.randn(3, 5, 16) * 3 + 1.5
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)


def test_layer_norm_without_bias_has_no_bias_parameter() -> None:
    norm = LayerNorm(8, bias=False)
    assert norm.bias is None
    assert [n for n, _ in norm.named_parameters()] == ["weight"]


def test_layer_norm_output_is_standardised_before_the_affine() -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 7, 32) * 5 - 2
    y = LayerNorm(32)(x)  # weight 1, bias 0
    torch.testing.assert_close(y.mean(-1), torch.zeros(4, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(4, 7), atol=1e-3, rtol=0)


def _rms_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * weight


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("eps", [1e-6, 1e-5, 0.1])
def test_rms_norm_matches_formula_and_torch(eps: float, fused: bool) -> None:
    torch.manual_seed(2)
    ours, theirs = RMSNorm(16, eps=eps, fused=fused), nn.RMSNorm(16, eps=eps)
    _randomise(ours, theirs)
    x = torch.randn(3, 5, 16) * 2 + 0.5
    out = ours(x)
    torch.testing.assert_close(out, _rms_reference(x, ours.weight, eps), atol=1e-5, rtol=0)
    torch.testing.assert_close(out, theirs(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm", [LayerNorm(24), LayerNorm(24, bias=False), RMSNorm(24)])
def test_fused_kernel_equals_the_written_out_formula_with_gradients(norm: nn.Module) -> None:
    _randomise(norm, seed=3)
    x = (torch.randn(2, 6, 24) * 4 + 1).requires_grad_()
    fused = norm(x)
    (grad_fused,) = torch.autograd.grad(fused.square().sum(), x)
    reference = norm.reference_forward(x)
    (grad_reference,) = torch.autograd.grad(reference.square().sum(), x)
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_fused, grad_reference, atol=1e-4, rtol=1e-5)


def test_rms_norm_does_not_centre() -> None:
    # A constant vector c keeps its sign and becomes c/|c| * weight: no mean subtraction.
    x = torch.full((1, 1, 4), 3.0)
    torch.testing.assert_close(RMSNorm(4, eps=1e-12)(x), torch.ones(1, 1, 4), atol=1e-5, rtol=0)
    assert [n for n, _ in RMSNorm(4).named_parameters()] == ["weight"]


def test_rms_norm_keeps_dtype() -> None:
    x = torch.randn(2, 3, 8, dtype=torch.bfloat16)
    norm = RMSNorm(8).to(torch.bfloat16)
    assert norm(x).dtype == torch.bfloat16


def test_make_norm() -> None:
    assert isinstance(make_norm("layer", 8, 1e-5), LayerNorm)
    assert make_norm("layer", 8, 1e-5, bias=False).bias is None
    rms = make_norm("rms", 8, 1e-3)
    assert isinstance(rms, RMSNorm) and rms.eps == 1e-3
    with pytest.raises(ValueError, match="batch"):
        make_norm("batch", 8, 1e-5)
