"""taa.flax.weights: a Flax model's parameters are its torch twin's state dict, name for name."""

import numpy as np
import pytest
from flax import nnx

from taa.convert.state_dict import ConversionError
from taa.flax.base import Embedding, Linear
from taa.flax.weights import load_state_dict, parameters, state_dict, tied_weights


class Tied(nnx.Module):
    """A toy model with a module list past ten items and an output layer tied to its embedding."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.embed = Embedding(5, 3, rngs=rngs)
        self.layers = nnx.List([Linear(3, 3, rngs=rngs) for _ in range(11)])
        self.head = Linear(3, 5, bias=False, rngs=rngs)
        self.head.weight = self.embed.weight  # one parameter, two names
        self.tied_weights = {"head.weight": "embed.weight"}


def test_names_follow_torch_and_count_items_numerically():
    model = Tied(nnx.Rngs(0))
    names = list(state_dict(model))
    assert names[:3] == ["embed.weight", "layers.0.bias", "layers.0.weight"]
    assert names.index("layers.10.weight") > names.index("layers.9.weight")
    assert "head.weight" in names and "head.weight" not in parameters(model)
    assert tied_weights(model) == {"head.weight": "embed.weight"}


def test_a_round_trip_restores_every_weight_and_keeps_the_tie():
    model, other = Tied(nnx.Rngs(0)), Tied(nnx.Rngs(1))
    arrays = state_dict(model)
    load_state_dict(other, {k: v for k, v in arrays.items() if k != "head.weight"})  # the alias may be left out
    for name, value in state_dict(other).items():
        np.testing.assert_array_equal(value, arrays[name], err_msg=name)
    assert other.head.weight is other.embed.weight


def test_loading_is_strict_and_names_every_problem_before_assigning():
    model = Tied(nnx.Rngs(0))
    before = state_dict(model)
    bad = dict(before)
    bad.pop("layers.3.bias")
    bad["layers.0.weight"] = np.zeros((4, 3), np.float32)
    bad["extra"] = np.zeros(1, np.float32)
    with pytest.raises(ConversionError) as error:
        load_state_dict(model, bad, "toy")
    message = str(error.value)
    assert message.startswith("toy: ") and "layers.3.bias" in message and "extra" in message
    assert "layers.0.weight" in message
    for name, value in state_dict(model).items():
        np.testing.assert_array_equal(value, before[name])


def test_a_tied_alias_that_differs_from_its_source_is_refused():
    model = Tied(nnx.Rngs(0))
    arrays = state_dict(model)
    arrays["head.weight"] = arrays["head.weight"] + 1
    with pytest.raises(ConversionError, match="head.weight should equal embed.weight"):
        load_state_dict(model, arrays)
