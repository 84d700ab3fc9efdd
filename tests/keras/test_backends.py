"""The parity suite once more on Keras's JAX backend.

The port uses ``keras.ops`` only, so the same tests pin it to torch on every backend. This
test runs the blocks' and models' parity tests in a fresh interpreter with
``KERAS_BACKEND=jax`` (Keras reads the backend once, at import) and fails with their output
when any of them fails.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent

# The parity tests of every block and model, and of the weights' names; the decoders' and the
# trainer's tests run on TensorFlow only (on JAX each new cache length compiles anew: slow).
ON_JAX = ["test_weights.py", "test_attention.py", "test_positional.py", "test_norm.py", "test_feedforward.py",
          "test_blocks.py", "models"]


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_the_parity_suite_passes_on_jax():
    # XLA's optimisation passes cost more than they save on programs compiled to run a few times
    environment = {**os.environ, "KERAS_BACKEND": "jax", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
               *(str(HERE / name) for name in ON_JAX)]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, cwd=HERE.parents[1])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1] and "skipped" not in done.stdout.splitlines()[-1]
