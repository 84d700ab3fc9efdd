"""taa.flax.training.muon, adam and make_optimizer: optax transformations that update as
torch's Muon, Adam and AdamW, on torch's split of the weights."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from taa import config as cfg
from taa.config import TrainConfig
from taa.flax.models.gpt import GPT
from taa.flax.training import adamw, make_optimizer, muon, orthogonalize
from taa.flax.training.adam import LEARNING_RATE
from taa.flax.training.loop import hidden_matrices, matrices
from taa.flax.training.step import named_leaves
from taa.flax.weights import tied_weights
from taa.torch.models.gpt import GPT as TorchGPT
from taa.torch.training.loop import make_optimizer as torch_make_optimizer
from taa.torch.training.muon import Muon as TorchMuon
from taa.torch.training.muon import orthogonalize as torch_orthogonalize


@pytest.mark.parametrize("shape", [(16, 48), (48, 16), (3, 16, 40)])
def test_orthogonalize_equals_torch(shape):
    matrices_ = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    expected = torch_orthogonalize(torch.from_numpy(matrices_)).numpy()
    np.testing.assert_allclose(np.asarray(orthogonalize(jnp.asarray(matrices_))), expected, atol=1e-5, rtol=0)


def _steps(optimizer, params, gradients, lr):
    """``params`` after one update per gradient, the rate set in the state as the trainer does."""
    state = optimizer.init(params)
    for gradient in gradients:
        state.hyperparams[LEARNING_RATE] = jnp.float32(lr)
        updates, state = optimizer.update(gradient, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_muon_steps_as_torch_muon_with_adamw_on_the_rest():
    """Three steps on a hidden matrix (Muon, decayed) and a bias (AdamW, not decayed)."""
    rng = np.random.default_rng(0)
    start = {"w": rng.normal(size=(6, 10)).astype(np.float32), "b": rng.normal(size=(5,)).astype(np.float32)}
    gradients = [{name: rng.normal(size=value.shape).astype(np.float32) for name, value in start.items()}
                 for _ in range(3)]
    weight, bias = (torch.nn.Parameter(torch.from_numpy(start[name].copy())) for name in ("w", "b"))
    reference = TorchMuon([{"params": [weight], "muon": True, "weight_decay": 0.1},
                           {"params": [bias], "muon": False, "weight_decay": 0.0}],
                          lr=0.02, momentum=0.9, betas=(0.9, 0.98), eps=1e-6)
    for gradient in gradients:
        weight.grad, bias.grad = torch.from_numpy(gradient["w"]), torch.from_numpy(gradient["b"])
        reference.step()
    optimizer = muon(0.02, hidden={"w": True, "b": False}, momentum=0.9, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.1,
                     decay_mask=matrices)
    ours = _steps(optimizer, jax.tree_util.tree_map(jnp.asarray, start), gradients, 0.02)
    np.testing.assert_allclose(np.asarray(ours["w"]), weight.detach().numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(ours["b"]), bias.detach().numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_updates_as_torch_does(weight_decay):
    """Epsilon after the bias correction, as torch: equal where the gradient is as small as
    epsilon, at every step; decoupled decay of the matrix only."""
    rng = np.random.default_rng(0)
    start = {"w": rng.normal(size=(4, 3)).astype(np.float32), "b": rng.normal(size=(3,)).astype(np.float32)}
    gradients = [{name: (rng.normal(size=value.shape) * 10.0 ** -rng.integers(3, 9, value.shape)).astype(np.float32)
                  for name, value in start.items()} for _ in range(3)]
    weight, bias = (torch.nn.Parameter(torch.from_numpy(start[name].copy())) for name in ("w", "b"))
    kind = torch.optim.AdamW if weight_decay else torch.optim.Adam
    reference = kind([{"params": [weight], "weight_decay": weight_decay}, {"params": [bias], "weight_decay": 0.0}],
                     lr=1e-2, betas=(0.9, 0.99), eps=1e-6)
    for gradient in gradients:
        weight.grad, bias.grad = torch.from_numpy(gradient["w"]), torch.from_numpy(gradient["b"])
        reference.step()
    optimizer = adamw(1e-2, b1=0.9, b2=0.99, eps=1e-6, weight_decay=weight_decay, decay_mask=matrices)
    ours = _steps(optimizer, jax.tree_util.tree_map(jnp.asarray, start), gradients, 1e-2)
    np.testing.assert_allclose(np.asarray(ours["w"]), weight.detach().numpy(), atol=1e-7, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ours["b"]), bias.detach().numpy(), atol=1e-7, rtol=1e-6)


def test_muon_and_weight_decay_take_the_weights_torch_gives_them():
    config = cfg.preset("gpt-tiny")
    model = GPT(config, rngs=nnx.Rngs(0))
    params, tied = nnx.state(model, nnx.Param), tied_weights(model)
    ours_muon = {name for name, chosen in named_leaves(hidden_matrices(params, tied)).items() if chosen}
    ours_decay = {name for name, chosen in named_leaves(matrices(params)).items() if chosen}
    reference = TorchGPT(config)
    same = {**tied, **{source: alias for alias, source in tied.items()}}  # the state names a tied weight by one name
    nnx_names = set(named_leaves(params))
    torch_names = {id(p): name if name in nnx_names else same[name] for name, p in reference.named_parameters()}
    groups = torch_make_optimizer(reference, TrainConfig(optimizer="muon", weight_decay=0.1)).param_groups
    torch_muon = {torch_names[id(p)] for group in groups if group["muon"] for p in group["params"]}
    torch_decay = {torch_names[id(p)] for group in groups if group["weight_decay"] for p in group["params"]}
    assert ours_muon == torch_muon and torch_muon and ours_decay == torch_decay
    optimizer = make_optimizer(model, TrainConfig(optimizer="muon", weight_decay=0.1))
    state = optimizer.init(params)  # Muon's momentum for the hidden matrices, Adam's moments for the rest
    names = named_leaves(state)
    assert {n.removeprefix("inner_state.0.inner_states.muon.inner_state.0.momentum.")
            for n in names if ".momentum." in n} == torch_muon


def test_muon_refuses_what_is_not_a_matrix():
    with pytest.raises(ValueError, match=r"Muon updates matrices only; it was given shapes \[\(3,\)\]"):
        muon(0.1, hidden={"b": True}).init({"b": jnp.zeros(3)})
