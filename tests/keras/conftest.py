"""The Keras port's tests: left out as a whole where Keras is not installed."""

import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices, not the tests' output

if importlib.util.find_spec("keras") is None:
    collect_ignore_glob = ["*.py", "*/*.py"]
