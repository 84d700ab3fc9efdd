"""taa.keras.weights: a Keras layer's weights under its torch twin's names and layouts."""

import keras
import numpy as np
import pytest
import torch

from taa.convert.state_dict import ConversionError
from taa.keras import weights


class Pair(keras.layers.Layer):
    """A Dense, an Embedding, a list of Dense, a layer shared twice, and a tied alias."""

    tied_weights = {"head.weight": "embedding.weight"}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(5, 3)
        self.layers = [keras.layers.Dense(3, use_bias=False), keras.layers.Dense(4)]
        self.again = self.layers[0]  # reached twice: named once, under its first name
        self.scale = Scale()

    def call(self, ids):
        x = self.scale(self.layers[0](self.embedding(ids)))
        return self.layers[1](x), keras.ops.matmul(x, keras.ops.transpose(self.embedding.embeddings))


class Scale(keras.layers.Layer):
    def build(self, shape):
        self.weight = self.add_weight(name="weight", shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.weight


class TorchPair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(5, 3)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 4)])
        self.scale = torch.nn.Module()
        self.scale.weight = torch.nn.Parameter(torch.rand(3))
        self.head = torch.nn.Linear(3, 5, bias=False)
        self.head.weight = self.embedding.weight

    def forward(self, ids):
        x = self.layers[0](self.embedding(ids)) * self.scale.weight
        return self.layers[1](x), self.head(x)


def built():
    layer = Pair()
    layer(np.array([[0, 1, 2]]))
    return layer


def test_names_and_layouts_are_torchs():
    reference = TorchPair()
    layer = weights.load_state_dict(built(), {k: v.detach().numpy() for k, v in reference.state_dict().items()})
    assert list(weights.state_dict(layer)) == list(reference.state_dict())
    ids = np.array([[4, 0, 3]])
    for ours, theirs in zip(layer(ids), reference(torch.from_numpy(ids))):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), theirs.detach().numpy(), atol=1e-6, rtol=0)
    back = TorchPair()
    back.load_state_dict({k: torch.from_numpy(v) for k, v in weights.state_dict(layer).items()})  # strict
    for name, tensor in back.state_dict().items():
        torch.testing.assert_close(tensor, reference.state_dict()[name])


def test_a_tied_weight_loads_from_either_name_and_must_agree():
    state = {k: v.detach().numpy() for k, v in TorchPair().state_dict().items()}
    layer = built()
    weights.load_state_dict(layer, {k: v for k, v in state.items() if k != "embedding.weight"})
    np.testing.assert_array_equal(weights.state_dict(layer)["embedding.weight"], state["head.weight"])
    with pytest.raises(ConversionError, match="head.weight should equal embedding.weight"):
        weights.load_state_dict(layer, {**state, "head.weight": state["head.weight"] + 1})


def test_every_problem_is_named_at_once_and_nothing_is_assigned():
    layer = built()
    before = weights.state_dict(layer)
    state = dict(before)
    del state["layers.1.bias"]
    state["layers.0.weight"] = np.zeros((2, 3), np.float32)
    state["extra"] = np.zeros(1, np.float32)
    with pytest.raises(ConversionError) as error:
        weights.load_state_dict(layer, state, what="test weights")
    message = str(error.value)
    assert message.startswith("test weights: ")
    assert "layers.1.bias" in message and "layers.0.weight" in message and "extra" in message
    for name, value in weights.state_dict(layer).items():
        np.testing.assert_array_equal(value, before[name])


def test_an_unbuilt_layer_is_one_line():
    with pytest.raises(ValueError, match="not built yet"):
        weights.state_dict(Pair())
    with pytest.raises(ValueError, match="no dummy_inputs"):
        weights.ensure_built(Pair())
