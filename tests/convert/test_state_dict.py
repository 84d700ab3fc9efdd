"""The checks every converter shares: one error naming every problem, never a partial load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taa.convert.state_dict import ConversionError, check_state_dict, expected_shapes, load_checked


def test_check_state_dict_lists_every_problem_at_once() -> None:
    expected = {"a": torch.Size([2, 3]), "b": torch.Size([4]), "c": None, "d": torch.Size([1])}
    state = {"a": torch.zeros(3, 2), "b": torch.zeros(4), "c": torch.zeros(7, 7), "x": torch.zeros(1), "y": torch.zeros(1)}
    with pytest.raises(ConversionError) as error:
        check_state_dict(state, expected, "thing")
    message = str(error.value)
    assert message.startswith("thing: ")
    assert "missing keys: d" in message
    assert "unexpected keys: x, y" in message
    assert "mis-shaped: a (3, 2) != expected (2, 3)" in message
    assert "c " not in message.split("mis-shaped")[1]  # None accepts any shape
    assert issubclass(ConversionError, ValueError)


def test_check_state_dict_accepts_a_match() -> None:
    check_state_dict({"a": torch.zeros(2)}, {"a": torch.Size([2])}, "thing")
    check_state_dict({}, {}, "nothing")


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
