"""Muon: momentum made orthogonal, for the hidden weight matrices (Jordan et al. 2024).

The Keras twin of :mod:`taa.torch.training.muon`, which explains the method. Keras 3 ships
the same update as ``keras.optimizers.Muon``: momentum ``B = mu B + G``, Nesterov's
look-ahead ``G + mu B``, five quintic Newton-Schulz steps with Jordan et al.'s coefficients
(3.4445, -4.7750, 2.0315) on the Frobenius-normalised matrix, the update scaled by
0.2 sqrt(max(rows, cols)) (Liu et al. 2025, §2.2) and decoupled weight decay ``W (1 - lr wd)``.
A Keras kernel is torch's weight transposed; the iteration commutes with the transpose,
so the update is the same matrix.

What differs is which weights it takes. Keras picks by shape and name (every 2-D variable
but those whose path says "embedding" or matches ``exclude_layers``); taa's rule is torch's,
by the weight's torch name: the matrices inside a layer of a stack, not embeddings, position
tables or the output head (:func:`taa.keras.training.loop.is_hidden_matrix`). :class:`Muon`
takes that set of variables and gives every other one AdamW, as the torch optimizer does.

Its AdamW part, too, is torch's: Keras adds epsilon before the bias correction, torch after
(:mod:`taa.keras.training.adam`, whose update :class:`Muon` uses instead).
"""

from __future__ import annotations

from collections.abc import Iterable

import keras

from taa.keras.training.adam import adam_update


class Muon(keras.optimizers.Muon):
    """``keras.optimizers.Muon`` on ``muon_variables`` (matrices only); AdamW (torch's) on
    every other variable, with the same learning rate, betas and epsilon. ``weight_decay`` applies to both
    kinds (Keras's ``adam_weight_decay`` follows it); exclude variables from it with
    ``exclude_from_weight_decay`` before the optimizer is built."""

    def __init__(self, muon_variables: Iterable[keras.Variable] = (), weight_decay=None, **kwargs) -> None:
        super().__init__(weight_decay=weight_decay, adam_weight_decay=weight_decay, exclude_embeddings=False,
                         **kwargs)
        muon_variables = list(muon_variables)
        flat = [tuple(v.shape) for v in muon_variables if len(v.shape) != 2]
        if flat:
            raise ValueError(f"Muon updates matrices only; it was given shapes {flat}")
        self.muon_keys = frozenset(self._var_key(v) for v in muon_variables)

    def _should_use_adamw(self, variable) -> bool:
        return self._var_key(variable) not in self.muon_keys

    def _adamw_update_step(self, gradient, variable, learning_rate, m, v) -> None:
        adam_update(self, gradient, variable, learning_rate * self.adam_lr_ratio, m, v, self.adam_beta_1,
                    self.adam_beta_2, self.epsilon)
