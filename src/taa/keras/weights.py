"""Weights by torch's names: a Keras model's weights as the state dict of its torch twin.

The port mirrors the reference attribute for attribute (``blocks.layers.0.self_attention.q_proj``),
so converting between the two is a walk over the sublayers plus two layout fixes:

- ``keras.layers.Dense`` keeps its kernel as (in, out), ``torch.nn.Linear`` its weight as
  (out, in): the kernel is transposed to ``weight``; its bias is ``bias``;
- ``keras.layers.Embedding`` keeps ``embeddings``, torch ``weight``.

Every other layer names its own variables as torch does (``LayerNorm``: ``weight``,
``bias``). A weight one layer shares with another (GPT's output head is its token
embedding) is declared by the owning layer as ``tied_weights = {"alias": "source"}``: the
state dict carries it under both names, as torch's does, and loading accepts it under
either or both (equal).

The walk visits public attributes in the order they were set: a Layer is named by its
attribute, a list of Layers by attribute and index (``layers.0``), as ``nn.ModuleList``.
A layer reached twice (a rotary table shared by every layer) gives its weights once, under
the first name. The arrays are numpy's, so these state dicts load into torch
(``{k: torch.from_numpy(v)}``), write to safetensors, or go through the framework-neutral
Hugging Face key maps of :mod:`taa.convert`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np

from taa.convert.state_dict import ConversionError, check_state_dict


def named_layers(layer: keras.layers.Layer, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """(torch-style dotted name, layer) for ``layer`` and every sublayer, parents first."""
    seen: set[int] = set()

    def walk(current: keras.layers.Layer, name: str) -> Iterator[tuple[str, keras.layers.Layer]]:
        if id(current) in seen:
            return
        seen.add(id(current))
        yield name, current
        attributes = dict(vars(current))
        # On Keras's torch backend a Layer is a torch Module, which files its sublayers apart
        attributes.update(getattr(current, "_modules", None) or {})
        for attribute, value in attributes.items():
            if attribute.startswith("_"):
                continue
            if isinstance(value, keras.layers.Layer):
                yield from walk(value, _join(name, attribute))
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, keras.layers.Layer) for v in value):
                for index, sublayer in enumerate(value):
                    yield from walk(sublayer, _join(name, f"{attribute}.{index}"))

    yield from walk(layer, prefix)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _own_variables(layer: keras.layers.Layer) -> Iterator[tuple[str, keras.Variable, bool]]:
    """(torch name, variable, transposed) for the variables ``layer`` itself owns."""
    if isinstance(layer, keras.layers.Dense):
        yield "weight", layer.kernel, True
        if layer.bias is not None:
            yield "bias", layer.bias, False
    elif isinstance(layer, keras.layers.Embedding):
        yield "weight", layer.embeddings, False
    else:
        for variable in layer._trainable_variables + layer._non_trainable_variables:
            yield variable.name, variable, False


def variables(model: keras.layers.Layer) -> dict[str, tuple[keras.Variable, bool]]:
    """torch name -> (the Keras variable, whether it is stored transposed), tied aliases
    left out. The model must be built (:func:`ensure_built`)."""
    if not model.built:
        raise ValueError(f"{type(model).__name__} is not built yet: call it once (taa.keras.weights.ensure_built)")
    found: dict[str, tuple[keras.Variable, bool]] = {}
    seen: set[int] = set()
    for name, layer in named_layers(model):
        for own, variable, transposed in _own_variables(layer):
            if id(variable) not in seen:
                seen.add(id(variable))
                found[_join(name, own)] = (variable, transposed)
    return found


def tied_weights(model: keras.layers.Layer) -> dict[str, str]:
    """alias -> source, both full torch names, for every layer's ``tied_weights``."""
    tied: dict[str, str] = {}
    for name, layer in named_layers(model):
        for alias, source in (getattr(layer, "tied_weights", None) or {}).items():
            tied[_join(name, alias)] = _join(name, source)
    return tied


def state_dict(model: keras.layers.Layer) -> dict[str, np.ndarray]:
    """The weights as numpy arrays under torch's names and layouts, tied aliases included."""
    arrays: dict[str, np.ndarray] = {}
    for name, (variable, transposed) in variables(model).items():
        value = np.asarray(variable.numpy())  # (convert_to_numpy warns about numpy 2's copy keyword on TensorFlow)
        arrays[name] = np.ascontiguousarray(value.T if transposed else value)
    for alias, source in tied_weights(model).items():
        arrays[alias] = arrays[source]
    return arrays


def load_state_dict(model: keras.layers.Layer, state: Mapping[str, Any], what: str = "weights") -> keras.layers.Layer:
    """Load a torch-named state dict (numpy arrays, or anything ``np.asarray`` takes) strictly:
    every key and shape must match (a tied alias may be missing, or equal its source); one
    :class:`~taa.convert.state_dict.ConversionError` lists every problem, before anything is
    assigned."""
    targets = variables(model)
    tied = tied_weights(model)
    state = dict(state)
    for alias, source in tied.items():  # a tied weight stored under its alias only, or both
        if alias in state:
            value = state.pop(alias)
            if source not in state:
                state[source] = value
            elif not np.array_equal(np.asarray(state[source]), np.asarray(value)):
                raise ConversionError(f"{what}: {alias} should equal {source} (they are one tied weight)")
    expected = {
        name: tuple(reversed(variable.shape)) if transposed else tuple(variable.shape)
        for name, (variable, transposed) in targets.items()
    }
    check_state_dict({key: np.asarray(value) for key, value in state.items()}, expected, what)
    for name, (variable, transposed) in targets.items():
        # a copy: on JAX a variable may share a numpy array's memory, which its owner may change later
        value = np.array(state[name], dtype=np.float32 if "float" in str(variable.dtype) else None)
        variable.assign(value.T if transposed else value)
    return model


def ensure_built(model: keras.layers.Layer) -> keras.layers.Layer:
    """Build a taa Keras model by calling it once on its ``dummy_inputs()``."""
    if not model.built:
        dummy = getattr(model, "dummy_inputs", None)
        if dummy is None:
            raise ValueError(f"{type(model).__name__} has no dummy_inputs(): call it once to build it")
        model(*dummy())
    return model
