"""The Flax port's tests: left out as a whole where Flax (and JAX) is not installed."""

import importlib.util

if importlib.util.find_spec("flax") is None or importlib.util.find_spec("jax") is None:
    collect_ignore_glob = ["*.py", "*/*.py"]
