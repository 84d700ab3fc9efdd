"""Weights by torch's names: a Flax model's parameters as the state dict of its torch twin.

The port mirrors the reference attribute for attribute (``decoder.layers.0.self_attention.q_proj``)
and keeps torch's layouts (:mod:`taa.flax.base`), so a parameter's path in the NNX graph,
joined with dots, is its torch name: ``nnx.List`` items are numbered as ``nn.ModuleList``'s.
Only :class:`flax.nnx.Param` variables are weights; buffers, caches and random-number
state are not.

A parameter one module shares with another (GPT's output head is its token embedding) is
one ``nnx.Param`` reached by two paths; NNX lists it once, under the first. Its other name
is declared by the owning module as ``tied_weights = {"alias": "source"}``: the state dict
carries it under both names, as torch's does, and loading accepts it under either or both
(equal). The arrays are numpy's, so these state dicts load into torch
(``{k: torch.from_numpy(v)}``), write to safetensors, or go through the framework-neutral
Hugging Face key maps of :mod:`taa.convert`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from taa.convert.state_dict import ConversionError, check_state_dict


def _name(path: tuple) -> str:
    return ".".join(str(part) for part in path)


def parameters(model: nnx.Module) -> dict[str, nnx.Param]:
    """torch name -> the ``nnx.Param`` itself, each shared parameter once, under the source
    name its ``tied_weights`` declare (NNX meets it first under whichever path sorts first);
    tied aliases left out."""
    found: dict[str, nnx.Param] = {}
    seen: set[int] = set()
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Param) and id(node) not in seen:
            seen.add(id(node))
            found[_name(path)] = node
    for alias, source in tied_weights(model).items():
        if alias in found and source not in found:
            found[source] = found.pop(alias)
    return dict(sorted(found.items(), key=lambda item: _order(item[0])))


def _order(name: str) -> list:
    """Sort key: numbered items in numeric order (``layers.10`` after ``layers.9``)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split(".")]


def named_modules(model: nnx.Module) -> Iterator[tuple[str, nnx.Module]]:
    """(torch-style dotted name, module) for ``model`` and every submodule, each once."""
    seen: set[int] = set()
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module) and id(node) not in seen:
            seen.add(id(node))
            yield _name(path), node


def tied_weights(model: nnx.Module) -> dict[str, str]:
    """alias -> source, both full torch names, for every module's ``tied_weights``."""
    tied: dict[str, str] = {}
    for name, module in named_modules(model):
        for alias, source in (getattr(module, "tied_weights", None) or {}).items():
            prefix = f"{name}." if name else ""
            tied[prefix + alias] = prefix + source
    return tied


def state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """The weights as numpy arrays under torch's names and layouts, tied aliases included."""
    arrays = {name: np.array(param[...]) for name, param in parameters(model).items()}
    for alias, source in tied_weights(model).items():
        arrays[alias] = arrays[source]
    return arrays


def load_state_dict(model: nnx.Module, state: Mapping[str, Any], what: str = "weights") -> nnx.Module:
    """Load a torch-named state dict (numpy arrays, or anything ``np.asarray`` takes) strictly:
    every key and shape must match (a tied alias may be missing, or equal its source); one
    :class:`~taa.convert.state_dict.ConversionError` lists every problem, before anything is
    assigned. Each parameter keeps its own dtype."""
    targets = parameters(model)
    state = {key: np.asarray(value) for key, value in state.items()}
    for alias, source in tied_weights(model).items():  # a tied weight stored under its alias only, or both
        if alias in state:
            value = state.pop(alias)
            if source not in state:
                state[source] = value
            elif not np.array_equal(state[source], value):
                raise ConversionError(f"{what}: {alias} should equal {source} (they are one tied weight)")
    check_state_dict(state, {name: tuple(param[...].shape) for name, param in targets.items()}, what)
    for name, param in targets.items():
        param[...] = jnp.asarray(state[name], dtype=param[...].dtype)
    return model
