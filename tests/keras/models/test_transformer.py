"""taa.keras.models.transformer: parity with the torch Transformer (post- and pre-norm, every
kind of position, shared and tied matrices, source padding), cached decoding, weights, config, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from taa import config as cfg
from taa.keras.models.transformer import Transformer
from taa.keras.weights import ensure_built, state_dict
from taa.torch.models import transformer as torch_transformer
from tests.keras.models.twins import (
    assert_close,
    assert_config_round_trip,
    assert_saves_and_loads,
    assert_state_dict_loads_into_torch,
    torch_outputs,
    twins,
)

VARIANTS = {
    "paper (post-norm, sinusoids, shared and tied)": {},
    "pre-norm": {"norm_first": True},
    "post-norm with final norms": {"final_norm": True},
    "learned, nothing shared": {
        "positional": "learned", "share_embeddings": False, "tie_output": False, "source_vocab_size": 40,
    },
    "rotary, separate vocabularies, tied output": {
        "positional": "rotary", "share_embeddings": False, "source_vocab_size": 40, "norm_first": True,
    },
    "relative bias": {"positional": "relative", "relative_buckets": 8, "relative_max_distance": 16},
    "no positions, gated": {"positional": "none", "activation": "swiglu", "n_kv_heads": 2},
}


def batch() -> tuple[np.ndarray, np.ndarray]:
    """Source (3, 9) and target (3, 6) ids, both with right padding (pad_id 0)."""
    rng = np.random.default_rng(0)
    source = rng.integers(3, 40, (3, 9)).astype("int32")
    source[1, 6:] = source[2, 2:] = 0
    target = rng.integers(3, 40, (3, 6)).astype("int32")
    target[:, 0] = 1  # bos
    target[2, 4:] = 0
    return source, target


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_equal_torch(variant: str) -> None:
    config = cfg.preset("vaswani-tiny", **VARIANTS[variant])
    model, reference = twins(Transformer, torch_transformer.Transformer, config)
    source, target = batch()
    assert_close(model(source, target), torch_outputs(reference, source, target))


def test_encode_and_decode_equal_the_call() -> None:
    model = Transformer(cfg.preset("vaswani-tiny"))
    source, target = batch()
    padding = model.source_padding(source)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(padding), source != 0)
    memory = model.encode(source)
    assert tuple(memory.shape) == (3, 9, 32)
    assert_close(model.decode(target, memory, padding, target != 0), model(source, target), atol=0)


@pytest.mark.parametrize("variant", ["paper (post-norm, sinusoids, shared and tied)", "pre-norm",
                                     "learned, nothing shared", "rotary, separate vocabularies, tied output",
                                     "relative bias"])
def test_cached_step_by_step_decoding_equals_full_decode(variant: str) -> None:
    model = Transformer(cfg.preset("vaswani-tiny", **VARIANTS[variant]))
    source, target = batch()
    padding = model.source_padding(source)
    memory = model.encode(source, padding)
    full = model.decode(target, memory, padding)
    cache = model.new_cache()
    steps = [model.decode(target[:, :2], memory, padding, cache=cache)]  # two tokens, then one per step
    steps += [model.decode(target[:, t : t + 1], memory, padding, cache=cache) for t in range(2, 6)]
    assert cache.length == 6
    assert_close(keras.ops.concatenate(steps, axis=1), full)


@pytest.mark.parametrize("variant", ["paper (post-norm, sinusoids, shared and tied)", "learned, nothing shared",
                                     "rotary, separate vocabularies, tied output"])
def test_state_dict_loads_strictly_into_torch_and_counts_alike(variant: str) -> None:
    config = cfg.preset("vaswani-tiny", **VARIANTS[variant])
    model = Transformer(config)
    assert_state_dict_loads_into_torch(model, torch_transformer.Transformer, batch())
    reference = torch_transformer.Transformer(config)
    assert model.num_parameters() == reference.num_parameters()
    assert model.parameter_breakdown() == reference.parameter_breakdown()


def test_shared_matrices_appear_under_every_torch_name() -> None:
    weights = state_dict(ensure_built(Transformer(cfg.preset("vaswani-tiny"))))
    for alias in ("target_embedding.weight", "output_projection.weight"):
        np.testing.assert_array_equal(weights[alias], weights["source_embedding.weight"])


def test_initialisation_is_glorot_with_scaled_embeddings() -> None:
    keras.utils.set_random_seed(0)
    config = cfg.preset("vaswani-tiny", d_model=64, d_ff=128, positional="learned", tie_output=False)
    weights = state_dict(ensure_built(Transformer(config)))
    assert weights["source_embedding.weight"].std() == pytest.approx(64**-0.5, rel=0.1)
    assert weights["target_positions.embedding.weight"].std() == pytest.approx(64**-0.5, rel=0.1)
    glorot = (2 / (64 + 128)) ** 0.5  # uniform(-a, a), a = sqrt(6 / (fan_in + fan_out)): std a / sqrt(3)
    assert weights["encoder.layers.0.feed_forward.w1.weight"].std() == pytest.approx(glorot, rel=0.1)
    assert not weights["decoder.layers.1.cross_attention.out_proj.bias"].any()


def test_config_round_trip_and_save(tmp_path) -> None:
    model = Transformer(cfg.preset("vaswani-tiny", **VARIANTS["relative bias"]))
    inputs = batch()
    assert_config_round_trip(model, inputs)
    assert_saves_and_loads(model, inputs, tmp_path)
