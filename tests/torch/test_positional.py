"""Positional information: sinusoids (§3.5), learned positions, RoPE and T5's relative buckets."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taa.torch.positional import (
    AlibiBias,
    LearnedPositionalEmbedding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_slopes,
    relative_position_bucket,
    sinusoidal_table,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# --------------------------------------------------------------------------------------
# Sinusoids
# --------------------------------------------------------------------------------------


def _paper_pe(pos: int, feature: int, d_model: int) -> float:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))."""
    two_i = feature - feature % 2
    angle = pos / 10000 ** (two_i / d_model)
    return math.sin(angle) if feature % 2 == 0 else math.cos(angle)


@pytest.mark.parametrize("d_model", [2, 8, 33, 64])
def test_sinusoidal_table_matches_paper_formula(d_model: int) -> None:
    length = 50
    table = sinusoidal_table(length, d_model)
    assert table.shape == (length, d_model) and table.dtype == torch.float32
    expected = torch.tensor(
        [[_paper_pe(p, f, d_model) for f in range(d_model)] for p in range(length)], dtype=torch.float32
    )
    torch.testing.assert_close(table, expected, atol=1e-5, rtol=0)


def test_sinusoidal_hand_checked_values() -> None:
    table = sinusoidal_table(10, 6)
    assert torch.all(table[0, 0::2] == 0.0)  # sin(0)
    assert torch.all(table[0, 1::2] == 1.0)  # cos(0)
    assert table[1, 0].item() == pytest.approx(math.sin(1.0), abs=1e-6)
    assert table[1, 1].item() == pytest.approx(math.cos(1.0), abs=1e-6)
    # feature 2 (i=1): wavelength 10000^(2/6) = 10000^(1/3)
    assert table[3, 2].item() == pytest.approx(math.sin(3 / 10000 ** (1 / 3)), abs=1e-6)
    assert table[3, 3].item() == pytest.approx(math.cos(3 / 10000 ** (1 / 3)), abs=1e-6)
    assert table[7, 5].item() == pytest.approx(math.cos(7 / 10000 ** (4 / 6)), abs=1e-6)


def test_sinusoidal_encoding_adds_table_at_offset() -> None:
    torch.manual_seed(0)
    encoding = SinusoidalPositionalEncoding(8, max_length=20)
    assert list(encoding.parameters()) == [] and "table" not in encoding.state_dict()
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(encoding(x), x + sinusoidal_table(20, 8)[:5])
    torch.testing.assert_close(encoding(x, offset=7), x + sinusoidal_table(20, 8)[7:12])
    with pytest.raises(ValueError, match="max_length"):
        encoding(x, offset=16)


# --------------------------------------------------------------------------------------
# Learned positions
# --------------------------------------------------------------------------------------


def test_learned_positions_with_offset() -> None:
    torch.manual_seed(1)
    learned = LearnedPositionalEmbedding(12, 4)
    x = torch.randn(3, 4, 4)
    weight = learned.embedding.weight
    torch.testing.assert_close(learned(x), x + weight[:4])
    torch.testing.assert_close(learned(x, offset=5), x + weight[5:9])
    # one token at a time (a KV cache) sees the same positions as the whole sequence
    steps = torch.cat([learned(x[:, i : i + 1], offset=i) for i in range(4)], dim=1)
    torch.testing.assert_close(steps, learned(x))
    with pytest.raises(ValueError, match="max_length"):
        learned(x, offset=9)


# --------------------------------------------------------------------------------------
# Rotary
# --------------------------------------------------------------------------------------


def _rotary_complex(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE as complex multiplication, "rotate half" layout: z_j = x_j + i x_{j+e/2}."""
    e = x.shape[-1]
    x = x.double()
    z = torch.complex(x[..., : e // 2], x[..., e // 2 :])
    theta = base ** (-torch.arange(0, e, 2, dtype=torch.float64) / e)  # (e/2,)
    rotation = torch.polar(torch.ones_like(theta), positions.double()[:, None] * theta)  # (n, e/2)
    rotated = z * rotation
    return torch.cat([rotated.real, rotated.imag], dim=-1).float()


@pytest.mark.parametrize("offset", [0, 3, 17])
def test_rotary_equals_complex_implementation(offset: int) -> None:
    torch.manual_seed(2)
    rotary = RotaryEmbedding(16, max_length=64)
    x = torch.randn(2, 3, 6, 16, requires_grad=True)
    expected = _rotary_complex(x, torch.arange(offset, offset + 6))
    ours = rotary(x, offset)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    cos, sin = rotary.cos[offset : offset + 6], rotary.sin[offset : offset + 6]
    torch.testing.assert_close(ours, x * cos + RotaryEmbedding.rotate_half(x) * sin)  # the textbook form
    upstream = torch.randn_like(x)
    (ours_grad,) = torch.autograd.grad(ours, x, upstream)
    (expected_grad,) = torch.autograd.grad(expected, x, upstream)
    torch.testing.assert_close(ours_grad, expected_grad, atol=1e-5, rtol=1e-5)  # the rotation's transpose


def test_rotary_preserves_norm_and_position_zero_is_identity() -> None:
    torch.manual_seed(3)
    rotary = RotaryEmbedding(8, max_length=32)
    x = torch.randn(1, 2, 10, 8)
    out = rotary(x)
    torch.testing.assert_close(out[:, :, 0], x[:, :, 0])
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="max_length"):
        rotary(x, offset=30)
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(0, 60),
    n=st.integers(0, 60),
    shift=st.integers(0, 60),
    seed=st.integers(0, 2**16),
)
def test_rotary_dot_product_depends_only_on_relative_offset(m: int, n: int, shift: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    rotary = RotaryEmbedding(16, max_length=128)
    q, k = torch.randn(2, 1, 1, 1, 16, generator=generator)
    dot = (rotary(q, m) * rotary(k, n)).sum()
    shifted = (rotary(q, m + shift) * rotary(k, n + shift)).sum()
    assert abs(dot.item() - shifted.item()) <= 1e-4 * (1 + abs(dot.item()))
    # at equal positions the rotations cancel: the plain dot product
    if m == n:
        assert abs(dot.item() - (q * k).sum().item()) <= 1e-4 * (1 + abs(dot.item()))


def test_rotary_dot_product_changes_with_offset() -> None:
    torch.manual_seed(4)
    rotary = RotaryEmbedding(16, max_length=64)
    q, k = torch.randn(2, 1, 1, 1, 16)
    dots = [(rotary(q, 0) * rotary(k, d)).sum().item() for d in range(5)]
    assert len({round(v, 4) for v in dots}) == 5


# --------------------------------------------------------------------------------------
# T5 relative position buckets
# --------------------------------------------------------------------------------------


def _t5_bucket(relative_position: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """T5's bucket (Raffel et al. 2020; mesh-tensorflow), one python integer at a time.

    n = -relative_position. Bidirectional: half the buckets for n < 0 (key after query),
    offset by num_buckets/2. Then offsets below max_exact = num_buckets/2 get their own
    bucket; larger ones get max_exact + floor(log(n/max_exact)/log(max_distance/max_exact)
    * (num_buckets - max_exact)), capped at num_buckets - 1.
    """
    result = 0
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        if n < 0:
            result += num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return result + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return result + min(large, num_buckets - 1)


BUCKET_SETTINGS = [(32, 128), (16, 64), (8, 20), (64, 256)]
RELATIVE_POSITIONS = torch.arange(-300, 301)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", BUCKET_SETTINGS)
def test_relative_position_bucket_matches_formula(bidirectional: bool, num_buckets: int, max_distance: int) -> None:
    ours = relative_position_bucket(RELATIVE_POSITIONS, bidirectional, num_buckets, max_distance)
    assert ours.dtype == torch.long and ours.shape == RELATIVE_POSITIONS.shape
    assert int(ours.min()) >= 0 and int(ours.max()) < num_buckets
    mismatches = [
        (int(r), int(b), _t5_bucket(int(r), bidirectional, num_buckets, max_distance))
        for r, b in zip(RELATIVE_POSITIONS, ours)
        if int(b) != _t5_bucket(int(r), bidirectional, num_buckets, max_distance)
    ]
    assert mismatches == []


def test_relative_position_bucket_hand_checked() -> None:
    rp = torch.tensor([0, -1, -7, -8, 1, 7, 8, -128, -1000, 1000])
    # bidirectional, 32 buckets: 16 per direction, 8 exact; key after query (rp > 0) adds 16
    bi = relative_position_bucket(rp, True, 32, 128).tolist()
    assert bi[:4] == [0, 1, 7, 8] and bi[4:7] == [17, 23, 24]
    assert bi[7] == 15 and bi[8] == 15 and bi[9] == 31
    # unidirectional: the future all lands in bucket 0, 16 exact buckets for the past
    uni = relative_position_bucket(rp, False, 32, 128).tolist()
    assert uni[:3] == [0, 1, 7] and uni[4:7] == [0, 0, 0] and uni[7] == 31 and uni[8] == 31


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", BUCKET_SETTINGS)
def test_relative_position_bucket_matches_transformers(
    bidirectional: bool, num_buckets: int, max_distance: int
) -> None:
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    grid = RELATIVE_POSITIONS[:, None] + torch.arange(0, 3)[None, :]  # 2-D input as in T5
    theirs = t5.T5Attention._relative_position_bucket(
        grid, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    ours = relative_position_bucket(grid, bidirectional, num_buckets, max_distance)
    assert torch.equal(ours, theirs)


def test_relative_position_bias_shape_and_offset() -> None:
    torch.manual_seed(5)
    bias = RelativePositionBias(n_heads=3, num_buckets=8, max_distance=16, bidirectional=False)
    full = bias(5, 5)
    assert full.shape == (1, 3, 5, 5)
    # bias[h, i, j] = embedding[bucket(j - i), h]
    for i in range(5):
        for j in range(5):
            bucket = _t5_bucket(j - i, False, 8, 16)
            torch.testing.assert_close(full[0, :, i, j], bias.embedding.weight[bucket])
    # the last two queries with an offset (KV cache) are the last two rows of the full bias
    torch.testing.assert_close(bias(2, 5, offset=3), full[:, :, 3:, :])
    torch.testing.assert_close(bias(1, 5, offset=4), full[:, :, 4:, :])


# --------------------------------------------------------------------------------------
# ALiBi
# --------------------------------------------------------------------------------------


def test_alibi_slopes_follow_the_paper() -> None:
    """8 heads: 1/2, 1/4, ..., 1/256 (ALiBi §3); 6 heads: the 4-head slopes, then every
    other 8-head slope."""
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0**-i for i in range(1, 9)]))
    torch.testing.assert_close(alibi_slopes(6), torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]))
    with pytest.raises(ValueError, match="at least one head"):
        alibi_slopes(0)


@pytest.mark.parametrize("n_heads", [1, 4, 6, 12, 16])
def test_alibi_slopes_equal_transformers_bloom(n_heads: int) -> None:
    """BLOOM's ALiBi gives key j the logit slope * j (the same softmax as -slope * (i - j))."""
    bloom = pytest.importorskip("transformers.models.bloom.modeling_bloom")
    theirs = bloom.build_alibi_tensor(torch.ones(1, 3), n_heads, torch.float32)  # (h, 1, 3)
    torch.testing.assert_close(alibi_slopes(n_heads), theirs[:, 0, 1])


def test_alibi_bias_penalises_distance_and_follows_the_cache_offset() -> None:
    bias = AlibiBias(n_heads=4)
    full = bias(5, 5)
    assert full.shape == (1, 4, 5, 5)
    slopes = alibi_slopes(4)
    for i in range(5):
        for j in range(i + 1):
            torch.testing.assert_close(full[0, :, i, j], -slopes * (i - j))
    torch.testing.assert_close(bias(2, 5, offset=3), full[:, :, 3:, :])
    torch.testing.assert_close(bias(1, 5, offset=4), full[:, :, 4:, :])
