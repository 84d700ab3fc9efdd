"""taa.keras.norm against taa.torch.norm (and so torch.nn): LayerNorm, RMSNorm, make_norm."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from taa.keras import norm as kn
from taa.keras.weights import load_state_dict, state_dict
from taa.torch import norm as tn

ATOL = 1e-5


def numpy(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else keras.ops.convert_to_numpy(x)


def close(actual, expected, atol: float = ATOL) -> None:
    np.testing.assert_allclose(numpy(actual), numpy(expected), atol=atol, rtol=0)


def randomised(reference: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights away from ones and zeros, so a missed scale or bias shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return reference


def paired(ours, reference):
    ours.build()
    load_state_dict(ours, {k: v.detach().numpy() for k, v in randomised(reference).state_dict().items()})
    return ours, reference


def inputs(seed: int = 1) -> np.ndarray:
    return (3 * np.random.default_rng(seed).standard_normal((2, 5, 16)) + 1).astype("float32")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 1e-12])
def test_layer_norm_matches_torch(bias: bool, fused: bool, eps: float) -> None:
    ours, reference = paired(kn.LayerNorm(16, eps, bias, fused), tn.LayerNorm(16, eps, bias, fused))
    assert list(state_dict(ours)) == list(reference.state_dict())
    x = inputs()
    with torch.no_grad():
        close(ours(x), reference(torch.from_numpy(x)))
        close(ours.reference_forward(x), reference.reference_forward(torch.from_numpy(x)))


@pytest.mark.parametrize("fused", [True, False])
def test_rms_norm_matches_torch(fused: bool) -> None:
    ours, reference = paired(kn.RMSNorm(16, 1e-6, fused), tn.RMSNorm(16, 1e-6, fused))
    assert list(state_dict(ours)) == ["weight"]
    x = inputs()
    with torch.no_grad():
        close(ours(x), reference(torch.from_numpy(x)))


def test_layer_norm_keeps_float32_statistics_under_bfloat16() -> None:
    """Inputs of mean 100, where bfloat16 has steps of 0.5: the mean and variance in float32, as
    torch's layer_norm under autocast (a bfloat16 mean is off by a good part of the spread);
    the output in bfloat16, as torch's on the CPU, within bfloat16 rounding of it."""
    ours, reference = paired(kn.LayerNorm(64, dtype="mixed_bfloat16"), tn.LayerNorm(64))
    x = keras.ops.cast(100 + np.random.default_rng(2).standard_normal((2, 5, 64)), "bfloat16")
    output = ours(x)
    assert keras.backend.standardize_dtype(output.dtype) == "bfloat16"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(torch.from_numpy(numpy(keras.ops.cast(x, "float32"))).bfloat16())
    # within two steps of bfloat16 (8 significant bits: 1/32 near 4)
    actual = numpy(keras.ops.cast(output, "float32"))
    np.testing.assert_allclose(actual, numpy(expected.float()), rtol=2**-6, atol=2**-6)


def test_make_norm_picks_the_kind() -> None:
    assert isinstance(kn.make_norm("layer", 8, 1e-5), kn.LayerNorm)
    rms = kn.make_norm("rms", 8, 1e-6, fused=False)
    assert isinstance(rms, kn.RMSNorm) and rms.eps == 1e-6 and not rms.fused
    assert kn.make_norm("layer", 8, 1e-5, bias=False).use_bias is False
    with pytest.raises(ValueError, match="norm='batch' is not 'layer' or 'rms'"):
        kn.make_norm("batch", 8, 1e-5)


@pytest.mark.parametrize("layer", [kn.LayerNorm(8, 1e-6, bias=False, fused=False), kn.RMSNorm(8, 1e-5)])
def test_config_round_trip(layer) -> None:
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
