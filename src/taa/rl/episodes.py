"""Running policies in gymnasium environments, many seeded episodes at once.

:func:`run_episodes` keeps one environment per episode, resets episode ``i`` with seed
``seed + i`` and steps every running episode with one batched call of the policy, so a
Transformer policy reads all of them in one forward pass. The same seed gives the same
episodes. :func:`generate` makes an offline dataset of mixed quality from the
:mod:`taa.rl.policies`: random, noisy (each episode its own noise level) and expert
episodes in the shares asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from taa.data.text import DataError
from taa.data.trajectories import Trajectories
from taa.rl.policies import CONTROLLERS, POLICY_KINDS, NoisyPolicy, Policy, RandomPolicy


def gymnasium() -> Any:
    """The gymnasium module, or one line saying how to install it."""
    try:
        return importlib.import_module("gymnasium")
    except ImportError:
        raise DataError("environments need gymnasium: pip install 'taa[rl]'") from None


def make_env(env_id: str) -> Any:
    """``gymnasium.make(env_id)``, with a one-line error for an unknown environment."""
    gym = gymnasium()
    try:
        return gym.make(env_id)
    except gym.error.Error as error:  # unregistered name, version or missing dependency
        raise DataError(f"environment {env_id!r}: {error}") from None


@dataclass
class EnvInfo:
    """What a model needs to know about an environment's spaces."""

    env_id: str
    state_dim: int
    discrete: bool
    act_dim: int  # choices when discrete, else the action vector's length
    low: Optional[np.ndarray] = None  # continuous actions' bounds
    high: Optional[np.ndarray] = None
    max_steps: int = 0  # the time limit (0: none)


def env_info(env_id: str) -> EnvInfo:
    env = make_env(env_id)
    try:
        observation, action = env.observation_space, env.action_space
        if len(observation.shape) != 1:
            raise DataError(f"environment {env_id!r}: observations of shape {observation.shape}; "
                            f"taa reads flat state vectors")
        limit = env.spec.max_episode_steps if env.spec is not None else None
        if hasattr(action, "n"):
            return EnvInfo(env_id, observation.shape[0], True, int(action.n), max_steps=int(limit or 0))
        if len(action.shape) != 1:
            raise DataError(f"environment {env_id!r}: actions of shape {action.shape}; taa reads "
                            f"a choice or a flat vector")
        return EnvInfo(env_id, observation.shape[0], False, action.shape[0], action.low.astype(np.float32),
                       action.high.astype(np.float32), int(limit or 0))
    finally:
        env.close()


@dataclass
class Episodes:
    """The outcome of :func:`run_episodes`: each episode's return and length, and (when
    recorded) its trajectory."""

    returns: np.ndarray  # (episodes,)
    lengths: np.ndarray  # (episodes,)
    trajectories: Optional[Trajectories] = None


def run_episodes(env_id: str, policy: Policy, episodes: int, seed: int, *, record: bool = False,
                 max_steps: int = 0, on_step: Any = None) -> Episodes:
    """Run ``episodes`` episodes of ``env_id`` with ``policy``, episode ``i`` reset with seed
    ``seed + i``; ``on_step(rows, rewards)``, when given, hears the reward each running
    episode got (a return-conditioned policy lowers its target by it). ``max_steps`` > 0
    ends an episode earlier than the environment's own limit."""
    envs = [make_env(env_id) for _ in range(episodes)]
    try:
        observations = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
        for i, env in enumerate(envs):
            env.action_space.seed(seed + i)
        running = np.ones(episodes, dtype=bool)
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, dtype=np.int64)
        terminated = np.zeros(episodes, dtype=bool)
        steps: list[list[tuple[np.ndarray, Any, float]]] = [[] for _ in range(episodes)]
        while running.any():
            rows = np.flatnonzero(running)
            batch = np.stack([observations[i] for i in rows]).astype(np.float32)
            actions = policy.act(batch, rows)
            rewards = np.zeros(len(rows))
            for k, i in enumerate(rows):
                action = actions[k]
                next_observation, reward, ended, truncated, _ = envs[i].step(
                    int(action) if np.ndim(action) == 0 else np.asarray(action, dtype=np.float32))
                if record:
                    steps[i].append((batch[k], action, float(reward)))
                rewards[k] = reward
                returns[i] += reward
                lengths[i] += 1
                observations[i] = next_observation
                if ended or truncated or (max_steps and lengths[i] >= max_steps):
                    running[i] = False
                    terminated[i] = bool(ended)
            if on_step is not None:
                on_step(rows, rewards)
    finally:
        for env in envs:
            env.close()
    trajectories = None
    if record:
        trajectories = Trajectories.from_episodes(
            [np.stack([s for s, _, _ in episode]) for episode in steps],
            [np.stack([a for _, a, _ in episode]) for episode in steps],
            [np.array([r for _, _, r in episode], dtype=np.float32) for episode in steps],
            terminated, env_id=env_id)
    return Episodes(returns, lengths, trajectories)


def generate(env_id: str, episodes: int, mixture: Mapping[str, float], seed: int = 0,
             noise: tuple[float, float] = (0.1, 0.6), sigma: float = 0.3) -> Trajectories:
    """A dataset of ``episodes`` episodes of ``env_id`` from policies of mixed quality:
    ``mixture`` gives each kind of :data:`~taa.rl.policies.POLICY_KINDS` its share (the
    counts are the shares times ``episodes``, rounded, the last kind taking the rest).
    ``noisy`` episodes run the expert controller and draw their probability of a random
    action uniformly from ``noise`` (continuous ones also add Gaussian noise of up to
    ``sigma`` times the action range); ``medium`` ones run the medium controller, ``expert``
    ones the expert. Episode seeds never repeat across kinds."""
    unknown = [kind for kind in mixture if kind not in POLICY_KINDS]
    if unknown:
        raise DataError(f"mixture: {unknown[0]!r} is not a policy kind ({', '.join(POLICY_KINDS)})")
    info = env_info(env_id)
    if env_id not in CONTROLLERS and any(mixture.get(kind, 0) > 0 for kind in ("noisy", "medium", "expert")):
        raise DataError(f"environment {env_id!r} has no scripted controller (taa has {', '.join(CONTROLLERS)}): "
                        f"generate random episodes only, or bring a dataset")
    total = sum(max(0.0, share) for share in mixture.values())
    if total <= 0:
        raise DataError("mixture: every share is 0")
    kinds = [kind for kind in POLICY_KINDS if mixture.get(kind, 0) > 0]
    counts = [int(round(episodes * mixture[kind] / total)) for kind in kinds]
    counts[-1] = episodes - sum(counts[:-1])
    rng = np.random.default_rng(seed)
    parts = []
    offset = seed * 1_000_003  # episode seeds: one range per dataset seed, consecutive across kinds
    for kind, count in zip(kinds, counts):
        if count <= 0:
            continue
        random = RandomPolicy(rng, info.act_dim if info.discrete else 0, info.low, info.high)
        policy: Policy = random
        if kind != "random":
            policy = CONTROLLERS[env_id]["medium" if kind == "medium" else "expert"]()
        if kind == "noisy":
            policy = NoisyPolicy(policy, random, rng, rng.uniform(noise[0], noise[1], size=count),
                                 None if info.discrete else rng.uniform(0.0, sigma, size=count))
        part = run_episodes(env_id, policy, count, offset, record=True).trajectories
        part.policies = np.array([kind] * count)
        parts.append(part)
        offset += count
    return Trajectories.concatenate(parts)
