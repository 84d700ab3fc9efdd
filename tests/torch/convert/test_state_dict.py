"""Loading converted weights into a torch model: checked first, so a bad state dict changes nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taa.convert.state_dict import ConversionError
from taa.torch.convert.state_dict import expected_shapes, load_checked


def test_load_checked_loads_or_changes_nothing() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    assert expected_shapes(model) == {
        "0.weight": (4, 3), "0.bias": (4,), "1.weight": (4,), "1.bias": (4,)
    }
    source = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    assert load_checked(model, source.state_dict(), "seq") is model
    assert torch.equal(model[0].weight, source[0].weight)
    before = model[0].weight.clone()
    bad = {**nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)).state_dict(), "1.bias": torch.zeros(5)}
    with pytest.raises(ConversionError, match=r"1.bias \(5,\) != expected \(4,\)"):
        load_checked(model, bad, "seq")
    assert torch.equal(model[0].weight, before)
