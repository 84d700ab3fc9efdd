"""`import taa` imports no framework: the cheap parts stay cheap."""

import subprocess
import sys

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "flax", "mlflow", "prefect", "onnx", "transformers")


def test_import_taa_imports_no_framework():
    code = (
        "import sys, taa, taa.config, taa.cli, taa.tracking, taa.plots\n"
        f"loaded = [m for m in {FRAMEWORKS!r} if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import taa loaded frameworks: {out.stdout.strip()}"


def test_tracking_and_plots_import_their_libraries_only_when_used():
    code = (
        "import sys, taa.tracking, taa.plots\n"
        "print(','.join(m for m in ('mlflow', 'matplotlib', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import taa.tracking, taa.plots loaded: {out.stdout.strip()}"


def test_taa_torch_does_import_torch():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, taa.torch; print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "True"
