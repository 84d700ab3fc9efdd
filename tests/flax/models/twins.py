"""A Flax model and its torch twin on the same weights, and the checks every model test shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import jax
import numpy as np
import torch
from flax import nnx

from taa.flax.weights import load_state_dict, state_dict

TOLERANCE = 1e-5  # float32, max abs difference


def twins(flax_class, torch_class, config, prepare: Optional[Callable[[torch.nn.Module], None]] = None, **options):
    """(flax model, torch model), both in eval mode, built from ``config`` with the torch weights
    in both; ``prepare`` changes the torch weights first (in place). The torch state dict loads
    strictly: its keys are the flax model's."""
    torch.manual_seed(0)
    reference = torch_class(config, **options).eval()
    if prepare is not None:
        with torch.no_grad():
            prepare(reference)
    model = flax_class(config, **options, rngs=nnx.Rngs(0))
    weights = {name: value.detach().numpy() for name, value in reference.state_dict().items()}
    assert sorted(state_dict(model)) == sorted(weights)
    load_state_dict(model, weights)
    model.eval()
    return model, reference


def torch_outputs(reference: torch.nn.Module, *inputs, **keywords) -> np.ndarray:
    """The torch model's outputs on numpy inputs (None stays None)."""
    as_torch = [None if x is None else torch.from_numpy(np.asarray(x)) for x in inputs]
    with torch.no_grad():
        return reference(*as_torch, **keywords).numpy()


def assert_close(ours, theirs, atol: float = TOLERANCE) -> None:
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=atol, rtol=0)


def assert_state_dict_loads_into_torch(model: nnx.Module, torch_class, inputs, **options) -> None:
    """The Flax model's own weights load strictly into a fresh torch twin, which then holds the
    same numbers and gives the same outputs. Counts of parameters agree, in total and per part.

    The model's own initialisation can make large outputs (T5's: logits of 10-20, where float32
    rounds at ~1e-6): the outputs agree to 1e-5 of their scale (plain 1e-5 up to 1).
    """
    reference = torch_class(model.config, **options).eval()
    arrays = state_dict(model)
    reference.load_state_dict({name: torch.from_numpy(value) for name, value in arrays.items()}, strict=True)
    for name, value in reference.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), arrays[name], err_msg=name)
    model.eval()
    expected = torch_outputs(reference, *inputs)
    assert_close(model(*inputs), expected, atol=TOLERANCE * max(1.0, float(np.abs(expected).max())))
    assert model.num_parameters() == reference.num_parameters()
    assert model.parameter_breakdown() == reference.parameter_breakdown()


def assert_runs_under_jit(model: nnx.Module, inputs, **keywords) -> None:
    """``nnx.jit`` of the model's call gives its eager outputs (XLA may fuse operations:
    within 1e-5 of the outputs' scale)."""
    expected = np.asarray(model(*inputs, **keywords))
    compiled = nnx.jit(lambda model, *inputs: model(*inputs, **keywords))
    assert_close(compiled(model, *inputs), expected, atol=TOLERANCE * max(1.0, float(np.abs(expected).max())))


def assert_dropout_in_training_only(model: nnx.Module, inputs) -> None:
    """A model built with dropout: in training mode (as built) two calls draw other masks,
    eagerly and under ``nnx.jit``; ``eval()`` makes it deterministic, ``train()`` active again."""
    trained = [np.asarray(model(*inputs)) for _ in range(2)]
    assert np.abs(trained[0] - trained[1]).max() > 1e-4
    compiled = nnx.jit(lambda model, *inputs: model(*inputs))
    jitted = [np.asarray(compiled(model, *inputs)) for _ in range(2)]
    assert np.abs(jitted[0] - jitted[1]).max() > 1e-4
    model.eval()
    evaluated = np.asarray(model(*inputs))
    assert_close(model(*inputs), evaluated, atol=0)
    assert_close(compiled(model, *inputs), evaluated, atol=TOLERANCE * max(1.0, float(np.abs(evaluated).max())))
    assert np.abs(trained[0] - evaluated).max() > 1e-4
    model.train()
    assert np.abs(np.asarray(model(*inputs)) - evaluated).max() > 1e-4


def gradients(model: nnx.Module, loss: Callable[[nnx.Module], jax.Array]) -> dict[str, np.ndarray]:
    """d loss / d parameter under torch's names (a shared parameter once, under its first name)."""
    grads = nnx.grad(loss)(model)
    flat = nnx.to_flat_state(grads)
    return {".".join(str(part) for part in path): np.asarray(value[...]) for path, value in flat}
