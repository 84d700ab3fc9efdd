"""taa.flax.dropout: scaling, gradients, keys and streams, training and evaluation mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from taa.flax.dropout import Dropout, dropout


def test_survivors_are_scaled_and_expectation_kept() -> None:
    y = np.asarray(dropout(jnp.ones((2000, 500)), 0.2, rng=jax.random.key(2)))
    assert set(np.unique(y).tolist()) <= {0.0, 1.25}
    assert abs(y.mean() - 1.0) < 5e-3


def test_gradient_is_the_same_mask() -> None:
    x = jax.random.normal(jax.random.key(0), (50, 40))
    key = jax.random.key(3)
    y = dropout(x, 0.3, rng=key)
    gradient = jax.grad(lambda x: dropout(x, 0.3, rng=key).sum())(x)
    np.testing.assert_allclose(gradient, (y != 0) / 0.7, rtol=1e-6)


def test_keys_decide_the_mask_and_eval_returns_the_input() -> None:
    x = jax.random.normal(jax.random.key(0), (30, 30))
    np.testing.assert_array_equal(dropout(x, 0.5, rng=jax.random.key(4)), dropout(x, 0.5, rng=jax.random.key(4)))
    assert not np.array_equal(dropout(x, 0.5, rng=jax.random.key(4)), dropout(x, 0.5, rng=jax.random.key(5)))
    module = Dropout(0.5, rngs=nnx.Rngs(0))
    module.eval()
    assert module(x) is x
    assert dropout(x, 0.0) is x and dropout(x, 0.5, training=False) is x
    assert int(jnp.count_nonzero(dropout(x, 1.0))) == 0


def test_module_draws_a_new_mask_each_call_and_repeats_from_its_seed() -> None:
    x = jnp.ones((40, 40))
    first, second = Dropout(0.5, rngs=nnx.Rngs(7)), Dropout(0.5, rngs=nnx.Rngs(7))
    a, b = first(x), first(x)
    assert not np.array_equal(a, b)  # training mode as built: the stream advances
    np.testing.assert_array_equal(second(x), a)
    np.testing.assert_array_equal(second(x), b)
    first.eval()
    assert first.deterministic and first(x) is x
    first.train()
    assert not first.deterministic and (np.asarray(first(x)) == 0).any()


def test_module_under_jit_advances_its_stream() -> None:
    module = Dropout(0.5, rngs=nnx.Rngs(dropout=1))
    step = nnx.jit(lambda module, x: module(x))
    x = jnp.ones((20, 20))
    a, b = step(module, x), step(module, x)
    assert not np.array_equal(a, b)
    assert set(np.unique(np.asarray(a)).tolist()) <= {0.0, 2.0}


def test_bad_probability_and_missing_key_are_named() -> None:
    with pytest.raises(ValueError, match="dropout probability 1.5"):
        Dropout(1.5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout probability -0.1"):
        dropout(jnp.ones(3), -0.1)
    with pytest.raises(ValueError, match="needs a random key"):
        dropout(jnp.ones(3), 0.5)
