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
    folder = Path(__file__).resolve().parent.parent / "recipes"
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        what = "a folder, not a recipe file" if Path(name).is_dir() else "no such recipe file"
        raise cfg.ConfigError(f"{name}: {what} or built-in recipe (built-in: {known})")
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
          resume: Optional[PathLike] = None, resume_changed: bool = False, overwrite: bool = False,
          tracking: str = "mlflow", tracking_optional: bool = False, progress: bool = True,
          framework: Optional[str] = None) -> dict[str, Any]:
    """Train the model a recipe describes, evaluate it and save the run folder ``out``
    (default: ``runs/<recipe name>``, the name one plain folder name; ``resume``: continue
    the run saved there, into ``out`` when given). ``framework`` (``torch``, ``keras``)
    overrides the recipe's ``train.framework``.

    Before any work: the run folder must be writable (one line naming it otherwise), no
    live run may hold it (:func:`taa.folders.run_folder_lock`, released when training
    ends), and it may not hold another run or model (:func:`taa.folders.check_run_folder`):
    an earlier run there is continued with ``resume`` or replaced with ``overwrite``, whose
    files are set aside once the new run's data and model are ready, before it trains, and
    go once the new run has saved a state (a new run that fails before that puts them back:
    :class:`taa.folders.ReplacedRun`). The recipe's settings are checked before the tracker
    starts a tracked run (:func:`taa.tasks.runner.check_recipe`).

    Resuming continues the saved run, not another one. Without a recipe it continues with
    the saved run's (``overrides`` apply to it). A recipe that trains differently from the
    saved one (learning rate, batch size, seed, steps, optimizer, model, data: every field
    but the name, ``train.threads``, ``train.log_every`` and ``train.checkpoint_every``,
    which change neither the weights nor the final evaluation) is refused in one line
    listing the differences, unless ``resume_changed`` accepts them: they are then recorded
    in the run folder's ``resume_changes.json`` with the whole saved recipe, and a changed
    task or optimizer setting is still refused (the saved state cannot carry over). See
    :func:`taa.tasks.runner.check_resume`.

    Returns ``{"name", "task", "checkpoint", "metrics", "stopped"}``: the run's figures
    (as its ``metrics.json``) and why training stopped, in words.
    """
    from taa import folders
    from taa.tasks import task_runner
    from taa.training.launch import process_rank
    from taa.vertex import export_model

    overrides = _with_framework(overrides, framework)
    config, folder, what, state, resume, vertex = _prepare(recipe, overrides, out, resume, resume_changed)
    if process_rank() != 0:  # one of several processes (torchrun): rank 0 checks, locks, tracks and writes
        outcome = task_runner(config.task)(config, out=folder, progress=False, resume=resume, overwrite=overwrite)
        return _train_result(config, outcome["metrics"], folder)
    folders.check_writable_folder(folder, what)
    # Inside Vertex AI the lock of a container that was restarted names another host: it is gone.
    with folders.run_folder_lock(folder, foreign_is_stale=vertex is not None):  # one run per folder, to the end
        folders.settle_earlier_run(folder)  # one that --overwrite set aside and a kill left
        _refusals(config, folder, what, state, resume_changed, overwrite)  # a bad setting starts no tracked run
        run = task_runner(config.task)  # the task's module, imported on demand
        tracker = _make_tracker(tracking, folder.resolve().name, tracking_optional,  # named after the folder
                                folder=folder)
        with tracker:  # ends the tracked run FINISHED, FAILED or KILLED
            outcome = run(config, out=folder, progress=progress, resume=resume, tracker=tracker, overwrite=overwrite)
        if vertex is not None and vertex.model_dir is not None:  # where Vertex AI takes the model from
            export_model(folder, vertex.model_dir)
    return _train_result(config, outcome["metrics"], folder)


def check_train(recipe: Optional[PathLike] = None, *, overrides: Sequence[str] = (), out: Optional[PathLike] = None,
                resume: Optional[PathLike] = None, resume_changed: bool = False, overwrite: bool = False,
                processes: int = 1, framework: Optional[str] = None) -> None:
    """What :func:`train` refuses before it trains, checked without training or writing:
    the recipe and its settings, the run folder, a resume's recipe, and a device for each of
    ``processes`` processes on this machine. ``taa train --nproc`` calls it before it starts
    the processes, so that a bad setting is one line, not one from each process."""
    from taa import folders
    from taa.torch.devices import check_processes

    config, folder, what, state, _, _ = _prepare(recipe, _with_framework(overrides, framework), out, resume,
                                                 resume_changed)
    folders.check_writable_folder(folder, what)
    _refusals(config, folder, what, state, resume_changed, overwrite, processes)
    check_processes(config.train.device, processes)


def _with_framework(overrides: Sequence[str], framework: Optional[str]) -> list[str]:
    """``overrides`` and, last (it wins), ``train.framework=framework`` when one is given."""
    return [*overrides, *([f"train.framework={framework}"] if framework is not None else [])]


def _refusals(config: cfg.RecipeConfig, folder: Path, what: str, state: Optional[Path], resume_changed: bool,
              overwrite: bool, processes: int = 1) -> None:
    """What :func:`train` refuses once it knows its recipe and folder: a folder holding
    another run or model, a resume with a recipe that trains differently, a bad setting
    (one its framework's trainer does not do, too)."""
    from taa import folders
    from taa.tasks import task_class
    from taa.tasks.runner import check_recipe, check_resume

    folders.check_run_folder(folder, what, resume=state.parent if state is not None else None, overwrite=overwrite)
    if state is not None:
        check_resume(config, state, accept_changes=resume_changed)
    check_recipe(task_class(config.task)(config), resume=state is not None, processes=processes)


def _prepare(recipe: Optional[PathLike], overrides: Sequence[str], out: Optional[PathLike],
             resume: Optional[PathLike], resume_changed: bool):
    """The recipe, the run folder and what a resume reads, as :func:`train` settles them:
    ``(config, folder, what the folder is called in errors, state folder or None, resume,
    the Vertex AI environment or None)``."""
    from taa import folders
    from taa.tasks.runner import saved_recipe
    from taa.training.launch import process_rank
    from taa.vertex import vertex_environment

    if resume_changed and resume is None:
        raise cfg.ConfigError("--resume-changed goes with --resume DIR (the run to continue)")
    vertex = vertex_environment()  # inside a Vertex AI job: its folders
    if vertex is not None and vertex.checkpoint_dir is not None and out is None and resume is None:
        out = vertex.checkpoint_dir  # the run folder outlives the container: a restarted job resumes it
        if (out / folders.STATE).is_dir():
            resume = out
    if resume is not None and (Path(resume) / folders.EARLIER_RUN).is_dir() and process_rank() == 0:
        # a run --overwrite set aside, killed (rank 0 alone settles the folder)
        with folders.run_folder_lock(resume):
            folders.settle_earlier_run(resume)  # put back if the new run left no state to resume
    state = folders.find_state_folder(resume) if resume is not None else None
    saved, source = saved_recipe(state) if state is not None and recipe is None else (None, None)
    if state is not None and recipe is None and source is None:
        raise cfg.ConfigError(f"{state}: no saved recipe to continue with (a state from an older taa): "
                              "give the recipe, taa train RECIPE --resume DIR")
    if source is not None:  # resuming without a recipe: the saved run's
        path = source
        config = cfg.RecipeConfig.from_mapping(saved, overrides, source=source)
    else:
        path = resolve_recipe(recipe)
        config = cfg.RecipeConfig.load(path, list(overrides))
    if config.name:
        folders.check_folder_name(config.name)
    elif out is None and state is None:  # the run folder is runs/<the recipe file's name>
        try:
            folders.check_folder_name(path.stem)
        except cfg.ConfigError as error:
            raise cfg.ConfigError(f"{path}: a recipe without a name is run in runs/<its file's name>: {error}; "
                                  "give it a name or an --out") from None
    resumed = state.parent if state is not None else None  # the run folder, however --resume spelt it
    what = "--out" if out is not None else "--resume" if resumed else "run folder"
    if out is not None:
        folders.check_empty_path(out, what)  # Path("") would be the working folder
    folder = Path(out) if out is not None else (resumed or Path("runs") / (config.name or path.stem))
    return config, folder, what, state, resume, vertex


def _train_result(config: cfg.RecipeConfig, metrics: dict[str, Any], folder: Path) -> dict[str, Any]:
    """What :func:`train` returns, with the stop reason in words."""
    from taa.training.progress import counted  # (rich, which it imports, only when a run ends)

    train = config.train
    stopped = {
        "steps": f"all {counted(train.steps, 'step')} done",
        "time_budget": f"stopped by the time budget ({train.max_minutes:g} min)",
        "early_stopping": f"early stopping ({train.early_stopping} validations without improvement)",
    }
    reason = metrics.get("stop_reason")
    return {"name": config.name, "task": config.task, "checkpoint": str(folder), "metrics": dict(metrics),
            "stopped": stopped.get(reason, str(reason)) if reason is not None else None}


def _make_tracker(kind: str, run_name: str, optional: bool = False, folder: Optional[Path] = None):
    """The tracker ``tracking`` names; a missing package or a store that does not start is one line.

    ``folder`` is the run folder: TensorBoard's event files go in its ``tensorboard/``
    (:func:`taa.tracking.tensorboard_dir`). Inside a Vertex AI job that has a TensorBoard
    (``AIP_TENSORBOARD_LOG_DIR`` set), ``mlflow`` with no ``MLFLOW_TRACKING_URI`` means
    ``tensorboard``, written where that variable says: MLflow's default store would be a
    file in the job's container, gone when the job ends.

    ``optional`` (``--tracking-optional``): a store that does not start (a server that
    does not answer, a database that cannot be opened, a TensorBoard folder that cannot
    be written: an ``OSError`` or MLflow's own error) is one warning and the run goes on
    untracked. A missing package or a bad setting (a URI of a scheme MLflow does not know,
    a folder store MLflow refuses: an ``ImportError`` or a ``ValueError``) is still an
    error: it will not go away by itself.
    """
    import os
    import warnings

    from taa.tracking import TENSORBOARD_VARIABLE, Tracker, TrackingWarning, backend_errors, make_tracker

    if kind == "mlflow" and os.environ.get(TENSORBOARD_VARIABLE) and not os.environ.get("MLFLOW_TRACKING_URI"):
        kind = "tensorboard"
    try:
        return make_tracker(kind, run_name=run_name, run_folder=folder)
    except (OSError, *backend_errors()) as error:  # the store: ConnectionError is an OSError
        message = _first_line(error)
        if not optional:
            raise cfg.ConfigError(f"--tracking {kind}: {message} (use --tracking none to train without it, "
                                  "or --tracking-optional to train untracked while it is down)") from None
        warnings.warn(f"--tracking {kind}: {message}; training goes on untracked (--tracking-optional)",
                      TrackingWarning, stacklevel=3)
        return Tracker()
    except (ImportError, ValueError) as error:
        raise cfg.ConfigError(f"--tracking {kind}: {_first_line(error)} (use --tracking none to train without it)") \
            from None


def _first_line(error: BaseException) -> str:
    """An error's message, first line only; its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
