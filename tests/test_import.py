"""The framework-neutral core imports no framework: `import taa` and every module outside
`taa.torch` (the weight converters' key maps in `taa.convert` included) stay cheap, and a
port reuses them as they are."""

import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "flax", "mlflow", "prefect", "onnx", "transformers")

# Packages whose every module is framework-neutral, and single neutral modules.
NEUTRAL_PACKAGES = ("taa.api", "taa.config", "taa.convert", "taa.data", "taa.rl", "taa.training")
NEUTRAL_MODULES = ("taa", "taa.cli", "taa.decoding", "taa.folders", "taa.registry", "taa.tasks",
                   "taa.tasks.runner", "taa.text", "taa.tracking", "taa.plots", "taa.safetensors_file",
                   "taa.vertex", "taa.hub")


def _neutral_modules() -> list[str]:
    names = list(NEUTRAL_MODULES)
    for package in NEUTRAL_PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        names.extend(f"{package}.{info.name}" for info in pkgutil.iter_modules(module.__path__))
    return [name for name in names if importlib.util.find_spec(name) is not None]


def _frameworks_loaded_by(statement: str) -> str:
    code = f"import sys\n{statement}\nprint(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("module", _neutral_modules())
def test_a_neutral_module_imports_no_framework(module):
    """Each in a fresh interpreter, so no other import hides what this one loads."""
    assert _frameworks_loaded_by(f"import {module}") == "", f"import {module} loaded a framework"


def test_the_neutral_core_is_covered():
    modules = set(_neutral_modules())
    assert {"taa.folders", "taa.text", "taa.training.schedules", "taa.training.progress", "taa.training.dtypes",
            "taa.data.tokenizer", "taa.registry", "taa.convert.hf", "taa.convert.hf_gpt2",
            "taa.convert.hf_bert", "taa.convert.hf_t5", "taa.convert.arrays", "taa.tasks.runner",
            "taa.training.batches"} <= modules
    assert any(name.startswith("taa.config.") for name in modules)


def test_every_module_outside_taa_torch_is_checked():
    """A new module outside ``taa.torch`` (the task modules, which train with it, aside; the
    runner they share is checked) is checked by the test above without editing its lists.
    ``taa.__main__`` runs the command line rather than defining anything: it is ``taa.cli``."""
    import taa

    root = Path(taa.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[0] in ("torch", "keras", "flax") or parts == ("__main__",):
            continue
        if parts[0] == "tasks" and parts[-1] not in ("__init__", "runner"):
            continue
        found.add(".".join(("taa", *parts)).removesuffix(".__init__"))
    assert sorted(found - set(_neutral_modules())) == []


def test_the_keras_port_imports_keras_and_never_torch():
    """Every module of ``taa.keras``, in one fresh interpreter: the port stands on Keras alone."""
    pytest.importorskip("keras")
    import taa.keras

    modules = [info.name for info in pkgutil.walk_packages(taa.keras.__path__, "taa.keras.")]
    assert "taa.keras.models.gpt" in modules and "taa.keras.hub" in modules
    loaded = _frameworks_loaded_by("import " + ", ".join(["taa.keras", *modules])).split(",")
    assert "keras" in loaded and "torch" not in loaded and "flax" not in loaded


def test_the_flax_port_imports_jax_and_flax_and_never_torch():
    """Every module of ``taa.flax``, in one fresh interpreter: the port stands on JAX and Flax alone."""
    pytest.importorskip("flax")
    import taa.flax

    modules = [info.name for info in pkgutil.walk_packages(taa.flax.__path__, "taa.flax.")]
    assert "taa.flax.models.gpt" in modules and "taa.flax.hub" in modules and "taa.flax.training.loop" in modules
    loaded = _frameworks_loaded_by("import " + ", ".join(["taa.flax", *modules])).split(",")
    assert {"jax", "flax"} <= set(loaded)
    assert not {"torch", "keras", "tensorflow"} & set(loaded), loaded


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
