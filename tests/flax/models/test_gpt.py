"""taa.flax.models.gpt: parity with the torch GPT (every kind of position, tied and untied,
norms, gated and grouped-query layers, left padding), KV cache == full forward (eagerly and
under nnx.jit with a fixed capacity), weights both ways, initialisation, dropout, gradients."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from taa import config as cfg
from taa.flax.models.gpt import GPT, positions_from_mask
from taa.flax.weights import state_dict
from taa.torch.models import gpt as torch_gpt
from tests.flax.models.twins import (
    assert_close,
    assert_dropout_in_training_only,
    assert_runs_under_jit,
    assert_state_dict_loads_into_torch,
    gradients,
    torch_outputs,
    twins,
)

POSITIONALS = ["learned", "rotary", "alibi"]


def batch(rows: int = 3, length: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (rows, length) and a left-padded attention mask: row r has 2r padding tokens."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 64, (rows, length)).astype("int32")
    mask = np.ones((rows, length), dtype="int32")
    for row in range(rows):
        mask[row, : 2 * row] = 0
    return ids, mask


@pytest.mark.parametrize("positional, tie_output", [("learned", False), ("rotary", True), ("alibi", True)])
def test_logits_and_hidden_states_equal_torch(positional: str, tie_output: bool) -> None:
    """Each kind of position (tied or untied head): logits without a mask, with left padding and
    with position ids, and the hidden states and last-token head, equal torch's."""
    config = cfg.preset("gpt-tiny", positional=positional, tie_output=tie_output)
    model, reference = twins(GPT, torch_gpt.GPT, config)
    ids, mask = batch()
    assert_close(model(ids), torch_outputs(reference, ids))
    assert_close(model(ids, mask), torch_outputs(reference, ids, mask))  # left padding
    positions = np.tile(np.arange(7, dtype="int32"), (3, 1))
    assert_close(
        model(ids, position_ids=positions), torch_outputs(reference, ids, position_ids=torch.from_numpy(positions))
    )
    with torch.no_grad():
        expected = reference.hidden_states(torch.from_numpy(ids), torch.from_numpy(mask))
        logits = reference.output_projection(expected[:, -1])
    hidden = model.hidden_states(ids, mask)  # (b, n, d)
    assert hidden.shape == (3, 7, 32)
    assert_close(hidden, expected.numpy())
    assert_close(model.output_projection(hidden[:, -1]), logits.numpy())


@pytest.mark.parametrize(
    "overrides",
    [
        {"norm_first": False},  # GPT-1: post-norm, no final norm
        {"norm": "rms", "activation": "swiglu", "n_kv_heads": 2, "bias": False, "positional": "rotary"},
        {"activation": "relu", "n_kv_heads": 1, "attention": "readable", "positional": "alibi"},
    ],
    ids=["post-norm", "rms-swiglu-gqa-rotary", "relu-mqa-readable-alibi"],
)
def test_variants_equal_torch(overrides: dict) -> None:
    """Post-norm; rms/swiglu/grouped-query/no bias; relu/multi-query/readable: torch's logits."""
    model, reference = twins(GPT, torch_gpt.GPT, cfg.preset("gpt-tiny", **overrides))
    ids, mask = batch()
    assert_close(model(ids), torch_outputs(reference, ids))
    assert_close(model(ids, mask), torch_outputs(reference, ids, mask))


def test_positions_from_mask_equal_torch() -> None:
    _, mask = batch(rows=4)
    expected = torch_gpt.positions_from_mask(torch.from_numpy(mask)).numpy()
    np.testing.assert_array_equal(np.asarray(positions_from_mask(mask)), expected)


@pytest.mark.parametrize("positional, capacity", [("learned", None), ("rotary", 9), ("alibi", None)])
def test_cached_step_by_step_decoding_equals_full_forward(positional: str, capacity) -> None:
    """A prompt of four, then one token per step, through a growing or preallocated cache: the full forward."""
    model = GPT(cfg.preset("gpt-tiny", positional=positional), rngs=nnx.Rngs(0))
    model.eval()
    ids, _ = batch(length=9)  # the other cached tests' shapes
    full = model(ids)
    cache = model.new_cache(capacity)
    prefill = model(ids[:, :5], cache=cache)  # a prompt at once, then one token per step
    steps = [model(ids[:, t : t + 1], cache=cache) for t in range(5, 9)]
    assert int(cache.length) == 9
    assert_close(jnp.concatenate([prefill, *steps], axis=1), full)


@pytest.mark.parametrize("positional", POSITIONALS)
def test_cached_decoding_of_left_padded_prompts_equals_full_forward_and_torch(positional: str) -> None:
    """The mask covers the cached tokens and the new ones, as torch's does; the logits at real
    tokens are the full forward's, and torch's cached steps'."""
    model, reference = twins(GPT, torch_gpt.GPT, cfg.preset("gpt-tiny", positional=positional))
    ids, mask = batch(length=9)
    full = model(ids, mask)
    cache, torch_cache = model.new_cache(), reference.new_cache()
    outputs = [model(ids[:, :5], mask[:, :5], cache=cache)]
    expected = [torch_outputs(reference, ids[:, :5], mask[:, :5], cache=torch_cache)]
    for t in range(5, 9):
        outputs.append(model(ids[:, t : t + 1], mask[:, : t + 1], cache=cache))
        expected.append(torch_outputs(reference, ids[:, t : t + 1], mask[:, : t + 1], cache=torch_cache))
    real = mask.astype(bool)  # padding positions' logits are never read
    ours = np.asarray(jnp.concatenate(outputs, axis=1))
    assert_close(ours[real], np.asarray(full)[real])
    assert_close(ours[real], np.concatenate(expected, axis=1)[real])


@pytest.mark.parametrize("positional", POSITIONALS)
def test_fixed_size_cache_under_jit_equals_full_forward(positional: str) -> None:
    """Decoding as generation runs it: one cache of 12 positions, a mask over all of them
    (left padding, then the tokens to come), one compiled step per shape."""
    model = GPT(cfg.preset("gpt-tiny", positional=positional), rngs=nnx.Rngs(0))
    model.eval()
    ids, mask = batch(length=9)
    full = np.asarray(model(ids, mask))
    wide = np.ones((3, 12), dtype="int32")
    wide[:, :9] = mask
    traces = []

    @nnx.jit
    def step(model, ids, mask, cache):
        traces.append(ids.shape)
        return model(ids, mask, cache=cache)

    cache = model.new_cache(capacity=12)
    outputs = [step(model, ids[:, :5], wide, cache)]  # the prompt, then one token per step
    outputs += [step(model, ids[:, t : t + 1], wide, cache) for t in range(5, 9)]
    real = mask.astype(bool)
    assert_close(np.asarray(jnp.concatenate(outputs, axis=1))[real], full[real])
    assert int(cache.length) == 9 and traces == [(3, 5), (3, 1)]


@pytest.mark.parametrize("tie_output", [True, False])
def test_state_dict_loads_strictly_into_torch(tie_output: bool) -> None:
    model = GPT(cfg.preset("gpt-tiny", tie_output=tie_output), rngs=nnx.Rngs(1))
    ids, mask = batch()
    assert_state_dict_loads_into_torch(model, torch_gpt.GPT, (ids, mask))
    weights = state_dict(model)
    tied = np.array_equal(weights["output_projection.weight"], weights["token_embedding.weight"])
    assert tied == tie_output


@pytest.mark.parametrize("positional", ["rotary"])
def test_runs_under_jit(positional: str) -> None:
    """nnx.jit gives the eager logits, with and without a mask (every kind of position runs
    under jit in the fixed-size cache test)."""
    model = GPT(cfg.preset("gpt-tiny", positional=positional), rngs=nnx.Rngs(0))
    model.eval()
    ids, mask = batch()
    assert_runs_under_jit(model, (ids,))
    assert_runs_under_jit(model, (ids, mask))


def test_dropout_acts_in_training_only() -> None:
    config = cfg.preset("gpt-tiny", dropout=0.2, attention_dropout=0.2)
    assert_dropout_in_training_only(GPT(config, rngs=nnx.Rngs(0)), (batch()[0],))


def test_gradients_equal_torch_and_reach_the_tied_embedding_twice() -> None:
    """The tied matrix is one parameter: its gradient sums the embedding's and the head's, as torch's."""
    model, reference = twins(GPT, torch_gpt.GPT, cfg.preset("gpt-tiny"))
    ids, mask = batch()
    target = np.random.default_rng(1).standard_normal((3, 7, 64)).astype("float32")
    ours = gradients(model, lambda model: jnp.sum(model(ids, mask) * target))
    (reference(torch.from_numpy(ids), torch.from_numpy(mask)) * torch.from_numpy(target)).sum().backward()
    expected = {name: parameter.grad.numpy() for name, parameter in reference.named_parameters()}
    # the tied matrix once: torch's under its first name (the embedding's), which the model declares
    # the source; NNX's gradient under the path it meets first (the head's)
    assert model.tied_weights == {"output_projection.weight": "token_embedding.weight"}
    nnx_name = {"token_embedding.weight": "output_projection.weight"}
    assert sorted(nnx_name.get(name, name) for name in expected) == sorted(ours)
    for name, grad in expected.items():
        assert_close(ours[nnx_name.get(name, name)], grad, atol=1e-4)


def test_initialisation_follows_gpt2() -> None:
    weights = state_dict(GPT(cfg.preset("gpt-tiny", n_layers=2, d_model=64, d_ff=256), rngs=nnx.Rngs(0)))
    assert weights["token_embedding.weight"].std() == pytest.approx(0.02, rel=0.1)
    assert weights["blocks.layers.0.self_attention.q_proj.weight"].std() == pytest.approx(0.02, rel=0.1)
    residual = 0.02 / 2  # 0.02 / sqrt(2 * n_layers)
    assert weights["blocks.layers.1.self_attention.out_proj.weight"].std() == pytest.approx(residual, rel=0.1)
    assert weights["blocks.layers.1.feed_forward.w2.weight"].std() == pytest.approx(residual, rel=0.1)
    assert not weights["blocks.layers.0.feed_forward.w1.bias"].any()
    assert (weights["blocks.final_norm.weight"] == 1).all()
    other = state_dict(GPT(cfg.preset("gpt-tiny", n_layers=2, d_model=64, d_ff=256), rngs=nnx.Rngs(1)))
    assert not np.array_equal(other["token_embedding.weight"], weights["token_embedding.weight"])


@pytest.mark.parametrize("positional", POSITIONALS)
def test_bad_inputs_are_named(positional: str) -> None:
    model = GPT(cfg.preset("gpt-tiny", positional=positional), rngs=nnx.Rngs(0))
    ids, mask = batch()
    with pytest.raises(ValueError, match="position 65 exceeds max_length=64"):
        model(np.zeros((1, 65), dtype="int32"))
    with pytest.raises(ValueError, match="position 65 exceeds max_length=64"):  # compiled for its shape
        nnx.jit(lambda model, ids: model(ids))(model, np.zeros((1, 65), dtype="int32"))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(3, 6\)"):
        model(ids, mask[:, 1:])
