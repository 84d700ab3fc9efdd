"""taa.keras.training.muon, adam and make_optimizer: Keras's Muon on torch's split of the weights,
Adam as torch computes it."""

import keras
import numpy as np
import pytest
import torch

from taa import config as cfg
from taa.config import TrainConfig
from taa.keras.models.gpt import GPT
from taa.keras.training import Adam, Muon, make_optimizer
from taa.keras.weights import ensure_built, variables
from taa.torch.models.gpt import GPT as TorchGPT
from taa.torch.training.loop import make_optimizer as torch_make_optimizer


def test_muon_takes_the_weights_torch_gives_muon():
    config = cfg.preset("gpt-tiny")
    model = ensure_built(GPT(config))
    train = TrainConfig(optimizer="muon", weight_decay=0.1)
    optimizer = make_optimizer(model, train)
    optimizer.build(model.trainable_variables)
    named = {name: v for name, (v, _) in variables(model).items()}
    keras_muon = {name for name, v in named.items() if not optimizer._should_use_adamw(v)}

    reference = TorchGPT(config)
    torch_names = {id(p): name for name, p in reference.named_parameters()}
    groups = torch_make_optimizer(reference, train).param_groups
    torch_muon = {torch_names[id(p)] for group in groups if group["muon"] for p in group["params"]}
    torch_decay = {torch_names[id(p)] for group in groups if group["weight_decay"] for p in group["params"]}
    assert keras_muon == torch_muon and torch_muon
    assert {name for name, v in named.items() if optimizer._use_weight_decay(v)} == torch_decay


def test_adam_and_adamw_decay_the_matrices_only():
    model = ensure_built(GPT(cfg.preset("gpt-tiny")))
    adam = make_optimizer(model, TrainConfig())
    assert type(adam) is Adam and adam.weight_decay is None
    adamw = make_optimizer(model, TrainConfig(weight_decay=0.1, adam_beta2=0.99, adam_eps=1e-8))
    assert type(adamw) is Adam and (adamw.weight_decay, adamw.beta_2, adamw.epsilon) == (0.1, 0.99, 1e-8)
    decayed = {len(v.shape) >= 2 for v in model.trainable_variables if adamw._use_weight_decay(v)}
    assert decayed == {True}


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_updates_as_torch_does(weight_decay):
    """Epsilon after the bias correction, as torch (Keras's own Adam adds it before): equal
    where the gradient is as small as epsilon, at every step."""
    rng = np.random.default_rng(0)
    start = rng.normal(size=(4, 3)).astype(np.float32)
    gradients = [(rng.normal(size=(4, 3)) * 10.0 ** -rng.integers(3, 9, (4, 3))).astype(np.float32) for _ in range(3)]
    settings = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=weight_decay)
    weight = torch.nn.Parameter(torch.from_numpy(start.copy()))
    reference = (torch.optim.AdamW if weight_decay else torch.optim.Adam)([weight], **settings)
    variable = keras.Variable(start.copy())
    optimizer = Adam(learning_rate=1e-2, beta_1=0.9, beta_2=0.99, epsilon=1e-6, weight_decay=weight_decay or None)
    for gradient in gradients:
        weight.grad = torch.from_numpy(gradient)
        reference.step()
        optimizer.apply([gradient], [variable])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable.value), weight.detach().numpy(), atol=1e-7,
                                   rtol=1e-6)


def test_muon_refuses_what_is_not_a_matrix():
    with pytest.raises(ValueError, match=r"Muon updates matrices only; it was given shapes \[\(3,\)\]"):
        Muon(muon_variables=[keras.Variable(np.zeros(3, np.float32))])
