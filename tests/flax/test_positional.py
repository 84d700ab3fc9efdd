"""taa.flax.positional against taa.torch.positional: sinusoids, learned positions, RoPE,
T5's relative buckets and bias, ALiBi; offsets as ints and as traced scalars."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from taa.flax import positional as fp
from taa.flax.weights import load_state_dict, state_dict
from taa.torch import positional as tp

ATOL = 1e-5


def numpy(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def close(actual, expected, atol: float = ATOL) -> None:
    np.testing.assert_allclose(numpy(actual), numpy(expected), atol=atol, rtol=0)


def copy_weights(ours: nnx.Module, reference: torch.nn.Module) -> None:
    load_state_dict(ours, {k: v.detach().numpy() for k, v in reference.state_dict().items()})


def inputs(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def traced_offset(module, x, offset: int):
    """module(x, offset) under nnx.jit with the offset a traced int32 scalar."""
    return nnx.jit(lambda module, x, offset: module(x, offset))(module, x, jnp.int32(offset))


def test_sinusoidal_table_is_torchs() -> None:
    """Small, large and odd widths: torch's table."""
    for max_length, d_model in [(64, 16), (256, 64), (50, 7)]:
        close(fp.sinusoidal_table(max_length, d_model), tp.sinusoidal_table(max_length, d_model))


def test_sinusoidal_encoding_adds_the_table_from_an_offset() -> None:
    ours, reference = fp.SinusoidalPositionalEncoding(16, 32), tp.SinusoidalPositionalEncoding(16, 32)
    x = inputs(2, 5, 16)
    close(ours(x), reference(torch.from_numpy(x)))
    close(ours(x, 7), reference(torch.from_numpy(x), 7))
    close(traced_offset(ours, x, 7), reference(torch.from_numpy(x), 7))
    close(ours(x, jnp.int32(7)), reference(torch.from_numpy(x), 7))
    assert state_dict(ours) == {} == reference.state_dict()
    with pytest.raises(ValueError, match="position 33 exceeds max_length=32"):
        ours(x, 28)
    with pytest.raises(ValueError, match="position 33 exceeds max_length=32"):
        ours(x, jnp.int32(28))  # a concrete array is checked too
    assert np.isnan(numpy(traced_offset(ours, x, 28))[:, -1]).all()  # traced: NaN past the table, not clamped


def test_learned_positions_match_torch_with_offsets_and_position_ids() -> None:
    torch.manual_seed(0)
    reference = tp.LearnedPositionalEmbedding(12, 8)
    ours = fp.LearnedPositionalEmbedding(12, 8, rngs=nnx.Rngs(0))
    copy_weights(ours, reference)
    assert list(state_dict(ours)) == ["embedding.weight"]
    x = inputs(2, 4, 8)
    tx = torch.from_numpy(x)
    ids = np.array([[0, 0, 1, 2], [0, 1, 2, 3]])
    with torch.no_grad():
        close(ours(x), reference(tx))
        close(ours(x, 3), reference(tx, 3))
        close(traced_offset(ours, x, 3), reference(tx, 3))
        close(ours(x, position_ids=ids), reference(tx, position_ids=torch.from_numpy(ids)))
        traced = nnx.jit(lambda module, x, ids: module(x, position_ids=ids))(ours, x, ids)
        close(traced, reference(tx, position_ids=torch.from_numpy(ids)))
    with pytest.raises(ValueError, match="position 13 exceeds max_length=12"):
        ours(x, 9)
    with pytest.raises(ValueError, match="position 13 exceeds max_length=12"):
        ours(x, position_ids=ids + 9)


@pytest.mark.parametrize("offset", [0, 3])
def test_rotary_embedding_is_torchs(offset: int) -> None:
    ours, reference = fp.RotaryEmbedding(8, 16), tp.RotaryEmbedding(8, 16)
    x = inputs(2, 3, 5, 8)
    expected = reference(torch.from_numpy(x), offset)
    close(ours(x, offset), expected)
    close(traced_offset(ours, x, offset), expected)
    # the roll with a signed sine is the paper's x cos + rotate_half(x) sin
    cos, sin = numpy(ours.cos[...])[offset : offset + 5], numpy(ours.sin[...])[offset : offset + 5]
    close(ours(x, offset), x * cos + numpy(fp.RotaryEmbedding.rotate_half(x)) * sin)
    assert state_dict(ours) == {}


def test_rotary_embedding_checks_its_sizes() -> None:
    with pytest.raises(ValueError, match="even head dimension, got 5"):
        fp.RotaryEmbedding(5)
    with pytest.raises(ValueError, match="position 17 exceeds max_length=16"):
        fp.RotaryEmbedding(8, 16)(inputs(1, 1, 5, 8), 12)


def test_rotary_keeps_bfloat16() -> None:
    x = jnp.asarray(inputs(1, 2, 3, 8), jnp.bfloat16)
    assert fp.RotaryEmbedding(8, 16)(x, 2).dtype == jnp.bfloat16


def test_rotated_scores_depend_on_the_offset_only() -> None:
    rotary = fp.RotaryEmbedding(8, 64)
    q, k = inputs(1, 1, 1, 8, seed=1), inputs(1, 1, 1, 8, seed=2)
    score = lambda i, j: float(jnp.sum(rotary(q, i) * rotary(k, j)))  # noqa: E731
    assert score(5, 2) == pytest.approx(score(13, 10), abs=1e-5)


def test_relative_position_buckets_are_torchs() -> None:
    """Both directions, two bucket layouts, distances past max_distance: torch's buckets."""
    relative = np.arange(-300, 301)[None, :]
    for bidirectional in [True, False]:
        for num_buckets, max_distance in [(32, 128), (8, 20)]:
            expected = tp.relative_position_bucket(torch.from_numpy(relative), bidirectional, num_buckets, max_distance)
            np.testing.assert_array_equal(
                numpy(fp.relative_position_bucket(relative, bidirectional, num_buckets, max_distance)), numpy(expected)
            )


@pytest.mark.parametrize(
    "bidirectional, query_length, key_length, offset", [(True, 5, 5, 0), (False, 1, 6, 5), (True, 3, 9, 6)]
)
def test_relative_position_bias_matches_torch(bidirectional: bool, query_length: int, key_length: int, offset: int):
    """T5's bias (both directions; square, one query at an offset, a block at an offset), eagerly
    and under nnx.jit with a traced offset: torch's."""
    torch.manual_seed(0)
    reference = tp.RelativePositionBias(4, 8, 20, bidirectional)
    ours = fp.RelativePositionBias(4, 8, 20, bidirectional, rngs=nnx.Rngs(0))
    copy_weights(ours, reference)
    assert list(state_dict(ours)) == ["embedding.weight"]
    with torch.no_grad():
        expected = reference(query_length, key_length, offset)
    close(ours(query_length, key_length, offset), expected)
    traced = nnx.jit(lambda module, offset: module(query_length, key_length, offset))(ours, jnp.int32(offset))
    close(traced, expected)


def test_alibi_slopes_are_torchs() -> None:
    """Powers of two and not: torch's slopes."""
    for n_heads in [1, 2, 3, 5, 6, 8, 12, 16]:
        close(fp.alibi_slopes(n_heads), tp.alibi_slopes(n_heads))


@pytest.mark.parametrize("query_length, key_length, offset", [(4, 4, 0), (1, 7, 6), (2, 9, 7)])
def test_alibi_bias_matches_torch(query_length: int, key_length: int, offset: int) -> None:
    expected = tp.AlibiBias(6)(query_length, key_length, offset)
    ours = fp.AlibiBias(6)
    close(ours(query_length, key_length, offset), expected)
    close(jax.jit(lambda offset: ours(query_length, key_length, offset))(jnp.int32(offset)), expected)
    assert state_dict(ours) == {}
    with pytest.raises(ValueError, match="at least one head, got 0"):
        fp.alibi_slopes(0)
