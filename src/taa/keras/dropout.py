"""Dropout (Srivastava et al. 2014), as the paper uses it (§5.4): during training, zero
each element with probability p and scale the survivors by 1 / (1 - p), so the expected
value is unchanged and evaluation needs no rescaling.

The Keras twin of :mod:`taa.torch.dropout`. The random mask comes from a
``keras.random.SeedGenerator`` the caller owns (a layer's), so the same code runs eagerly
and under a compiled function on every backend.
"""

from __future__ import annotations

import keras


def _check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability {p} is not between 0 and 1")


def dropout(x, p: float, training: bool = True, seed=None):
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p).

    ``seed`` is a ``keras.random.SeedGenerator`` (or an int); None draws from Keras's global
    generator, which works eagerly only.
    """
    _check_probability(p)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return keras.random.dropout(x, p, seed=seed)


@keras.saving.register_keras_serializable(package="taa")
class Dropout(keras.layers.Layer):
    """:func:`dropout` as a layer, active with ``training=True`` only (like ``nn.Dropout``)."""

    def __init__(self, p: float = 0.1, seed=None, **kwargs) -> None:
        super().__init__(**kwargs)
        _check_probability(p)
        self.p = p
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if 0.0 < p < 1.0 else None

    def call(self, x, training=None):
        return dropout(x, self.p, bool(training), self.seed_generator)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "p": self.p, "seed": self.seed}
