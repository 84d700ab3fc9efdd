"""Label-smoothed cross-entropy ("Attention Is All You Need" §5.4; Szegedy et al. 2016).

The Flax twin of :mod:`taa.torch.training.losses`. With smoothing epsilon over a
vocabulary of K classes, the target distribution puts 1 - epsilon + epsilon/K on the true
token and epsilon/K on every other one:

    loss = (1 - epsilon) * (-log p[y]) + epsilon * mean_k(-log p[k])

Padding positions are left out. Notation: ``b`` batch, ``n`` length, ``v`` vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def label_smoothed_cross_entropy(
    logits: jax.Array, targets: jax.Array, smoothing: float = 0.0, ignore_index: int = -100
) -> tuple[jax.Array, jax.Array]:
    """logits (b, n, v), targets (b, n) -> (summed loss over real tokens, number of real tokens).

    The sum is float32 whatever the logits' dtype (bfloat16 under mixed precision); the
    count is int32."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # (b, n, v)
    real = targets != ignore_index  # (b, n)
    safe_targets = jnp.where(real, targets, 0).astype(jnp.int32)
    nll = -jnp.take_along_axis(log_probs, safe_targets[..., None], axis=-1)[..., 0]  # (b, n): -log p[y]
    loss = nll
    if smoothing > 0.0:
        uniform = -log_probs.mean(axis=-1)  # (b, n): mean over the vocabulary of -log p[k]
        loss = (1.0 - smoothing) * nll + smoothing * uniform
    return jnp.sum(jnp.where(real, loss, 0.0)), jnp.sum(real, dtype=jnp.int32)
