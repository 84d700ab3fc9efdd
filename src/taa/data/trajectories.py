"""Offline trajectories: taa's ``.npz`` layout, Minari datasets, and what the Decision
Transformer reads from them.

**The .npz layout** (:func:`save_npz`, :func:`read_npz`): the episodes' steps one after
another, and each episode's length to cut them apart again.

===============  ====================  ==================================================
key              shape, type           meaning
===============  ====================  ==================================================
``observations`` (N, state_dim) f32    s_t, the state an action was taken in
``actions``      (N,) int64            discrete actions, or
                 (N, act_dim) f32      continuous ones, in the environment's units
``rewards``      (N,) f32              r_t, the reward that action got
``lengths``      (E,) int64            steps of each episode; they sum to N
``terminated``   (E,) bool             the episode ended in a terminal state (not a time limit)
``policies``     (E,) str, optional    what made each episode ("random", "noisy", "expert")
``env_id``       () str, optional      the gymnasium environment ("CartPole-v1")
===============  ====================  ==================================================

N steps in E episodes; episode e is rows ``lengths[:e].sum()`` to ``lengths[:e+1].sum()``.
The file is read with ``allow_pickle=False``: a file that needs unpickling is refused.

**Minari** (:func:`read_minari`): a dataset folder ``<id>/data/main_data.hdf5`` (or that
file), one HDF5 group per episode ``episode_<k>`` with ``observations`` (T + 1 rows: the
last observation comes after the last action, and is dropped here), ``actions``,
``rewards``, ``terminations`` and ``truncations``; ``data/metadata.json``'s ``env_spec``
names the environment. Read with h5py (the ``[rl]`` extra); Minari itself is not needed.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taa.data.text import DataError

NPZ_KEYS = ("observations", "actions", "rewards", "lengths", "terminated")  # required
MINARI_FILE = "main_data.hdf5"


@dataclass
class Trajectories:
    """Episodes of (state, action, reward) steps, stored flat (the .npz layout above)."""

    observations: np.ndarray  # (N, state_dim) float32
    actions: np.ndarray  # (N,) int64 or (N, act_dim) float32
    rewards: np.ndarray  # (N,) float32
    lengths: np.ndarray  # (E,) int64
    terminated: np.ndarray  # (E,) bool
    policies: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))  # (E,) or empty
    env_id: str = ""
    source: str = ""  # where it was read from, for error messages

    @property
    def discrete(self) -> bool:
        return self.actions.ndim == 1

    @property
    def state_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def starts(self) -> np.ndarray:
        """(E,) the row of each episode's first step."""
        return (np.cumsum(self.lengths) - self.lengths).astype(np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    def returns(self) -> np.ndarray:
        """(E,) each episode's total reward."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.starts) if len(self) else np.zeros(0)

    def returns_to_go(self) -> np.ndarray:
        """(N,) R_t: the rewards from step t to its episode's end."""
        out = np.zeros(len(self.rewards), dtype=np.float64)
        for start, length in zip(self.starts, self.lengths):
            out[start:start + length] = np.cumsum(self.rewards[start:start + length][::-1])[::-1]
        return out

    def timesteps(self) -> np.ndarray:
        """(N,) t: each step's place in its episode, from 0."""
        return np.arange(len(self.rewards)) - np.repeat(self.starts, self.lengths)

    def subset(self, episodes: Sequence[int] | np.ndarray) -> Trajectories:
        """The episodes ``episodes``, in that order."""
        episodes = np.asarray(episodes, dtype=np.int64)
        starts = self.starts
        rows = np.concatenate([np.arange(starts[e], starts[e] + self.lengths[e]) for e in episodes]) \
            if len(episodes) else np.zeros(0, dtype=np.int64)
        return Trajectories(self.observations[rows], self.actions[rows], self.rewards[rows], self.lengths[episodes],
                            self.terminated[episodes], self.policies[episodes] if len(self.policies) else self.policies,
                            self.env_id, self.source)

    @classmethod
    def from_episodes(cls, observations: Sequence[np.ndarray], actions: Sequence[np.ndarray],
                      rewards: Sequence[np.ndarray], terminated: Sequence[bool], env_id: str = "") -> Trajectories:
        """One array per episode of each kind -> the flat layout."""
        return cls(np.concatenate(observations).astype(np.float32), _actions(np.concatenate(actions)),
                   np.concatenate(rewards).astype(np.float32), np.array([len(r) for r in rewards], dtype=np.int64),
                   np.asarray(terminated, dtype=bool), env_id=env_id)

    @classmethod
    def concatenate(cls, parts: Sequence[Trajectories]) -> Trajectories:
        policies = [p.policies if len(p.policies) == len(p) else np.array([""] * len(p)) for p in parts]
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                     ("observations", "actions", "rewards", "lengths", "terminated")),
                   policies=np.concatenate(policies).astype(str), env_id=parts[0].env_id if parts else "")

    def summary(self, solved: float | None = None) -> dict[str, Any]:
        """Episodes, steps and the spread of returns (and the share at or above ``solved``)."""
        returns = self.returns()
        figures: dict[str, Any] = {
            "env_id": self.env_id, "episodes": len(self), "steps": int(self.lengths.sum()),
            "mean_return": float(returns.mean()) if len(self) else 0.0,
            "min_return": float(returns.min()) if len(self) else 0.0,
            "max_return": float(returns.max()) if len(self) else 0.0,
        }
        if len(self.policies) == len(self):
            figures["episodes_by_policy"] = {str(kind): int((self.policies == kind).sum())
                                             for kind in dict.fromkeys(self.policies.tolist())}
        if solved is not None:
            figures["solved_at"] = solved
            figures["solved_share"] = float((returns >= solved).mean()) if len(self) else 0.0
        return figures


def _actions(actions: np.ndarray) -> np.ndarray:
    """Discrete actions as int64 (N,), continuous as float32 (N, act_dim)."""
    if np.issubdtype(actions.dtype, np.integer) or actions.dtype == bool:
        return actions.astype(np.int64).reshape(-1)
    return actions.astype(np.float32).reshape(len(actions), -1)


def save_npz(trajectories: Trajectories, path: str | Path) -> Path:
    """Write the .npz layout (compressed), through a temporary file: a failure leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        np.savez_compressed(handle, observations=trajectories.observations, actions=trajectories.actions,
                            rewards=trajectories.rewards, lengths=trajectories.lengths,
                            terminated=trajectories.terminated, policies=trajectories.policies.astype(str),
                            env_id=np.array(trajectories.env_id))
    partial.replace(path)
    return path


def read_npz(path: str | Path) -> Trajectories:
    """A .npz file of the layout above, checked; every problem is one DataError naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a readable .npz file (a zip archive of arrays)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except ValueError:  # object arrays need unpickling: refused
        raise DataError(f"{path}: holds pickled (object) arrays, which taa never unpickles") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None
    missing = [key for key in NPZ_KEYS if key not in arrays]
    if missing:
        raise DataError(f"{path}: no {missing[0]!r} array (a trajectories file holds {', '.join(NPZ_KEYS)})")
    env_id = str(arrays["env_id"]) if "env_id" in arrays else ""
    policies = arrays.get("policies", np.array([], dtype=str)).astype(str)
    trajectories = Trajectories(arrays["observations"], arrays["actions"], arrays["rewards"], arrays["lengths"],
                                arrays["terminated"], policies, env_id, str(path))
    return check(trajectories)


def check(trajectories: Trajectories) -> Trajectories:
    """The arrays agree with each other and hold finite numbers; types normalised."""
    t, where = trajectories, trajectories.source or "trajectories"
    if t.observations.ndim != 2:
        raise DataError(f"{where}: observations has shape {t.observations.shape}; (steps, state_dim) expected")
    steps = len(t.observations)
    if t.lengths.ndim != 1 or not np.issubdtype(t.lengths.dtype, np.integer) or (t.lengths <= 0).any():
        raise DataError(f"{where}: lengths must be positive integers, one per episode")
    if int(t.lengths.sum()) != steps:
        raise DataError(f"{where}: lengths sum to {int(t.lengths.sum())} steps; observations has {steps}")
    for name in ("actions", "rewards"):
        if len(getattr(t, name)) != steps:
            raise DataError(f"{where}: {name} has {len(getattr(t, name))} rows; observations has {steps}")
    if t.actions.ndim not in (1, 2):
        raise DataError(f"{where}: actions has shape {t.actions.shape}; (steps,) or (steps, act_dim) expected")
    if t.terminated.shape != t.lengths.shape:
        raise DataError(f"{where}: terminated has {len(t.terminated)} entries for {len(t.lengths)} episodes")
    if len(t.policies) not in (0, len(t.lengths)):
        raise DataError(f"{where}: policies has {len(t.policies)} entries for {len(t.lengths)} episodes")
    for name in ("observations", "rewards") + (("actions",) if t.actions.dtype.kind == "f" else ()):
        values = getattr(t, name)
        if values.dtype.kind not in "fiub":
            raise DataError(f"{where}: {name} holds {values.dtype} values, not numbers")
        bad = np.flatnonzero(~np.isfinite(values.reshape(steps, -1)).all(axis=1)) if steps else []
        if len(bad):
            raise DataError(f"{where}: {name} row {int(bad[0])} is not finite")
    if t.actions.ndim == 1 and t.actions.dtype.kind == "i" and steps and int(t.actions.min()) < 0:
        raise DataError(f"{where}: actions row {int(np.argmin(t.actions))} is negative ({int(t.actions.min())})")
    t.observations = t.observations.astype(np.float32)
    t.actions = _actions(t.actions)
    t.rewards = t.rewards.astype(np.float32)
    t.lengths = t.lengths.astype(np.int64)
    t.terminated = t.terminated.astype(bool)
    return t


def read_minari(path: str | Path) -> Trajectories:
    """A Minari dataset (its folder, its ``data/`` folder or ``main_data.hdf5``) in HDF5 form."""
    path = Path(path)
    file = next((p for p in (path, path / MINARI_FILE, path / "data" / MINARI_FILE) if p.is_file()), None)
    if file is None:
        raise DataError(f"{path}: no {MINARI_FILE} (Minari's HDF5 files; its arrow format is not read)")
    try:
        import h5py
    except ImportError:
        raise DataError("Minari datasets need h5py: pip install 'taa[rl]'") from None
    observations, actions, rewards, terminated = [], [], [], []
    try:
        with h5py.File(file, "r") as data:
            names = sorted((name for name in data if name.startswith("episode_")), key=lambda n: int(n.split("_")[1]))
            for name in names:
                episode = data[name]
                for key in ("observations", "actions", "rewards", "terminations"):
                    if key not in episode or not isinstance(episode[key], h5py.Dataset):
                        raise DataError(f"{file}: {name} has no {key!r} array (dictionary observations are not read)")
                steps = len(episode["rewards"])
                observation = np.asarray(episode["observations"])
                if len(observation) not in (steps, steps + 1):
                    raise DataError(f"{file}: {name} has {len(observation)} observations for {steps} steps")
                observations.append(observation[:steps].reshape(steps, -1))
                actions.append(np.asarray(episode["actions"]))
                rewards.append(np.asarray(episode["rewards"], dtype=np.float32))
                terminated.append(bool(np.asarray(episode["terminations"])[-1]) if steps else False)
    except OSError as error:
        raise DataError(f"{file}: not a readable HDF5 file ({error})") from None
    if not names:
        raise DataError(f"{file}: no episode_<k> groups")
    trajectories = Trajectories.from_episodes(observations, actions, rewards, terminated, _minari_env(file))
    trajectories.source = str(file)
    return check(trajectories)


def _minari_env(file: Path) -> str:
    metadata = file.parent / "metadata.json"
    try:
        spec = json.loads(metadata.read_text(encoding="utf-8")).get("env_spec") or {}
        spec = json.loads(spec) if isinstance(spec, str) else spec
        return str(spec.get("id", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def read_trajectories(path: str | Path) -> Trajectories:
    """A .npz file of taa's layout, or a Minari dataset (a folder, or its .hdf5 file)."""
    path = Path(path)
    if path.suffix == ".npz":
        return read_npz(path)
    if path.is_dir() or path.suffix in (".hdf5", ".h5"):
        return read_minari(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    raise DataError(f"{path}: neither a .npz trajectories file nor a Minari dataset")
