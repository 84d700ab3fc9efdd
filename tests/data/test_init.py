"""``import taa.data`` is framework-free and exports the public names."""

import subprocess
import sys

import taa.data

HEAVY = ("torch", "tensorflow", "jax", "datasets", "transformers", "pandas")


def test_import_taa_data_imports_no_framework():
    code = f"import sys, taa.data\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import taa.data loaded: {out.stdout.strip()}"


def test_public_names_are_exported():
    for name in taa.data.__all__:
        assert getattr(taa.data, name) is not None, name
    assert {"SubwordTokenizer", "TokenBatcher", "load_multi30k", "learn_bpe", "DataError"} <= set(taa.data.__all__)
