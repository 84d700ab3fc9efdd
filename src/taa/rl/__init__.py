"""Reinforcement learning around the Decision Transformer: environments, policies, trajectories.

- :mod:`taa.rl.policies`: the policies that make offline data (random, scripted controllers
  for CartPole and Pendulum, and noisy versions of them), in numpy;
- :mod:`taa.rl.episodes`: running policies in `gymnasium <https://gymnasium.farama.org>`_
  environments, many episodes at once, seeded; generating a mixed-quality dataset.

The trajectory files themselves (taa's ``.npz`` layout, Minari datasets) are read and
written by :mod:`taa.data.trajectories`. gymnasium is the optional extra ``[rl]``: it is
imported only when an environment is made. This package imports no deep-learning framework;
the Decision Transformer's training and evaluation live in :mod:`taa.tasks.offline_rl`.
"""
