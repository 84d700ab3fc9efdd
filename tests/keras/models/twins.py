"""A Keras model and its torch twin on the same weights, and the checks every model test shares."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import torch

from taa.keras.weights import ensure_built, load_state_dict, named_layers, state_dict

TOLERANCE = 1e-5  # float32, max abs difference


def twins(keras_class, torch_class, config, prepare: Optional[Callable[[torch.nn.Module], None]] = None, **options):
    """(keras model, torch model in eval mode) built from ``config`` with the torch weights in both;
    ``prepare`` changes the torch weights first (in place)."""
    torch.manual_seed(0)
    reference = torch_class(config, **options).eval()
    if prepare is not None:
        with torch.no_grad():
            prepare(reference)
    model = ensure_built(keras_class(config, **options))
    load_state_dict(model, {name: value.detach().numpy() for name, value in reference.state_dict().items()})
    return model, reference


def torch_outputs(reference: torch.nn.Module, *inputs, **keywords) -> np.ndarray:
    """The torch model's outputs on numpy inputs (None stays None)."""
    as_torch = [None if x is None else torch.from_numpy(np.asarray(x)) for x in inputs]
    with torch.no_grad():
        return reference(*as_torch, **keywords).numpy()


def assert_close(ours, theirs, atol: float = TOLERANCE) -> None:
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), np.asarray(theirs), atol=atol, rtol=0)


def assert_state_dict_loads_into_torch(model, torch_class, inputs, **options) -> None:
    """The Keras model's own weights load strictly into a fresh torch twin, which then holds the
    same numbers and gives the same outputs.

    Keras's own initialisation can make large outputs (T5's: logits of 10-20, where float32
    rounds at ~1e-6): the outputs agree to 1e-5 of their scale (plain 1e-5 up to 1).
    """
    reference = torch_class(model.config, **options).eval()
    arrays = state_dict(ensure_built(model))
    reference.load_state_dict({name: torch.from_numpy(value) for name, value in arrays.items()}, strict=True)
    for name, value in reference.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), arrays[name], err_msg=name)
    expected = torch_outputs(reference, *inputs)
    assert_close(model(*inputs), expected, atol=TOLERANCE * max(1.0, float(np.abs(expected).max())))


def assert_config_round_trip(model, inputs) -> None:
    """from_config(get_config()) builds the same model: same config, options and weight names;
    with the weights copied, the same outputs."""
    ensure_built(model)
    clone = type(model).from_config(model.get_config())
    assert clone.config == model.config
    assert clone.get_config() == model.get_config()
    load_state_dict(ensure_built(clone), state_dict(model))
    assert_close(clone(*inputs), model(*inputs), atol=0)


def assert_saves_and_loads(model, inputs, folder: Path) -> None:
    """model.save + keras.models.load_model give the same class, config and outputs."""
    path = folder / "m.keras"
    ensure_built(model).save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert state_dict(loaded).keys() == state_dict(model).keys()
    assert_close(loaded(*inputs), model(*inputs), atol=0)


def assert_traces_with_open_lengths(model, inputs) -> None:
    """Traced on inputs of unknown batch and length, the model gives its eager outputs: a
    functional ``keras.Model`` on ``keras.Input((None,))`` per input, and on TensorFlow a
    ``tf.function`` whose signature is (None, None) per input (a graph, which may fuse
    operations: within 1e-5 of the outputs' scale)."""
    symbolic = [keras.Input((None,), dtype="int32") for _ in inputs]
    functional = keras.Model(symbolic, model(*symbolic))
    expected = keras.ops.convert_to_numpy(model(*inputs))
    atol = TOLERANCE * max(1.0, float(np.abs(expected).max()))
    assert_close(functional(list(inputs)), expected, atol=atol)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        signature = [tf.TensorSpec((None, None), tf.int32) for _ in inputs]
        assert_close(tf.function(model, input_signature=signature)(*inputs), expected, atol=atol)


def assert_sublayers_follow_mixed_precision(make_model: Callable[..., keras.Model]) -> None:
    """Under the global policy ``mixed_bfloat16``, and given ``dtype="mixed_bfloat16"`` alone,
    every Dense computes in bfloat16, every variable is float32 and the outputs are bfloat16.
    ``make_model(**kwargs)`` builds the model, passing ``kwargs`` (``dtype``) to its class."""

    def check(model: keras.Model) -> None:
        outputs = ensure_built(model)(*model.dummy_inputs())
        layers = named_layers(model)
        dense = {name: layer.compute_dtype for name, layer in layers if isinstance(layer, keras.layers.Dense)}
        assert dense and set(dense.values()) == {"bfloat16"}, dense
        assert {variable.dtype for variable in model.weights} == {"float32"}
        assert keras.backend.standardize_dtype(outputs.dtype) == "bfloat16"

    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        check(make_model())
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    check(make_model(dtype="mixed_bfloat16"))
