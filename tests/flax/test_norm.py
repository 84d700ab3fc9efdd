"""taa.flax.norm against taa.torch.norm (and so torch.nn): LayerNorm, RMSNorm, make_norm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from taa.flax import norm as fn
from taa.flax.weights import load_state_dict, state_dict
from taa.torch import norm as tn

ATOL = 1e-5


def randomised(reference: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights away from ones and zeros, so a missed scale or bias shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return reference


def paired(ours: nnx.Module, reference: torch.nn.Module):
    load_state_dict(ours, {k: v.detach().numpy() for k, v in randomised(reference).state_dict().items()})
    return ours, reference


def inputs(seed: int = 1) -> np.ndarray:
    return (3 * np.random.default_rng(seed).standard_normal((2, 5, 16)) + 1).astype("float32")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 1e-12])
def test_layer_norm_matches_torch(bias: bool, fused: bool, eps: float) -> None:
    ours, reference = paired(
        fn.LayerNorm(16, eps, bias, fused, rngs=nnx.Rngs(0)), tn.LayerNorm(16, eps, bias, fused)
    )
    assert sorted(state_dict(ours)) == sorted(reference.state_dict())
    x = inputs()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(ours(x), expected, atol=ATOL, rtol=0)
        expected = reference.reference_forward(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(ours.reference_forward(x), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("fused", [True, False])
def test_rms_norm_matches_torch(fused: bool) -> None:
    ours, reference = paired(fn.RMSNorm(16, 1e-6, fused, rngs=nnx.Rngs(0)), tn.RMSNorm(16, 1e-6, fused))
    assert list(state_dict(ours)) == ["weight"]
    x = inputs()
    with torch.no_grad():
        np.testing.assert_allclose(ours(x), reference(torch.from_numpy(x)).numpy(), atol=ATOL, rtol=0)


def test_norms_trace_under_jit() -> None:
    layer, rms = fn.LayerNorm(16, rngs=nnx.Rngs(0)), fn.RMSNorm(16, rngs=nnx.Rngs(0))
    x = inputs()
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(layer, x), layer(x), atol=1e-6, rtol=0)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(rms, x), rms(x), atol=1e-6, rtol=0)


def test_layer_norm_keeps_float32_statistics_under_bfloat16() -> None:
    """Inputs of mean 100, where bfloat16 has steps of 0.5: the mean and variance in float32, as
    torch's layer_norm under autocast; the output in bfloat16, within bfloat16 rounding of torch's."""
    ours, reference = paired(fn.LayerNorm(64, rngs=nnx.Rngs(0)), tn.LayerNorm(64))
    x = jnp.asarray(100 + np.random.default_rng(2).standard_normal((2, 5, 64)), jnp.bfloat16)
    output = ours(x)
    assert output.dtype == jnp.bfloat16 and ours.weight[...].dtype == jnp.float32
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(torch.from_numpy(np.array(x.astype(jnp.float32))).bfloat16())
    actual = np.asarray(output.astype(jnp.float32))
    np.testing.assert_allclose(actual, expected.float().numpy(), rtol=2**-6, atol=2**-6)
    assert fn.RMSNorm(64, rngs=nnx.Rngs(0))(x).dtype == jnp.bfloat16


def test_parameters_are_float32_and_learn() -> None:
    layer = fn.LayerNorm(8, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (3, 8))
    gradients = nnx.grad(lambda m: (m(x) * jnp.arange(8.0)).sum())(layer)
    assert np.abs(np.asarray(gradients["weight"][...])).max() > 0
    assert np.abs(np.asarray(gradients["bias"][...])).max() > 0


def test_make_norm_picks_the_kind() -> None:
    rngs = nnx.Rngs(0)
    assert isinstance(fn.make_norm("layer", 8, 1e-5, rngs=rngs), fn.LayerNorm)
    rms = fn.make_norm("rms", 8, 1e-6, fused=False, rngs=rngs)
    assert isinstance(rms, fn.RMSNorm) and rms.eps == 1e-6 and not rms.fused
    assert fn.make_norm("layer", 8, 1e-5, bias=False, rngs=rngs).bias is None
    with pytest.raises(ValueError, match="norm='batch' is not 'layer' or 'rms'"):
        fn.make_norm("batch", 8, 1e-5, rngs=rngs)
