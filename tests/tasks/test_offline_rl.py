"""The offline_rl task: windows of trajectories, a short Decision Transformer run on
generated CartPole data, playing it (taa evaluate --env), behaviour cloning, Pendulum's
continuous actions, and a Hugging Face Decision Transformer playing. Skipped without the
[rl] extra."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("gymnasium")

from taa import config as cfg  # noqa: E402
from taa.cli import main  # noqa: E402
from taa.data.trajectories import Trajectories, save_npz  # noqa: E402
from taa.tasks.offline_rl import (  # noqa: E402
    DecisionTransformerPolicy,
    PolicyInputs,
    Steps,
    TrajectoryWindows,
    evaluate_steps,
)
from taa.torch.models.decision_transformer import DecisionTransformer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "dt-cartpole.yaml"
TINY = ["model.d_model=16", "model.n_heads=2", "model.d_ff=32", "model.n_layers=1", "model.context=4",
        "train.steps=40", "train.max_minutes=0", "train.warmup_steps=5", "train.log_every=20", "train.threads=1",
        "data.episodes=40", "data.eval_episodes=3", "train.batch_size=16"]


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def taa_train(out, *settings: str, recipe=RECIPE):
    args = ["train", str(recipe), "--out", str(out), "--tracking", "none", "--no-progress", "--json"]
    for setting in settings:
        args += ["--set", setting]
    return run(*args)


def counting_data() -> Trajectories:
    """Two episodes whose states count their steps: 0..5 and 100..102."""
    states = [np.arange(6, dtype=np.float32)[:, None].repeat(4, 1), 100 + np.arange(3, dtype=np.float32)[:, None]
              .repeat(4, 1)]
    return Trajectories.from_episodes(states, [np.array([0, 1, 0, 1, 0, 1]), np.array([1, 1, 1])],
                                      [np.ones(6), np.full(3, 2.0)], [True, False])


def identity_inputs(scale=1.0, returns_to_go=True) -> PolicyInputs:
    return PolicyInputs("", True, [0.0] * 4, [1.0] * 4, scale, returns_to_go, [], [], 6.0)


def test_windows_pad_past_the_episode_end_and_resume():
    steps = Steps.of(counting_data(), identity_inputs(scale=2.0), act_dim=2)
    batch = steps.windows(np.array([0, 1]), np.array([4, 0]), context=4)
    assert batch.real.tolist() == [[True, True, False, False], [True, True, True, False]]
    assert batch.states[0, :, 0].tolist() == [4.0, 5.0, 0.0, 0.0] and batch.states[1, :3, 0].tolist() == [100, 101, 102]
    assert batch.timesteps.tolist() == [[4, 5, 0, 0], [0, 1, 2, 0]]
    assert batch.returns_to_go[0, :2, 0].tolist() == [1.0, 0.5]  # returns-to-go 2 and 1, scaled by 1/2
    assert batch.actions[0, 0].tolist() == [1.0, 0.0] and batch.targets[0, :2].tolist() == [0, 1]
    cloning = Steps.of(counting_data(), identity_inputs(returns_to_go=False), act_dim=2)
    assert not cloning.returns.any()
    stream = TrajectoryWindows(steps, batch_size=8, context=4, seed=0)
    next(stream)
    state = stream.state_dict()
    expected = next(stream)
    resumed = TrajectoryWindows(steps, batch_size=8, context=4, seed=0)
    resumed.load_state_dict(state)
    torch.testing.assert_close(next(resumed).states, expected.states)


def test_the_policy_lowers_its_target_by_each_reward():
    torch.manual_seed(0)
    model = DecisionTransformer(cfg.preset("dt-tiny", discrete=True, action_tanh=False)).eval()
    policy = DecisionTransformerPolicy(model, identity_inputs(), target=10.0, episodes=2, max_steps=8)
    rows = np.array([0, 1])
    for rewards in ([1.0, 3.0], [1.0, 3.0], [1.0, 3.0]):
        actions = policy.act(np.zeros((2, 4), np.float32), rows)
        assert actions.shape == (2,) and set(actions.tolist()) <= {0, 1}
        policy.on_step(rows, np.array(rewards))
    np.testing.assert_allclose(policy.returns[:, :3], [[10, 9, 8], [10, 7, 4]])
    assert policy.actions[:, :3].sum(axis=-1).tolist() == [[1, 1, 1], [1, 1, 1]]  # one-hot, as it acted


def test_continuous_actions_map_to_the_environment_and_back():
    inputs = PolicyInputs("Pendulum-v1", False, [0.0] * 3, [1.0] * 3, 1.0, True, [-2.0], [2.0], 0.0)
    torques = np.array([[-2.0], [0.0], [1.0], [2.0]], dtype=np.float32)
    model_side = inputs.action_inputs(torques, 1)
    np.testing.assert_allclose(model_side, [[-1.0], [0.0], [0.5], [1.0]])
    np.testing.assert_allclose(inputs.env_actions(model_side), torques)
    np.testing.assert_allclose(inputs.env_actions(np.array([[3.0]])), [[2.0]])  # past the bound: clipped


def test_a_short_cartpole_run_plays_repeatably_and_follows_its_target(tmp_path):
    result = taa_train(tmp_path / "dt", *TINY)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["metrics"]
    assert metrics["steps"] == 40 and metrics["data_episodes"] == 40 and metrics["train_episodes"] == 38
    assert metrics["eval_episodes"] == 3 and metrics["eval_target_return"] == metrics["data_max_return"] == 500.0
    assert 0 <= metrics["eval_solved_share"] <= 1 and 0 < metrics["val_accuracy"] <= 1
    inputs = json.loads((tmp_path / "dt" / "offline_rl.json").read_text())
    assert inputs["env"] == "CartPole-v1" and inputs["returns_to_go"] and inputs["return_scale"] == 500.0
    assert len(inputs["state_mean"]) == 4

    args = ["evaluate", "--checkpoint", str(tmp_path / "dt"), "--env", "CartPole-v1", "--episodes", "3",
            "--seed", "0", "--json"]
    first, again = run(*args), run(*args)
    assert first.exit_code == 0, first.output
    scores = json.loads(first.output)
    assert scores == json.loads(again.output)  # seeded: the same episodes
    assert scores["episodes"] == 3 and scores["target_return"] == 500.0
    assert scores["mean_return"] == metrics["eval_mean_return"]  # the run's own evaluation: seed 0 too
    assert {"mean_return", "std_return", "episodes"} <= set(scores)

    curve = run("evaluate", "--checkpoint", str(tmp_path / "dt"), "--env", "CartPole-v1", "--episodes", "2",
                "--target-return", "20,500", "--plot", str(tmp_path / "curve.png"))
    assert curve.exit_code == 0, curve.output
    assert "target 20 |" in curve.output and (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"

    for bad, message in ((["--target-return", "100", "--plot", str(tmp_path / "x.png")], "two or more"),
                         (["--target-return", "1,abc"], "'abc' is not a number"),
                         (["--env", "Pendulum-v1"], "Pendulum-v1 has states of 3 numbers"),
                         (["--data", str(tmp_path / "curve.png")], "goes without --data")):
        refused = run("evaluate", "--checkpoint", str(tmp_path / "dt"), "--episodes", "1",
                      *(["--env", "CartPole-v1"] if "--env" not in bad else []), *bad)
        assert refused.exit_code != 0 and message in refused.output, refused.output
        assert "Traceback" not in refused.output


def test_behaviour_cloning_and_a_trajectories_file(tmp_path):
    data = tmp_path / "cartpole.npz"
    made = run("trajectories", "--env", "CartPole-v1", "--out", str(data), "--episodes", "12", "--solved", "475",
               "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["episodes_by_policy"] == {"random": 2, "noisy": 2, "medium": 6, "expert": 2}
    again = run("trajectories", "--env", "CartPole-v1", "--out", str(data))
    assert again.exit_code != 0 and "exists: give --overwrite" in again.output
    result = taa_train(tmp_path / "bc", *TINY, f"data.path={data}", "data.returns_to_go=false",
                       "data.valid_fraction=0.2")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["metrics"]
    assert metrics["data_episodes"] == 12 and metrics["valid_episodes"] == 2
    assert not json.loads((tmp_path / "bc" / "offline_rl.json").read_text())["returns_to_go"]
    played = run("evaluate", "--checkpoint", str(tmp_path / "bc"), "--env", "", "--episodes", "2", "--json")
    assert played.exit_code == 0 and json.loads(played.output)["returns_to_go"] is False


def test_data_that_does_not_fit_the_model_is_one_line(tmp_path):
    wide = Trajectories.from_episodes([np.zeros((3, 5), np.float32)], [np.array([0, 1, 0])], [np.ones(3)], [True])
    save_npz(wide, tmp_path / "wide.npz")
    result = taa_train(tmp_path / "out", *TINY, f"data.path={tmp_path / 'wide.npz'}")
    assert result.exit_code != 0 and "wide.npz: states of 5 numbers; model.state_dim=4" in result.output
    result = taa_train(tmp_path / "out", *TINY, "data.env=Pendulum-v1")
    assert result.exit_code != 0 and "Pendulum-v1 has states of 3 numbers" in result.output
    result = taa_train(tmp_path / "out", *TINY, "data.mixture={expert: 1, best: 2}")
    assert result.exit_code != 0 and "'best' is not a policy kind" in result.output


def test_pendulum_continuous_actions_train_and_play(tmp_path):
    result = taa_train(tmp_path / "pendulum", *TINY, "model.preset=dt-pendulum", "data.env=Pendulum-v1",
                       "data.episodes=10", "data.eval_episodes=2", "data.solved=-200",
                       recipe=ROOT / "recipes" / "dt-pendulum.yaml")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["metrics"]
    assert metrics["eval_mean_length"] == 200 and metrics["eval_mean_return"] < 0 and "val_accuracy" not in metrics
    inputs = json.loads((tmp_path / "pendulum" / "offline_rl.json").read_text())
    assert inputs["action_low"] == [-2.0] and inputs["action_high"] == [2.0] and not inputs["discrete"]


def test_a_hugging_face_decision_transformer_plays(tmp_path):
    pytest.importorskip("transformers")
    result = taa_train(tmp_path / "dt", *TINY, "data.eval_episodes=0")
    assert result.exit_code == 0, result.output
    converted = run("convert", "--to-hf", str(tmp_path / "dt"), "--out", str(tmp_path / "hf"))
    assert converted.exit_code == 0, converted.output
    played = run("evaluate", "--checkpoint", str(tmp_path / "hf"), "--env", "CartPole-v1", "--episodes", "2",
                 "--target-return", "1", "--json")
    assert played.exit_code == 0, played.output
    assert json.loads(played.output)["episodes"] == 2
    unnamed = run("evaluate", "--checkpoint", str(tmp_path / "hf"), "--episodes", "2")
    assert unnamed.exit_code != 0 and "names no environment: give --env" in unnamed.output


@torch.no_grad()
def test_validation_reads_every_step_once():
    torch.manual_seed(0)
    model = DecisionTransformer(cfg.preset("dt-tiny", discrete=True, action_tanh=False, context=4)).eval()
    figures = evaluate_steps(model, Steps.of(counting_data(), identity_inputs(), act_dim=2), batch_size=2)
    assert 0 < figures["loss"] and 0 <= figures["accuracy"] <= 1
    assert figures["accuracy"] * 9 == pytest.approx(round(figures["accuracy"] * 9))  # 9 steps, each counted once
