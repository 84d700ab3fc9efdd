"""taa.torch.dropout: scaling, gradients and reproducibility (the mask's statistics: test_kernels)."""

from __future__ import annotations

import pytest
import torch

from taa.torch.dropout import Dropout, dropout


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
