"""Policies and episodes in gymnasium's environments: the scripted experts' quality, seeded
episodes, and a generated dataset's mixture. Skipped without the [rl] extra."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from taa.data.text import DataError  # noqa: E402
from taa.rl.episodes import env_info, generate, run_episodes  # noqa: E402
from taa.rl.policies import (  # noqa: E402
    MEDIUM_CARTPOLE,
    CartPoleController,
    NoisyPolicy,
    PendulumController,
    RandomPolicy,
)


def test_env_info_reads_the_spaces():
    cartpole = env_info("CartPole-v1")
    assert (cartpole.state_dim, cartpole.discrete, cartpole.act_dim, cartpole.max_steps) == (4, True, 2, 500)
    pendulum = env_info("Pendulum-v1")
    assert (pendulum.state_dim, pendulum.discrete, pendulum.act_dim, pendulum.max_steps) == (3, False, 1, 200)
    np.testing.assert_array_equal(pendulum.low, [-2.0]) and np.testing.assert_array_equal(pendulum.high, [2.0])
    with pytest.raises(DataError, match="environment 'NoSuchEnv-v0'"):
        env_info("NoSuchEnv-v0")


def test_the_scripted_experts_solve_their_environments_and_random_play_does_not():
    expert = run_episodes("CartPole-v1", CartPoleController(), 5, seed=0)
    assert expert.returns.tolist() == [500.0] * 5
    random = run_episodes("CartPole-v1", RandomPolicy(np.random.default_rng(0), actions=2), 5, seed=0)
    assert random.returns.mean() < 100
    drifting = run_episodes("CartPole-v1", CartPoleController(MEDIUM_CARTPOLE), 10, seed=0)
    assert 100 < drifting.returns.mean() < 300  # the pole up, the cart off the track
    swing = run_episodes("Pendulum-v1", PendulumController(), 10, seed=0)
    assert swing.returns.mean() > -250  # swung up and held (random play: about -1,200)
    weak = run_episodes("Pendulum-v1", PendulumController(kp=4.0, kd=1.0), 10, seed=0)
    assert -700 < weak.returns.mean() < -300
    low, high = np.array([-2.0], np.float32), np.array([2.0], np.float32)
    flailing = run_episodes("Pendulum-v1", RandomPolicy(np.random.default_rng(0), low=low, high=high), 10, seed=0)
    assert flailing.returns.mean() < -700


def test_episodes_repeat_with_their_seed_and_report_each_reward():
    def noisy(seed):
        rng = np.random.default_rng(seed)
        return NoisyPolicy(CartPoleController(), RandomPolicy(rng, actions=2), rng, np.full(4, 0.5))

    heard = []
    first = run_episodes("CartPole-v1", noisy(1), 4, seed=10, record=True,
                         on_step=lambda rows, rewards: heard.append(rewards.sum()))
    again = run_episodes("CartPole-v1", noisy(1), 4, seed=10, record=True)
    np.testing.assert_array_equal(first.returns, again.returns)
    np.testing.assert_array_equal(first.trajectories.observations, again.trajectories.observations)
    assert sum(heard) == first.returns.sum() and first.trajectories.lengths.tolist() == first.lengths.tolist()
    other = run_episodes("CartPole-v1", noisy(1), 4, seed=20)
    assert other.returns.tolist() != first.returns.tolist()
    capped = run_episodes("CartPole-v1", CartPoleController(), 2, seed=0, max_steps=30)
    assert capped.lengths.tolist() == [30, 30]


def test_generate_mixes_policies_in_the_shares_asked_for():
    data = generate("CartPole-v1", 20, {"random": 0.25, "noisy": 0.25, "medium": 0.25, "expert": 0.25}, seed=3)
    assert data.summary()["episodes_by_policy"] == {"random": 5, "noisy": 5, "medium": 5, "expert": 5}
    returns = data.returns()
    assert (returns[data.policies == "expert"] == 500).all() and returns[data.policies == "random"].max() < 200
    assert returns[data.policies == "medium"].max() < 500
    assert data.env_id == "CartPole-v1" and data.discrete and data.observations.shape[1] == 4
    again = generate("CartPole-v1", 20, {"random": 0.25, "noisy": 0.25, "medium": 0.25, "expert": 0.25}, seed=3)
    np.testing.assert_array_equal(again.actions, data.actions)
    pendulum = generate("Pendulum-v1", 4, {"noisy": 1.0}, seed=0)
    assert not pendulum.discrete and pendulum.actions.shape == (800, 1) and np.abs(pendulum.actions).max() <= 2.0
    with pytest.raises(DataError, match="mixture: 'greedy' is not a policy kind"):
        generate("CartPole-v1", 4, {"greedy": 1.0})
    with pytest.raises(DataError, match="'MountainCar-v0' has no scripted controller"):
        generate("MountainCar-v0", 4, {"expert": 1.0})
    only_random = generate("MountainCar-v0", 1, {"random": 1.0})
    assert only_random.lengths.tolist() == [200]
