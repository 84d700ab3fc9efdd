"""The checks every converter shares: one error naming every problem, on arrays of any framework."""

from __future__ import annotations

import numpy as np
import pytest

from taa.convert.state_dict import ConversionError, check_state_dict


def test_check_state_dict_lists_every_problem_at_once() -> None:
    expected = {"a": (2, 3), "b": (4,), "c": None, "d": (1,)}
    state = {"a": np.zeros((3, 2)), "b": np.zeros(4), "c": np.zeros((7, 7)), "x": np.zeros(1), "y": np.zeros(1)}
    with pytest.raises(ConversionError) as error:
        check_state_dict(state, expected, "thing")
    message = str(error.value)
    assert message.startswith("thing: ")
    assert "missing keys: d" in message
    assert "unexpected keys: x, y" in message
    assert "mis-shaped: a (3, 2) != expected (2, 3)" in message
    assert "c " not in message.split("mis-shaped")[1]  # None accepts any shape
    assert issubclass(ConversionError, ValueError)


def test_check_state_dict_accepts_a_match_of_any_array_type() -> None:
    check_state_dict({"a": np.zeros(2)}, {"a": (2,)}, "thing")
    check_state_dict({}, {}, "nothing")
    torch = pytest.importorskip("torch")
    check_state_dict({"a": torch.zeros(2, 3)}, {"a": torch.Size([2, 3])}, "thing")
