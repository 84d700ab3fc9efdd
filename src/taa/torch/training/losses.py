"""Label-smoothed cross-entropy ("Attention Is All You Need" §5.4; Szegedy et al. 2016).

With smoothing epsilon over a vocabulary of K classes, the target distribution puts
1 - epsilon + epsilon/K on the true token and epsilon/K on every other one:

    loss = (1 - epsilon) * (-log p[y]) + epsilon * mean_k(-log p[k])

Padding positions are left out. Notation: ``b`` batch, ``n`` length, ``v`` vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor


def label_smoothed_cross_entropy(
    logits: Tensor, targets: Tensor, smoothing: float = 0.0, ignore_index: int = -100
) -> tuple[Tensor, Tensor]:
    """logits (b, n, v), targets (b, n) -> (summed loss over real tokens, number of real tokens)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # (b, n, v)
    real = targets != ignore_index  # (b, n)
    safe_targets = targets.masked_fill(~real, 0)
    nll = -log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)  # (b, n): -log p[y]
    loss = nll
    if smoothing > 0.0:
        uniform = -log_probs.mean(dim=-1)  # (b, n): mean over the vocabulary of -log p[k]
        loss = (1.0 - smoothing) * nll + smoothing * uniform
    return (loss * real).sum(), real.sum()
