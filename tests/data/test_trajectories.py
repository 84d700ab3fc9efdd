"""Trajectory files: taa's .npz layout both ways, Minari's HDF5 layout, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taa.data.text import DataError
from taa.data.trajectories import Trajectories, read_minari, read_npz, read_trajectories, save_npz


def two_episodes(discrete: bool = True) -> Trajectories:
    """Episode 0: 3 steps, rewards 1, 2, 3 (ended); episode 1: 2 steps, rewards 10, 20 (cut by the time limit)."""
    observations = [np.arange(6, dtype=np.float32).reshape(3, 2), np.arange(4, dtype=np.float32).reshape(2, 2) + 100]
    actions = [np.array([0, 1, 1]), np.array([1, 0])] if discrete else \
        [np.array([[0.5], [-0.5], [1.0]]), np.array([[0.0], [2.0]])]
    rewards = [np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0])]
    data = Trajectories.from_episodes(observations, actions, rewards, [True, False], env_id="CartPole-v1")
    data.policies = np.array(["expert", "random"])
    return data


def test_returns_returns_to_go_and_timesteps():
    data = two_episodes()
    np.testing.assert_array_equal(data.starts, [0, 3])
    np.testing.assert_allclose(data.returns(), [6.0, 30.0])
    np.testing.assert_allclose(data.returns_to_go(), [6.0, 5.0, 3.0, 30.0, 20.0])
    np.testing.assert_array_equal(data.timesteps(), [0, 1, 2, 0, 1])
    second = data.subset([1])
    np.testing.assert_allclose(second.rewards, [10.0, 20.0])
    assert second.policies.tolist() == ["random"] and second.lengths.tolist() == [2]
    summary = data.summary(solved=20)
    assert summary["episodes"] == 2 and summary["steps"] == 5 and summary["solved_share"] == 0.5
    assert summary["episodes_by_policy"] == {"expert": 1, "random": 1}


@pytest.mark.parametrize("discrete", [True, False])
def test_npz_round_trip(tmp_path, discrete):
    data = two_episodes(discrete)
    path = save_npz(data, tmp_path / "sub" / "data.npz")
    again = read_trajectories(path)
    for name in ("observations", "actions", "rewards", "lengths", "terminated", "policies"):
        np.testing.assert_array_equal(getattr(again, name), getattr(data, name))
    assert again.env_id == "CartPole-v1" and again.discrete == discrete
    assert again.actions.dtype == (np.int64 if discrete else np.float32)
    assert not list(tmp_path.glob("sub/*.partial"))


def write_npz(path, **changes):
    data = two_episodes()
    arrays = dict(observations=data.observations, actions=data.actions, rewards=data.rewards,
                  lengths=data.lengths, terminated=data.terminated)
    arrays.update(changes)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


@pytest.mark.parametrize("changes, message", [
    (dict(rewards=None), "no 'rewards' array"),
    (dict(lengths=np.array([3, 3])), "lengths sum to 6 steps; observations has 5"),
    (dict(lengths=np.array([5, 0])), "lengths must be positive integers"),
    (dict(rewards=np.array([1.0, np.nan, 0.0, 0.0, 0.0])), "rewards row 1 is not finite"),
    (dict(actions=np.array([0, 1])), "actions has 2 rows; observations has 5"),
    (dict(actions=np.array([0, -1, 0, 0, 0])), "actions row 1 is negative"),
    (dict(terminated=np.array([True])), "terminated has 1 entries for 2 episodes"),
    (dict(observations=np.zeros(5)), "observations has shape (5,)"),
])
def test_npz_errors_name_the_file_and_the_array(tmp_path, changes, message):
    path = write_npz(tmp_path / "bad.npz", **changes)
    with pytest.raises(DataError, match=r"bad\.npz: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        read_npz(path)


def test_a_pickled_array_or_a_file_that_is_no_npz_is_refused(tmp_path):
    pickled = write_npz(tmp_path / "pickled.npz", policies=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="pickled.npz: holds pickled .object. arrays"):
        read_npz(pickled)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match="text.npz: not a readable .npz file"):
        read_npz(tmp_path / "text.npz")
    with pytest.raises(DataError, match="no such file"):
        read_trajectories(tmp_path / "missing.npz")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="neither a .npz trajectories file nor a Minari dataset"):
        read_trajectories(tmp_path / "data.csv")


def write_minari(folder, episodes, env_id="CartPole-v1", drop=None):
    """A dataset folder in Minari's HDF5 layout: <id>/data/main_data.hdf5 and metadata.json."""
    h5py = pytest.importorskip("h5py")
    data_dir = folder / "cartpole-mixed-v0" / "data"
    data_dir.mkdir(parents=True)
    with h5py.File(data_dir / "main_data.hdf5", "w") as handle:
        for k, (observations, actions, rewards) in enumerate(episodes):
            group = handle.create_group(f"episode_{k}")
            group["observations"] = observations
            group["actions"] = actions
            group["rewards"] = rewards
            terminations = np.zeros(len(rewards), dtype=bool)
            terminations[-1] = True
            group["terminations"] = terminations
            group["truncations"] = np.zeros(len(rewards), dtype=bool)
            if drop:
                del group[drop]
    (data_dir / "metadata.json").write_text(json.dumps({"env_spec": json.dumps({"id": env_id})}))
    return folder / "cartpole-mixed-v0"


def test_minari_datasets_are_read_without_minari(tmp_path):
    episodes = [(np.arange(8, dtype=np.float64).reshape(4, 2), np.array([0, 1, 0]), np.array([1.0, 1.0, 1.0])),
                (np.ones((3, 2)), np.array([1, 1]), np.array([5.0, 5.0]))]  # T + 1 observations each
    folder = write_minari(tmp_path, episodes)
    for path in (folder, folder / "data", folder / "data" / "main_data.hdf5"):
        data = read_trajectories(path)
        assert data.lengths.tolist() == [3, 2] and data.env_id == "CartPole-v1"
        np.testing.assert_array_equal(data.observations[:3], episodes[0][0][:3])  # the last observation dropped
        np.testing.assert_allclose(data.returns(), [3.0, 10.0])
        assert data.terminated.tolist() == [True, True] and data.discrete


def test_minari_errors(tmp_path):
    broken = write_minari(tmp_path / "a", [(np.zeros((3, 2)), np.array([0, 1]), np.array([1.0, 1.0]))],
                          drop="actions")
    with pytest.raises(DataError, match="episode_0 has no 'actions' array"):
        read_minari(broken)
    uneven = write_minari(tmp_path / "b", [(np.zeros((5, 2)), np.array([0, 1]), np.array([1.0, 1.0]))])
    with pytest.raises(DataError, match="episode_0 has 5 observations for 2 steps"):
        read_minari(uneven)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no main_data.hdf5"):
        read_minari(tmp_path / "empty")
