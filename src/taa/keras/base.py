"""What every taa Keras layer shares: Keras plumbing that has no torch twin.

- :class:`PositionalCallLayer`, the base of a layer called with its torch twin's arguments;
- :func:`build_sublayers`, which a layer's ``build`` uses to create its sublayers' weights;
- :func:`sequence_length`, a length that is a Python int where the shape knows it and a
  scalar tensor where it does not (a call traced on ``keras.Input((None,))``, or a
  compiled function whose signature leaves the length open).
"""

from __future__ import annotations

import keras
from keras import ops


class PositionalCallLayer(keras.layers.Layer):
    """A layer called with its torch twin's arguments, positionally or by keyword.

    Keras takes only tensors positionally, and fills a ``mask`` (or ``<input>_mask``)
    argument left None from the inputs' own Keras mask, as a keyword, warning when a layer
    without ``compute_mask`` is given one. Here every argument after the first is passed on
    as a keyword (a callable, an int offset, or a positional ``mask=None`` meets no
    objection and no second value), and ``compute_mask`` gives outputs no Keras mask: taa's
    ``mask`` arguments are attention masks, not Keras's timestep masks.
    """

    def __call__(self, *args, **kwargs):
        names = self.call_signature_parameters
        kwargs.update(zip(names[1 : len(args)], args[1:]))
        return super().__call__(*args[:1], **kwargs)

    def compute_mask(self, inputs, previous_mask=None):
        return None


def build_sublayers(shape, *layers) -> None:
    """Build every layer not built yet (None: absent) for inputs of ``shape``: a layer's
    ``build`` creates all its sublayers' weights, also after some were called on their own
    or built by loading."""
    for layer in layers:
        if layer is not None and not layer.built:
            layer.build(shape)


def sequence_length(x, axis: int = 1):
    """The size of ``x`` along ``axis``: a Python int where the shape knows it (every eager
    call, every call compiled for fixed shapes), else a scalar tensor.

    Code that does arithmetic on a length takes it from here, so it traces where the length
    is unknown; checks that need a number (``length > max_length``) run where it is an int.
    """
    length = x.shape[axis]
    return length if isinstance(length, int) else ops.shape(x)[axis]
