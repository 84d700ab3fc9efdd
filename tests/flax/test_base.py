"""taa.flax.base: Linear and Embedding keep torch's layouts and give torch's numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from taa.flax.base import Embedding, Linear
from taa.flax.weights import load_state_dict, state_dict


@pytest.mark.parametrize("bias", [True, False])
def test_linear_equals_torch_on_the_same_weights(bias):
    torch.manual_seed(0)
    reference = torch.nn.Linear(5, 3, bias=bias)
    layer = load_state_dict(Linear(5, 3, bias=bias, rngs=nnx.Rngs(0)),
                            {k: v.detach().numpy() for k, v in reference.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), reference(torch.from_numpy(x)).detach().numpy(),
                               atol=1e-6, rtol=0)
    assert sorted(state_dict(layer)) == sorted(reference.state_dict())


def test_linear_initialises_as_torch_does():
    """U(-1/sqrt(in), 1/sqrt(in)) for the weight and the bias: the bound holds and is nearly reached."""
    layer = Linear(64, 256, rngs=nnx.Rngs(0))
    bound = 1 / 8
    for values in (np.asarray(layer.weight[...]), np.asarray(layer.bias[...])):
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.95 * bound
    assert layer.weight[...].shape == (256, 64)


def test_linear_computes_in_the_input_dtype():
    layer = Linear(4, 2, rngs=nnx.Rngs(0))
    assert layer(jnp.ones((1, 4), jnp.bfloat16)).dtype == jnp.bfloat16
    assert layer.weight[...].dtype == jnp.float32


def test_embedding_equals_torch_and_its_padding_row_never_learns():
    torch.manual_seed(0)
    reference = torch.nn.Embedding(6, 4, padding_idx=0)
    with torch.no_grad():
        reference.weight[0] = 1.0  # a loaded padding row need not be zero: it is looked up as it is
    table = Embedding(6, 4, padding_idx=0, rngs=nnx.Rngs(0))
    assert np.all(np.asarray(Embedding(6, 4, padding_idx=2, rngs=nnx.Rngs(1)).weight[...])[2] == 0)
    load_state_dict(table, {"weight": reference.weight.detach().numpy()})
    ids = np.array([[0, 3, 5], [2, 0, 1]])
    np.testing.assert_array_equal(np.asarray(table(jnp.asarray(ids))), reference(torch.from_numpy(ids)).detach().numpy())

    def loss(module):
        return jnp.sum(module(jnp.asarray(ids)) ** 2)

    gradient = nnx.grad(loss)(table)["weight"][...]
    assert np.all(np.asarray(gradient)[0] == 0) and np.any(np.asarray(gradient)[3] != 0)


def test_embedding_attend_scores_every_row():
    table = Embedding(6, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 4))
    np.testing.assert_allclose(np.asarray(table.attend(x)), np.asarray(x) @ np.asarray(table.weight[...]).T,
                               atol=1e-6, rtol=0)
