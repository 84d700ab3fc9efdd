"""What every taa Flax module shares: the two parameterised layers with torch's layout.

Flax's own ``nnx.Linear`` keeps its kernel as (in, out) under the name ``kernel``; the port
keeps torch's ``weight`` (out, in) instead, so a Flax model's parameters *are* its torch
twin's state dict, name for name and layout for layout (:mod:`taa.flax.weights`), and
converting between the two frameworks is a rename of nothing. XLA folds the transpose into
the matrix product, so it costs nothing at run time.

- :class:`Linear`: y = x W^T + b, initialised as ``torch.nn.Linear`` is
  (U(-1/sqrt(in), 1/sqrt(in)) for the weight and the bias);
- :class:`Embedding`: a lookup table (n, d), initialised N(0, 1) as ``torch.nn.Embedding``,
  the ``padding_idx`` row zero and without gradient;
- :class:`Buffer`: a non-learned array a module keeps (a table of angles); never a weight,
  never in a state dict, never given a gradient.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx


class Buffer(nnx.Variable):
    """A constant a module keeps beside its parameters (torch's non-persistent buffer)."""


class Linear(nnx.Module):
    """y = x W^T + b with W (out_features, in_features), as ``torch.nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rngs: nnx.Rngs) -> None:
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features) if in_features else 0.0
        self.weight = nnx.Param(jax.random.uniform(rngs.params(), (out_features, in_features), jnp.float32,
                                                   -bound, bound))
        self.bias = (nnx.Param(jax.random.uniform(rngs.params(), (out_features,), jnp.float32, -bound, bound))
                     if bias else None)

    def __call__(self, x: jax.Array) -> jax.Array:  # (..., in) -> (..., out)
        weight = self.weight[...]
        y = x @ weight.astype(x.dtype).T
        if self.bias is not None:
            y = y + self.bias[...].astype(x.dtype)
        return y


class Embedding(nnx.Module):
    """A (num_embeddings, embedding_dim) table looked up by id, as ``torch.nn.Embedding``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: Optional[int] = None, *,
                 rngs: nnx.Rngs) -> None:
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        table = jax.random.normal(rngs.params(), (num_embeddings, embedding_dim), jnp.float32)
        if padding_idx is not None:
            table = table.at[padding_idx].set(0.0)
        self.weight = nnx.Param(table)

    def __call__(self, ids: jax.Array) -> jax.Array:  # (...) int -> (..., d)
        table = self.weight[...]
        if self.padding_idx is not None:  # as torch: the padding row is looked up but never learns
            table = table.at[self.padding_idx].set(jax.lax.stop_gradient(table[self.padding_idx]))
        return jnp.take(table, ids, axis=0)

    def attend(self, x: jax.Array) -> jax.Array:
        """x E^T: scores of ``x`` (..., d) against every row (the tied output layer)."""
        return x @ self.weight[...].astype(x.dtype).T
