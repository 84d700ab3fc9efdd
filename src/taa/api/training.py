"""``taa train``: the recipe (a file, a built-in name or the default), the tracker, the run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from taa import config as cfg
from taa.api._common import PathLike


# --------------------------------------------------------------------------------------
# taa train
# --------------------------------------------------------------------------------------


def builtin_recipe(name: str) -> Path:
    """A recipe shipped with taa (the top-level ``recipes/`` folder), by file stem."""
    path = Path(__file__).resolve().parent.parent / "recipes" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise cfg.ConfigError(f"{name}: no such recipe file or built-in recipe (built-in: {', '.join(known)})")
    return path


def default_recipe() -> Path:
    """The main job: a small Multi30k translation run when the data is found, else the copy task."""
    from taa.data import find_data_dir

    data = find_data_dir(None)
    has_multi30k = data is not None and (data / "multi30k" / "train.de.gz").is_file()
    return builtin_recipe("translate-multi30k-small" if has_multi30k else "copy")


def resolve_recipe(recipe: Optional[PathLike]) -> Path:
    """A recipe file, a built-in recipe's name, or None: :func:`default_recipe`."""
    if recipe is None:
        return default_recipe()
    path = Path(recipe)
    return path if path.is_file() or path.suffix in (".yaml", ".yml", ".json") else builtin_recipe(str(recipe))


def train(recipe: Optional[PathLike] = None, *, overrides: Sequence[str] = (), out: Optional[PathLike] = None,
          resume: Optional[PathLike] = None, resume_changed: bool = False, tracking: str = "mlflow",
          tracking_optional: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train the model a recipe describes, evaluate it and save the run folder ``out``
    (default: ``runs/<recipe name>``; ``resume``: continue the run saved there).

    Returns ``{"name", "task", "checkpoint", "metrics", "stopped"}``: the run's figures
    (as its ``metrics.json``) and why training stopped, in words.
    """
    from taa.tasks import task_runner

    path = resolve_recipe(recipe)
    config = cfg.RecipeConfig.load(path, list(overrides))
    if resume is not None:
        from taa.folders import find_state_folder

        resume = Path(resume)
        find_state_folder(resume)
    folder = Path(out) if out is not None else (resume or Path("runs") / (config.name or path.stem))
    tracker = _make_tracker(tracking, folder.resolve().name)  # the MLflow run is named after the run folder
    run = task_runner(config.task)  # the task's module, imported on demand
    with tracker:  # ends the tracked run FINISHED, FAILED or KILLED
        outcome = run(config, out=folder, progress=progress, resume=resume, tracker=tracker)
    return _train_result(config, outcome["metrics"], folder)


def _train_result(config: cfg.RecipeConfig, metrics: dict[str, Any], folder: Path) -> dict[str, Any]:
    """What :func:`train` returns, with the stop reason in words."""
    train = config.train
    stopped = {
        "steps": f"all {train.steps:,} steps done",
        "time_budget": f"stopped by the time budget ({train.max_minutes:g} min)",
        "early_stopping": f"early stopping ({train.early_stopping} validations without improvement)",
    }
    reason = metrics.get("stop_reason")
    return {"name": config.name, "task": config.task, "checkpoint": str(folder), "metrics": dict(metrics),
            "stopped": stopped.get(reason, str(reason)) if reason is not None else None}


def _make_tracker(kind: str, run_name: str):
    """The tracker ``tracking`` names; a missing package or a store that does not start is one line."""
    from taa.tracking import backend_errors, make_tracker

    try:
        return make_tracker(kind, run_name=run_name)
    except (ImportError, ValueError, OSError, *backend_errors()) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise cfg.ConfigError(f"--tracking {kind}: {message} (use --tracking none to train without it)") from None
