"""Adam (Kingma & Ba 2015) and AdamW (Loshchilov & Hutter 2019) as optax chains, updating as torch's.

The Flax twin of :mod:`taa.keras.training.adam`. The paper's Algorithm 1, which torch
follows, at step t:

    m = beta1 m + (1 - beta1) g                   first moment
    v = beta2 v + (1 - beta2) g^2                 second moment
    w = w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

``optax.scale_by_adam`` computes exactly this direction (epsilon after the bias
corrections, as torch; Keras adds it before). Decoupled weight decay is torch's AdamW:
``w = w (1 - lr wd)`` before the step, i.e. ``lr wd w`` added to the update, here
``optax.add_decayed_weights`` before the rate scales the whole update. ``decay_mask``
says which weights decay (the trainer's: the matrices, not biases or norm gains).

The rate is a hyper-parameter held in the optimizer's state
(``optax.inject_hyperparams``): the trainer sets it before every step, as the torch
trainer sets each parameter group's ``lr``, so a schedule that follows the clock or
the skipped steps needs no optax schedule.
"""

from __future__ import annotations

from typing import Any, Optional

import optax

LEARNING_RATE = "learning_rate"  # the hyper-parameter the trainer sets before each step
STATIC = ("b1", "b2", "eps", "weight_decay", "decay_mask")  # the others: fixed when the optimizer is made


def decoupled_weight_decay(weight_decay: float, mask: Optional[Any] = None) -> optax.GradientTransformation:
    """Add ``weight_decay * w`` to the update of the weights ``mask`` selects (all without one);
    nothing when ``weight_decay`` is 0 (torch's Adam)."""
    if not weight_decay:
        return optax.identity()
    return optax.add_decayed_weights(weight_decay, mask)


def adam_direction(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                   decay_mask: Optional[Any] = None) -> optax.GradientTransformation:
    """Adam's update for a rate of 1, weight decay included (see the module docstring)."""
    return optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps), decoupled_weight_decay(weight_decay, decay_mask))


def _adamw(learning_rate: float, b1: float, b2: float, eps: float, weight_decay: float,
           decay_mask: Optional[Any]) -> optax.GradientTransformation:
    return optax.chain(adam_direction(b1, b2, eps, weight_decay, decay_mask),
                       optax.scale_by_learning_rate(learning_rate))


def adamw(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
          decay_mask: Optional[Any] = None) -> optax.GradientTransformation:
    """torch's Adam (``weight_decay`` 0) or AdamW, with the rate in its state
    (``state.hyperparams["learning_rate"]``)."""
    return optax.inject_hyperparams(_adamw, static_args=STATIC)(
        learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, decay_mask=decay_mask)
