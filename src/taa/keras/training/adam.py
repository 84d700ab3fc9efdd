"""Adam (Kingma & Ba 2015) as torch computes it, for the Keras trainer.

``keras.optimizers.Adam`` folds the bias corrections into the step size and adds epsilon
to ``sqrt(v)`` before the second correction (the paper's "epsilon hat"); torch adds it
after. Keras's epsilon thus acts as torch's times ``1 / sqrt(1 - beta2^t)``, ten times it at
the first step with beta2 = 0.99: where a gradient is as small as epsilon, the two updates
differ. The paper's Algorithm 1, which torch follows, at step t:

    m = beta1 m + (1 - beta1) g                   first moment
    v = beta2 v + (1 - beta2) g^2                 second moment
    w = w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

:func:`adam_update` is that step on a Keras variable; :class:`Adam` uses it, and so does
the AdamW part of :class:`taa.keras.training.muon.Muon`, so the Keras trainer updates the
weights as the torch trainer does. Decoupled weight decay (AdamW, Loshchilov & Hutter 2019)
is Keras's own ``weight_decay``: ``w = w (1 - lr wd)`` before the step, as torch's AdamW.
"""

from __future__ import annotations

import keras
from keras import ops


def adam_update(optimizer: keras.optimizers.Optimizer, gradient, variable, learning_rate, m, v, beta_1: float,
                beta_2: float, epsilon: float) -> None:
    """One Adam step of ``variable`` with its moments ``m`` and ``v`` (the module docstring);
    ``optimizer.iterations`` counts the steps taken before."""
    dtype = variable.dtype
    lr, gradient = ops.cast(learning_rate, dtype), ops.cast(gradient, dtype)
    step = ops.cast(optimizer.iterations + 1, dtype)
    first_correction = 1 - ops.power(ops.cast(beta_1, dtype), step)
    second_correction = 1 - ops.power(ops.cast(beta_2, dtype), step)
    optimizer.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
    optimizer.assign(v, ops.add(ops.multiply(v, beta_2), ops.multiply(ops.square(gradient), 1 - beta_2)))
    denominator = ops.add(ops.divide(ops.sqrt(v), ops.sqrt(second_correction)), epsilon)
    optimizer.assign_sub(variable, ops.multiply(lr / first_correction, ops.divide(m, denominator)))


class Adam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` updating as torch's Adam; with ``weight_decay`` it is AdamW."""

    def __init__(self, **kwargs) -> None:
        if kwargs.get("amsgrad"):
            raise ValueError("amsgrad is not taa's Adam")
        super().__init__(**kwargs)

    def update_step(self, gradient, variable, learning_rate) -> None:
        index = self._get_variable_index(variable)
        adam_update(self, gradient, variable, learning_rate, self._momentums[index], self._velocities[index],
                    self.beta_1, self.beta_2, self.epsilon)
