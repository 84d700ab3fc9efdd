import pytest
import torch

from taa.config import CopyTaskConfig, TrainConfig, preset
from taa.tasks.copy import CopyBatches
from taa.torch import Transformer
from taa.torch.training import Trainer, fit, seed_everything, seq2seq_loss
from tests.helpers import assert_optimizers_agree


def _train(seed: int):
    config = preset("copy-task", d_model=32, d_ff=64, dropout=0.1)
    train = TrainConfig(steps=12, batch_size=8, warmup_steps=4, seed=seed, log_every=4)
    seed_everything(seed)
    model = Transformer(config)
    batches = CopyBatches(CopyTaskConfig(length=6), 11, 8, 1, seed=seed)
    result = fit(model, batches, train, seq2seq_loss(0.1, 0), d_model=config.d_model, progress=False)
    return model, result


def test_a_cpu_run_repeats_exactly():
    a, result_a = _train(3)
    b, result_b = _train(3)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    assert result_a.history == result_b.history
    c, _ = _train(4)
    assert not torch.equal(a.encoder.layers[0].feed_forward.w1.weight, c.encoder.layers[0].feed_forward.w1.weight)


def test_history_records_steps_loss_and_lr():
    _, result = _train(0)
    assert [step for step, _, _ in result.history] == [4, 8, 12]
    assert result.tokens_per_second > 0
    # the rate recorded at step s is the one that step used: noam at the paper's step s
    for step, _, lr in result.history:
        assert abs(lr - 32**-0.5 * min(step**-0.5, step * 4**-1.5)) < 1e-12
    assert all(loss > 0 for _, loss, _ in result.history)


def test_weight_decay_spares_biases_and_norm_gains() -> None:
    from taa.config import TrainConfig
    from taa.torch.training.loop import make_optimizer

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    adam = make_optimizer(model, TrainConfig(weight_decay=0.0))
    assert isinstance(adam, torch.optim.Adam) and len(adam.param_groups) == 1
    adamw = make_optimizer(model, TrainConfig(weight_decay=0.1))
    assert isinstance(adamw, torch.optim.AdamW)
    decayed = {id(p) for g in adamw.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    free = {id(p) for g in adamw.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}
    assert free == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}


def test_the_fused_optimizer_makes_the_same_update_as_the_loop() -> None:
    """make_optimizer picks PyTorch's fused Adam(W) kernel on a CPU; its steps equal those of
    the reference per-tensor loop (fused=False, foreach=False) to float32 rounding."""
    from taa.torch.training.loop import make_optimizer

    for decay in (0.0, 0.1):
        torch.manual_seed(0)
        ours = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3))
        reference = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3))
        reference.load_state_dict(ours.state_dict())
        start = ours[0].weight.detach().clone()
        optimizer = make_optimizer(ours, TrainConfig(lr=1e-2, weight_decay=decay, adam_beta2=0.98, adam_eps=1e-9))
        assert all(group["fused"] for group in optimizer.param_groups)
        groups = [
            {"params": [p for p in reference.parameters() if p.dim() >= 2], "weight_decay": decay},
            {"params": [p for p in reference.parameters() if p.dim() < 2], "weight_decay": 0.0},
        ]
        kind = torch.optim.AdamW if decay else torch.optim.Adam
        loop = kind(groups, lr=1e-2, betas=(0.9, 0.98), eps=1e-9, fused=False, foreach=False)
        assert_optimizers_agree(ours, optimizer, reference, loop, torch.randn(32, 8), steps=5)
        assert (ours[0].weight - start).abs().max() > 1e-3  # the steps did move the weights


def test_layer_lr_decay_scales_each_depth_and_the_trainer_applies_it() -> None:
    """layer_lr_decay=0.5 on a 2-layer BERT classifier: the head (and pooler) learn at the
    scheduled rate, layer 2 at half, layer 1 at a quarter, the embeddings at an eighth;
    weight decay still spares biases and norm gains at every depth."""
    from taa.config import BertConfig, TrainConfig
    from taa.torch import BertForSequenceClassification
    from taa.torch.training.loop import Trainer, make_optimizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=11, n_layers=2, d_model=8, n_heads=2, d_ff=16, max_length=8, num_labels=2)
    model = BertForSequenceClassification(config)
    train = TrainConfig(lr=1e-3, schedule="constant", warmup_steps=0, weight_decay=0.1, layer_lr_decay=0.5, steps=1)
    optimizer = make_optimizer(model, train)
    scale = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    expected = {"bert.embeddings.": 0.125, "bert.encoder.layers.0.": 0.25, "bert.encoder.layers.1.": 0.5}
    for name, p in model.named_parameters():
        want = next((v for prefix, v in expected.items() if name.startswith(prefix)), 1.0)
        assert scale[id(p)] == want, name
        assert decay[id(p)] == (0.1 if p.dim() >= 2 else 0.0), name
    assert len(scale) == sum(1 for _ in model.parameters())

    def loss(model, batch):
        return model(batch).square().sum(), batch.numel()

    batches = iter([torch.randint(0, 11, (2, 5))] * 2)
    trainer = Trainer(model, train, loss, batches, d_model=8, progress=False)
    trainer.fit()
    rates = {g["lr_scale"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert rates == {s: pytest.approx(1e-3 * s) for s in (0.125, 0.25, 0.5, 1.0)}
    # decay 1 (the default) keeps the plain two groups, so older optimizer states still load
    plain = make_optimizer(model, TrainConfig(weight_decay=0.1))
    assert len(plain.param_groups) == 2 and "lr_scale" not in plain.param_groups[0]


def test_layer_lr_decay_rejects_a_model_with_two_stacks() -> None:
    from taa.torch.training.loop import layer_depths

    assert layer_depths(["embedding.weight", "stack.layers.0.w", "stack.layers.1.w", "head.w"]) == {
        "embedding.weight": 0, "stack.layers.0.w": 1, "stack.layers.1.w": 2, "head.w": 3,
    }
    with pytest.raises(ValueError, match="one stack of layers"):
        layer_depths(["encoder.layers.0.w", "decoder.layers.0.w"])
    with pytest.raises(ValueError, match="layer_lr_decay"):
        TrainConfig(layer_lr_decay=0.0)


def test_a_run_says_why_it_stopped() -> None:
    """Every step done, the time budget spent, or the validation metric no longer improving."""
    _, result = _train(0)
    assert result.stop_reason == "steps" and result.steps == 12
    config = preset("copy-task", d_model=32, d_ff=64)
    batches = CopyBatches(CopyTaskConfig(length=6), 11, 8, 1, seed=0)

    def trainer(evaluate=None, **train) -> Trainer:
        return Trainer(Transformer(config), TrainConfig(batch_size=8, **train), seq2seq_loss(0.0, 0), batches,
                       d_model=32, evaluate=evaluate, progress=False)

    spent = trainer(steps=50, max_minutes=1e-6).fit()  # a budget one step exceeds
    assert spent.stop_reason == "time_budget" and spent.steps == 1
    losses = iter([3.0, 2.0, 2.5, 2.4, 2.2, 1.0])  # the best at step 2, then three without improvement
    stopped = trainer(lambda model: {"val_loss": next(losses)}, steps=50, eval_every=1, early_stopping=3).fit()
    assert stopped.stop_reason == "early_stopping" and stopped.steps == 5
    assert stopped.history[-1][0] == 5  # the interval since the last log is logged too (log_every is larger)


def test_an_older_state_file_with_a_stop_flag_still_resumes(tmp_path) -> None:
    import json

    config = preset("copy-task", d_model=32, d_ff=64)
    train = TrainConfig(steps=2, batch_size=8)
    batches = CopyBatches(CopyTaskConfig(length=6), 11, 8, 1, seed=0)
    Trainer(Transformer(config), train, seq2seq_loss(0.0, 0), batches, d_model=32, out=tmp_path,
            progress=False).fit()
    state = tmp_path / "state" / "trainer.json"
    saved = json.loads(state.read_text())
    del saved["trainer"]["stop_reason"]
    for flag, reason in ((False, ""), (True, "early_stopping")):
        saved["trainer"]["stopped_early"] = flag
        state.write_text(json.dumps(saved))
        resumed = Trainer(Transformer(config), train, seq2seq_loss(0.0, 0), batches, d_model=32, progress=False)
        resumed.load_state(tmp_path)
        assert resumed.state.stop_reason == reason and resumed.state.step == 2


def test_a_non_finite_loss_is_never_applied_stop_or_skip() -> None:
    """The loss of step 3 is nan: with nonfinite=stop the run raises, naming the step, and the
    weights are those after step 2; with skip it goes on at half the rate, step 3 recorded."""
    import math

    from taa.training.divergence import DivergenceError

    config = preset("copy-task", d_model=32, d_ff=64)
    compute = seq2seq_loss(0.0, 0)

    def run(steps: int, **train) -> tuple[Trainer, Transformer]:
        seed_everything(0)
        model, calls = Transformer(config), iter(range(1, 100))
        batches = CopyBatches(CopyTaskConfig(length=6), 11, 8, 1, seed=0)

        def loss(model, batch):
            loss_sum, n_tokens = compute(model, batch)
            return (loss_sum * math.nan if next(calls) == 3 else loss_sum), n_tokens

        trainer = Trainer(model, TrainConfig(steps=steps, batch_size=8, warmup_steps=2, **train), loss, batches,
                          d_model=32, progress=False)
        return trainer, model

    trainer, model = run(5)
    with pytest.raises(DivergenceError, match=r"^training diverged at step 3: the loss is nan \(lr [0-9.e+-]+\); "
                                              r"lower train.lr or set train.nonfinite: skip$"):
        trainer.fit()
    two_steps, _ = run(2)
    two_steps.fit()
    for (name, x), (_, y) in zip(model.state_dict().items(), two_steps.model.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)

    skipping, _ = run(5, nonfinite="skip", max_skipped_steps=1)
    result = skipping.fit()
    assert result.skipped_steps == [3] and result.steps == 5 and skipping.weights_are_finite()
    assert skipping.learning_rate() == pytest.approx(0.5 * TrainConfig().lr * skipping.schedule(5))
