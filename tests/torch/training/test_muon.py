import pytest
import torch

from taa.config import TrainConfig, preset
from taa.torch import GPT
from taa.torch.training import checkpoint as ckpt
from taa.torch.training.loop import is_hidden_matrix, make_optimizer
from taa.torch.training.muon import NEWTON_SCHULZ, Muon, orthogonalize, update_scale
from tests.helpers import assert_optimizers_agree


def _through_the_svd(matrix: torch.Tensor, steps: int) -> torch.Tensor:
    """What the Newton-Schulz iteration computes, applied to the singular values directly:
    U p(p(...p(S / |M|_F))) V^T with p(s) = a s + b s^3 + c s^5."""
    a, b, c = NEWTON_SCHULZ
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    s = s / torch.linalg.matrix_norm(matrix.double())
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return (u * s) @ vh


@pytest.mark.parametrize("shape", [(16, 48), (48, 16), (3, 16, 40)])
def test_orthogonalize_maps_singular_values_by_the_quintic_and_keeps_the_vectors(shape):
    torch.manual_seed(0)
    matrices = torch.randn(shape)
    out = orthogonalize(matrices)
    assert out.shape == matrices.shape
    for got, matrix in zip(out.reshape(-1, *shape[-2:]), matrices.reshape(-1, *shape[-2:])):
        torch.testing.assert_close(got.double(), _through_the_svd(matrix, 5), rtol=1e-4, atol=1e-5)
        singular = torch.linalg.svdvals(got)
        assert singular.min() > 0.6 and singular.max() < 1.25  # approximately orthogonal (well-conditioned input)


def test_a_muon_step_is_the_formula() -> None:
    """Three steps on one matrix against the update written out: Nesterov momentum,
    orthogonalization, the RMS-matching scale and decoupled weight decay."""
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(6, 10))
    expected = weight.detach().clone()
    optimizer = Muon([{"params": [weight], "muon": True, "weight_decay": 0.1}], lr=0.02, momentum=0.9)
    buffer = torch.zeros_like(expected)
    for _ in range(3):
        grad = torch.randn(6, 10)
        weight.grad = grad.clone()
        optimizer.step()
        buffer = 0.9 * buffer + grad
        update = orthogonalize(grad + 0.9 * buffer)
        expected = expected * (1 - 0.02 * 0.1) - 0.02 * 0.2 * 10**0.5 * update
        torch.testing.assert_close(weight.detach(), expected, rtol=1e-5, atol=1e-6)
    assert update_scale(torch.Size([6, 10])) == pytest.approx(0.2 * 10**0.5)


@pytest.mark.parametrize("fused", [True, None])
def test_the_adamw_groups_step_as_torch_adamw(fused) -> None:
    torch.manual_seed(0)
    ours, reference = torch.nn.Linear(5, 4), torch.nn.Linear(5, 4)
    reference.load_state_dict(ours.state_dict())
    groups = lambda m: [{"params": [m.weight], "weight_decay": 0.1}, {"params": [m.bias], "weight_decay": 0.0}]  # noqa: E731
    muon = Muon(groups(ours), lr=1e-2, betas=(0.9, 0.98), eps=1e-9, fused=fused)
    adamw = torch.optim.AdamW(groups(reference), lr=1e-2, betas=(0.9, 0.98), eps=1e-9, foreach=False)
    assert_optimizers_agree(ours, muon, reference, adamw, torch.randn(8, 5), steps=4)


def test_muon_takes_the_layers_matrices_and_adamw_the_rest() -> None:
    model = GPT(preset("gpt-shakespeare-char", n_layers=2, d_model=16, n_heads=2, d_ff=32, max_length=8))
    optimizer = make_optimizer(model, TrainConfig(optimizer="muon", weight_decay=0.1, lr=1e-3))
    assert isinstance(optimizer, Muon)
    kind = {id(p): (g["muon"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert len(kind) == sum(1 for _ in model.parameters())
    for name, p in model.named_parameters():
        hidden = name.startswith("blocks.layers.") and name.endswith("weight") and p.dim() == 2
        assert is_hidden_matrix(name, tuple(p.shape)) == hidden, name
        assert kind[id(p)] == (hidden, 0.1 if p.dim() == 2 else 0.0), name
    assert {n for n, p in model.named_parameters() if not kind[id(p)][0] and p.dim() == 2} == {
        "token_embedding.weight", "position_embedding.embedding.weight"}
    with pytest.raises(ValueError, match="matrices only"):
        Muon([{"params": [torch.nn.Parameter(torch.zeros(3))], "muon": True}], lr=1e-3)


def test_a_saved_muon_state_continues_as_if_never_stopped(tmp_path) -> None:
    """The momentum buffers and AdamW moments go through the checkpoint files; two more
    steps from the reloaded state equal two more steps without the round trip."""
    config = preset("gpt-shakespeare-char", n_layers=1, d_model=16, n_heads=2, d_ff=32, max_length=8, dropout=0.0,
                    attention_dropout=0.0)
    train = TrainConfig(optimizer="muon", weight_decay=0.1, lr=1e-2)
    torch.manual_seed(0)
    model = GPT(config)
    batch = torch.randint(0, config.vocab_size, (4, 8))

    def step(model, optimizer):
        optimizer.zero_grad()
        model(batch).logsumexp(-1).mean().backward()
        optimizer.step()

    optimizer = make_optimizer(model, train)
    for _ in range(2):
        step(model, optimizer)
    ckpt.save_optimizer(optimizer, tmp_path)
    resumed = GPT(config)
    resumed.load_state_dict(model.state_dict())
    resumed_optimizer = make_optimizer(resumed, train)
    ckpt.load_optimizer(resumed_optimizer, tmp_path)
    for _ in range(2):
        step(model, optimizer)
        step(resumed, resumed_optimizer)
    for (name, a), (_, b) in zip(model.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_muon_config_is_checked() -> None:
    from taa.config import ConfigError

    with pytest.raises(ConfigError, match="optimizer='sgd'"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ConfigError, match="muon_momentum=1.0"):
        TrainConfig(muon_momentum=1.0)
