"""taa.torch.dropout: the mask's statistics, scaling, gradients and reproducibility."""

from __future__ import annotations

import pytest
import torch

from taa.torch.dropout import Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
def test_keep_rate_matches_p(p: float) -> None:
    torch.manual_seed(0)
    keep = keep_mask((1000, 1000), p)
    assert keep.dtype == torch.bool and keep.shape == (1000, 1000)
    rate = keep.float().mean().item()
    assert abs(rate - (1 - p)) < 3e-3  # 1e6 draws: the standard error is <= 5e-4


def test_mask_is_uniform_across_positions() -> None:
    # Four 15-bit numbers come from each 64-bit draw: no lane may be biased.
    torch.manual_seed(1)
    keep = keep_mask((400_000,), 0.5).float().view(-1, 4).mean(dim=0)
    torch.testing.assert_close(keep, torch.full((4,), 0.5), atol=6e-3, rtol=0)


def test_odd_sizes_and_empty() -> None:
    assert keep_mask((3, 7), 0.3).shape == (3, 7)
    assert keep_mask((0, 5), 0.3).shape == (0, 5)


def test_survivors_are_scaled_and_expectation_kept() -> None:
    torch.manual_seed(2)
    x = torch.ones(2000, 500)
    y = dropout(x, 0.2)
    values = set(torch.unique(y).tolist())
    assert values <= {0.0, 1.25}
    assert abs(y.mean().item() - 1.0) < 5e-3


def test_gradient_is_the_same_mask() -> None:
    torch.manual_seed(3)
    x = torch.randn(50, 40, requires_grad=True)
    y = dropout(x, 0.3)
    y.sum().backward()
    kept = y.detach() != 0
    torch.testing.assert_close(x.grad, kept.float() / 0.7)


def test_seeded_and_eval_behaviour() -> None:
    x = torch.randn(30, 30)
    torch.manual_seed(4)
    a = dropout(x, 0.5)
    torch.manual_seed(4)
    b = dropout(x, 0.5)
    torch.testing.assert_close(a, b)
    module = Dropout(0.5).eval()
    assert module(x) is x
    assert dropout(x, 0.0) is x
    assert torch.count_nonzero(dropout(x, 1.0)) == 0


def test_bad_probability_is_named() -> None:
    with pytest.raises(ValueError, match="dropout probability 1.5"):
        Dropout(1.5)
