"""Label-smoothed cross-entropy ("Attention Is All You Need" §5.4; Szegedy et al. 2016).

The Keras twin of :mod:`taa.torch.training.losses`. With smoothing epsilon over a
vocabulary of K classes, the target distribution puts 1 - epsilon + epsilon/K on the true
token and epsilon/K on every other one:

    loss = (1 - epsilon) * (-log p[y]) + epsilon * mean_k(-log p[k])

Padding positions are left out. Notation: ``b`` batch, ``n`` length, ``v`` vocabulary.
"""

from __future__ import annotations

from keras import ops


def label_smoothed_cross_entropy(logits, targets, smoothing: float = 0.0, ignore_index: int = -100):
    """logits (b, n, v), targets (b, n) -> (summed loss over real tokens, number of real tokens).

    The sum is float32 whatever the logits' dtype (bfloat16 under mixed precision); the
    count is int32."""
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)  # (b, n, v)
    real = ops.not_equal(targets, ignore_index)  # (b, n)
    safe_targets = ops.where(real, targets, ops.zeros_like(targets))
    picked = ops.take_along_axis(log_probs, ops.expand_dims(ops.cast(safe_targets, "int32"), -1), axis=-1)
    nll = -ops.squeeze(picked, axis=-1)  # (b, n): -log p[y]
    loss = nll
    if smoothing > 0.0:
        uniform = -ops.mean(log_probs, axis=-1)  # (b, n): mean over the vocabulary of -log p[k]
        loss = (1.0 - smoothing) * nll + smoothing * uniform
    return ops.sum(loss * ops.cast(real, "float32")), ops.sum(ops.cast(real, "int32"))
