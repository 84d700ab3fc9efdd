"""Policies of known quality for making offline data, in numpy.

A policy acts for a batch of episodes at once: ``policy.act(observations, rows)`` gets the
observations of the episodes still running, ``(n, obs_dim)``, and their rows (the episodes'
indices in the batch, so a policy can keep something per episode, such as its noise
level) and returns their actions: ``(n,)`` integers for a discrete action space, ``(n,
act_dim)`` floats otherwise. ``rng`` (a :class:`numpy.random.Generator`) is the only
randomness, so a seeded run repeats.

The scripted controllers are textbook control, not learned, each in two qualities (an
expert and a medium one that fails in its own systematic way, so that imitating the data's
average is not enough):

- CartPole (state: cart position x, velocity, pole angle theta, angular velocity): push
  the cart the way the pole leans, corrected for how fast it falls and for the cart's
  drift, ``a = 1 if theta + 0.5 theta' + 0.05 x + 0.1 x' > 0`` (a linear state feedback;
  it keeps the pole up for the whole 500 steps); the medium one pushes the cart away from
  the centre instead;
- Pendulum (state: cos theta, sin theta, theta'; torque in [-2, 2]): energy-based swing-up
  far from the top (push along the motion until the pendulum's energy is that of the
  upright position), a PD controller near it (:class:`PendulumController`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from taa.config.tasks import POLICY_KINDS  # the qualities a generated dataset mixes

__all__ = ["CONTROLLERS", "MEDIUM_CARTPOLE", "POLICY_KINDS", "CartPoleController", "NoisyPolicy",
           "PendulumController", "Policy", "RandomPolicy"]


class Policy(Protocol):
    def act(self, observations: np.ndarray, rows: np.ndarray) -> np.ndarray: ...


class RandomPolicy:
    """Uniform random actions: ``actions`` choices, or floats uniform in [low, high]."""

    def __init__(self, rng: np.random.Generator, actions: int = 0, low: np.ndarray | None = None,
                 high: np.ndarray | None = None) -> None:
        self.rng, self.actions, self.low, self.high = rng, actions, low, high

    def act(self, observations: np.ndarray, rows: np.ndarray) -> np.ndarray:
        n = len(observations)
        if self.actions:
            return self.rng.integers(self.actions, size=n)
        return self.rng.uniform(self.low, self.high, size=(n, len(self.low))).astype(np.float32)


class CartPoleController:
    """Linear state feedback for CartPole-v1: push the way the pole is falling,
    ``a = 1 if gains . (x, x', theta, theta') > 0``. The expert's gains also pull the cart back
    to the centre; the medium ones (:data:`MEDIUM_CARTPOLE`) push it away, so the pole stays up
    until the cart runs off the track (about 190 steps of 500)."""

    def __init__(self, gains: tuple[float, ...] = (0.05, 0.1, 1.0, 0.5)) -> None:
        self.gains = np.asarray(gains)

    def act(self, observations: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return (observations @ self.gains > 0).astype(np.int64)


MEDIUM_CARTPOLE = (-0.3, -0.5, 1.0, 0.5)


class PendulumController:
    """Energy swing-up, then PD balancing, for Pendulum-v1 (g = 10, m = l = 1, |torque| <= 2).

    The environment's rod obeys theta'' = 15 sin theta + 3u, so its energy (0 at rest upright,
    theta = 0 at the top) is E = theta'^2 / 6 + 5 (cos theta - 1) and dE/dt = theta' u: a
    torque along the motion adds energy. Below the top (cos theta <= 0.8) the torque is
    ``2 (0 - E) sign(theta')`` (pump until the energy is the upright one); near it, ``-(kp
    theta + kd theta')``. The expert's gains (10, 2) hold it up: about -140 an episode; the
    medium ones (4, 1) are too weak against gravity, so it hangs off the top: about -480.
    """

    max_torque = 2.0

    def __init__(self, kp: float = 10.0, kd: float = 2.0) -> None:
        self.kp, self.kd = kp, kd

    def act(self, observations: np.ndarray, rows: np.ndarray) -> np.ndarray:
        cos, sin, speed = observations[:, 0], observations[:, 1], observations[:, 2]
        angle = np.arctan2(sin, cos)  # 0 = upright
        energy = speed ** 2 / 6.0 + 5.0 * (cos - 1.0)
        swing = -2.0 * energy * np.where(speed >= 0, 1.0, -1.0)
        balance = -(self.kp * angle + self.kd * speed)
        torque = np.where(cos > 0.8, balance, swing)
        return np.clip(torque, -self.max_torque, self.max_torque)[:, None].astype(np.float32)


class NoisyPolicy:
    """Another policy, spoiled per episode: with probability ``epsilon[row]`` a step takes the
    random policy's action instead (discrete and continuous), and continuous actions get
    Gaussian noise of ``sigma[row]`` times the action range besides."""

    def __init__(self, policy: Policy, random: RandomPolicy, rng: np.random.Generator, epsilon: np.ndarray,
                 sigma: np.ndarray | None = None) -> None:
        self.policy, self.random, self.rng = policy, random, rng
        self.epsilon, self.sigma = np.asarray(epsilon), sigma

    def act(self, observations: np.ndarray, rows: np.ndarray) -> np.ndarray:
        chosen = self.policy.act(observations, rows)
        if self.sigma is not None and not self.random.actions:
            spread = (self.random.high - self.random.low) / 2.0
            chosen = chosen + self.rng.normal(size=chosen.shape) * self.sigma[rows][:, None] * spread
            chosen = np.clip(chosen, self.random.low, self.random.high).astype(np.float32)
        replace = self.rng.random(len(rows)) < self.epsilon[rows]
        if replace.any():
            chosen = chosen.copy()
            chosen[replace] = self.random.act(observations[replace], rows[replace])
        return chosen


# the scripted policies of each environment taa generates data for: kind -> a new policy
CONTROLLERS: dict[str, dict[str, Callable[[], Policy]]] = {
    "CartPole-v1": {"expert": CartPoleController, "medium": lambda: CartPoleController(MEDIUM_CARTPOLE)},
    "Pendulum-v1": {"expert": PendulumController, "medium": lambda: PendulumController(kp=4.0, kd=1.0)},
}
