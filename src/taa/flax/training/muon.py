"""Muon: momentum made orthogonal, for the hidden weight matrices (Jordan et al. 2024).

The Flax twin of :mod:`taa.torch.training.muon`, which explains the method, as optax
transformations. For a weight ``W`` (a ``(rows, cols)`` matrix) with gradient ``G`` at step t:

    B_t = mu B_{t-1} + G_t                        momentum (mu = 0.95)
    M   = G_t + mu B_t                            Nesterov's look-ahead
    O   = orthogonalize(M)                        ~ U V^T of M = U S V^T
    W  <- W (1 - lr wd) - lr 0.2 sqrt(max(rows, cols)) O

:func:`scale_by_muon` is the direction ``0.2 sqrt(max(rows, cols)) O``; :func:`muon` chains
it, on the weights ``hidden`` selects (the matrices inside the layers,
:func:`taa.training.results.is_hidden_matrix` by torch name), with torch's AdamW
(:mod:`taa.flax.training.adam`) on every other weight, decoupled weight decay and the
rate, which the trainer sets in the optimizer's state before every step, as the torch
optimizer's one rate for both kinds of group.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from taa.flax.training.adam import STATIC, adam_direction, decoupled_weight_decay

# Coefficients (a, b, c) of the quintic p(s) = a s + b s^3 + c s^5 that the iteration applies
# to every singular value s (Jordan et al.'s, as torch's Muon).
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)

MUON, ADAMW = "muon", "adamw"  # the labels of the two kinds of weight


def orthogonalize(matrices: jax.Array, steps: int = 5, eps: float = 1e-7) -> jax.Array:
    """Approximately ``U V^T`` for each matrix ``U S V^T`` of ``matrices`` (..., rows, cols).

    Dividing by the Frobenius norm puts every singular value in (0, 1]; each Newton-Schulz
    step ``X <- a X + (b A + c A^2) X`` with ``A = X X^T`` maps a singular value s to
    ``a s + b s^3 + c s^5`` and keeps the singular vectors.
    """
    a, b, c = NEWTON_SCHULZ
    tall = matrices.shape[-2] > matrices.shape[-1]
    x = jnp.swapaxes(matrices, -1, -2) if tall else matrices  # (..., r, k) with r <= k: A is the smaller Gram matrix
    x = x / (jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) + eps)
    for _ in range(steps):
        gram = x @ jnp.swapaxes(x, -1, -2)  # (..., r, r)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return jnp.swapaxes(x, -1, -2) if tall else x


def update_scale(shape: tuple[int, ...]) -> float:
    """0.2 sqrt(max(rows, cols)): an orthogonal update's RMS matched to AdamW's (~0.2)."""
    return 0.2 * max(shape[-2], shape[-1]) ** 0.5


class ScaleByMuonState(NamedTuple):
    momentum: optax.Updates  # B, one matrix per weight


def scale_by_muon(momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5) -> optax.GradientTransformation:
    """Muon's direction for a rate of 1 (see the module docstring), for matrices only."""

    def init(params: optax.Params) -> ScaleByMuonState:
        flat = [tuple(p.shape) for p in jax.tree_util.tree_leaves(params) if p.ndim != 2]
        if flat:
            raise ValueError(f"Muon updates matrices only; it was given shapes {flat}")
        return ScaleByMuonState(momentum=jax.tree_util.tree_map(jnp.zeros_like, params))

    def update(updates: optax.Updates, state: ScaleByMuonState, params: Optional[optax.Params] = None):
        buffers = jax.tree_util.tree_map(lambda b, g: momentum * b + g, state.momentum, updates)  # B_t
        directions = (jax.tree_util.tree_map(lambda g, b: g + momentum * b, updates, buffers) if nesterov
                      else buffers)
        orthogonal = jax.tree_util.tree_map(
            lambda d: (orthogonalize(d, ns_steps) * update_scale(d.shape)).astype(d.dtype), directions)
        return orthogonal, ScaleByMuonState(momentum=buffers)

    return optax.GradientTransformation(init, update)


def _muon(learning_rate: float, hidden: Any, momentum: float, b1: float, b2: float, eps: float, weight_decay: float,
          decay_mask: Optional[Any]) -> optax.GradientTransformation:
    def labels(params: optax.Params) -> Any:
        chosen = hidden(params) if callable(hidden) else hidden
        return jax.tree_util.tree_map(lambda is_hidden: MUON if is_hidden else ADAMW, chosen)

    return optax.chain(
        optax.partition({
            MUON: optax.chain(scale_by_muon(momentum), decoupled_weight_decay(weight_decay)),
            ADAMW: adam_direction(b1, b2, eps, weight_decay, decay_mask),
        }, labels),
        optax.scale_by_learning_rate(learning_rate),
    )


def muon(learning_rate: float, hidden: Any, momentum: float = 0.95, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8, weight_decay: float = 0.0, decay_mask: Optional[Any] = None
         ) -> optax.GradientTransformation:
    """Muon on the weights ``hidden`` selects (a pytree of booleans like the weights', or a
    function of the weights giving one), torch's AdamW with ``b1``, ``b2``, ``eps`` on the
    others; ``weight_decay`` for both kinds (AdamW's only where ``decay_mask`` says), one
    rate in the state (``state.hyperparams["learning_rate"]``)."""
    return optax.inject_hyperparams(_muon, static_args=(*STATIC, "hidden", "momentum"))(
        learning_rate=learning_rate, hidden=hidden, momentum=momentum, b1=b1, b2=b2, eps=eps,
        weight_decay=weight_decay, decay_mask=decay_mask)
