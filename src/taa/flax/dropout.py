"""Dropout (Srivastava et al. 2014), as the paper uses it (§5.4): during training, zero
each element with probability p and scale the survivors by 1 / (1 - p), so the expected
value is unchanged and evaluation needs no rescaling.

The Flax NNX twin of :mod:`taa.torch.dropout`. JAX has no global generator: the random
mask is drawn from a key, which the module takes from a stream of its own (forked from
the ``rngs`` it is built with, the ``dropout`` stream where the ``nnx.Rngs`` has one).
Each call advances the stream, eagerly and under ``nnx.jit`` alike, and the same seed
gives the same masks.

Training mode is NNX's ``deterministic`` attribute: False (dropout active) as built, like
a torch module; ``model.eval()`` sets it True and ``model.train()`` False again.
"""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp
from flax import nnx

Key = Union[jax.Array, nnx.RngStream, nnx.Rngs]


def _check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability {p} is not between 0 and 1")


def _key(rng: Optional[Key]) -> jax.Array:
    """A fresh key from a key, a stream (advanced by one), or an ``nnx.Rngs`` (its dropout stream)."""
    if rng is None:
        raise ValueError("dropout in training needs a random key (rng=...)")
    if isinstance(rng, nnx.Rngs):
        return rng["dropout"]()
    if isinstance(rng, nnx.RngStream):
        return rng()
    return rng


def dropout(x: jax.Array, p: float, training: bool = True, *, rng: Optional[Key] = None) -> jax.Array:
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p).

    ``rng`` is a ``jax.random`` key, an ``nnx.RngStream`` or an ``nnx.Rngs``; only needed
    in training with 0 < p < 1. ``training`` is a Python bool (it decides the trace).
    """
    _check_probability(p)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = jax.random.bernoulli(_key(rng), 1.0 - p, x.shape)  # Bernoulli(1 - p) per element
    return jnp.where(keep, x * jnp.asarray(1.0 / (1.0 - p), x.dtype), jnp.zeros((), x.dtype))


class Dropout(nnx.Module):
    """:func:`dropout` as a module, active while ``deterministic`` is False (``train()`` mode)."""

    def __init__(self, p: float = 0.1, *, rngs: nnx.Rngs) -> None:
        _check_probability(p)
        self.p = p
        self.deterministic = False  # training mode, as a torch module is built
        self.rngs = rngs["dropout"].fork()  # a stream of this module's own

    def __call__(self, x: jax.Array) -> jax.Array:
        return dropout(x, self.p, not self.deterministic, rng=self.rngs)
