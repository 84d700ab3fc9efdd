"""The Decision Transformer in torch: the interleaved tokens, causality, padding, and
transformers' DecisionTransformerModel weight for weight."""

from __future__ import annotations

import pytest
import torch

from taa import config as cfg
from taa.torch.models.decision_transformer import DecisionTransformer


def inputs(b=2, t=5, state_dim=4, act_dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, t, state_dim, generator=g), torch.randn(b, t, act_dim, generator=g),
            torch.randn(b, t, 1, generator=g), torch.randint(0, 50, (b, t), generator=g))


def test_outputs_and_the_action_never_sees_its_own_step_or_the_future():
    torch.manual_seed(0)
    model = DecisionTransformer(cfg.preset("dt-tiny")).eval()
    states, actions, returns, steps = inputs()
    with torch.no_grad():
        state_pred, action_pred, return_pred = model(states, actions, returns, steps)
        assert state_pred.shape == (2, 5, 4) and action_pred.shape == (2, 5, 2) and return_pred.shape == (2, 5, 1)
        changed = actions.clone()
        changed[:, 2:] += 1.0  # a_2 onwards: a_0, a_1, a_2's predictions must not move
        _, again, _ = model(states, changed, returns, steps)
    torch.testing.assert_close(again[:, :3], action_pred[:, :3])
    assert not torch.allclose(again[:, 3:], action_pred[:, 3:])


def test_left_padding_changes_nothing_at_the_real_steps():
    torch.manual_seed(0)
    model = DecisionTransformer(cfg.preset("dt-tiny")).eval()
    states, actions, returns, steps = inputs(b=1, t=3)
    padded = [torch.cat([torch.zeros_like(x[:, :2]), x], dim=1) for x in (states, actions, returns, steps)]
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    with torch.no_grad():
        _, short, _ = model(states, actions, returns, steps)
        _, long, _ = model(*padded, attention_mask=mask)
    torch.testing.assert_close(long[:, 2:], short, atol=1e-6, rtol=0)


def test_a_time_step_past_the_table_is_one_line():
    model = DecisionTransformer(cfg.preset("dt-tiny"))
    states, actions, returns, steps = inputs()
    with pytest.raises(ValueError, match="time step 50 is past max_ep_len=50"):
        model(states, actions, returns, steps.fill_(50))


@pytest.mark.parametrize("tanh", [True, False])
def test_transformers_decision_transformer_both_ways(tmp_path, tanh):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    from taa.torch.convert.hf import load_hf_folder, save_hf_folder

    torch.manual_seed(0)
    config = transformers.DecisionTransformerConfig(state_dim=4, act_dim=2, hidden_size=16, n_layer=2, n_head=2,
                                                    max_ep_len=50, action_tanh=tanh)
    theirs = transformers.DecisionTransformerModel(config).eval()
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.normal_(0.0, 0.2)
    theirs.save_pretrained(tmp_path / "hf", safe_serialization=True)
    ours = load_hf_folder(tmp_path / "hf")
    assert type(ours) is DecisionTransformer and ours.config.action_tanh is tanh
    states, actions, returns, steps = inputs()
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    with torch.no_grad():
        for attention_mask in (None, mask):
            expected = theirs(states=states, actions=actions, returns_to_go=returns, timesteps=steps,
                              attention_mask=attention_mask, return_dict=False)
            mine = ours(states, actions, returns, steps, attention_mask)
            real = (mask if attention_mask is not None else torch.ones_like(mask)).bool()
            for a, b in zip(mine, expected):
                torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=0)

    save_hf_folder(ours, tmp_path / "back")
    again, info = transformers.DecisionTransformerModel.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    with torch.no_grad():
        back = again.eval()(states=states, actions=actions, returns_to_go=returns, timesteps=steps, return_dict=False)
        first = theirs(states=states, actions=actions, returns_to_go=returns, timesteps=steps, return_dict=False)
    for a, b in zip(back, first):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    written = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert not written["encoder.wpe.weight"][1:].any() and not written["encoder.wte.weight"].any()


def test_a_discrete_model_reads_back_discrete_with_its_context(tmp_path):
    transformers = pytest.importorskip("transformers")
    from taa.torch.convert.hf import load_hf_folder, save_hf_folder

    ours = DecisionTransformer(cfg.preset("dt-tiny", discrete=True, action_tanh=False, context=7)).eval()
    save_hf_folder(ours, tmp_path / "hf")
    theirs = transformers.DecisionTransformerModel.from_pretrained(tmp_path / "hf").eval()
    assert theirs.config.discrete is True and theirs.config.context == 7  # kept as transformers keeps extra keys
    again = load_hf_folder(tmp_path / "hf")
    assert again.config.discrete and again.config.context == 7 and not again.config.action_tanh
    states, actions, returns, steps = inputs()
    with torch.no_grad():
        torch.testing.assert_close(again(states, actions, returns, steps)[1], ours(states, actions, returns, steps)[1])
