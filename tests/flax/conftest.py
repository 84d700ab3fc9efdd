"""The Flax port's tests: left out as a whole where Flax (and JAX) is not installed."""

import importlib.util

if importlib.util.find_spec("flax") is None or importlib.util.find_spec("jax") is None:
    collect_ignore_glob = ["*.py", "*/*.py"]

else:
    import jax

    # The tests compile hundreds of small programs, each run a few times: XLA's optimisation
    # passes cost more than they save here (a third of the suite's time). Numbers stay float32's.
    jax.config.update("jax_disable_most_optimizations", True)
