"""Experiment tracking: where a run reports its parameters, metrics and files.

Three trackers, one interface (the :class:`Trainer` calls ``log_metrics`` each log
interval and after each validation):

- :class:`Tracker` records nothing (``--tracking none``).
- :class:`MLflowTracker` records into MLflow. The only module of taa that imports
  mlflow, and only when one is made: ``import taa.tracking`` stays cheap.
- :class:`SafeTracker` wraps another tracker so a failing backend costs one warning,
  never the training run.

:func:`make_tracker` picks one by name, as ``taa train --tracking`` does.

Where MLflow writes, unless told otherwise: ``MLFLOW_TRACKING_URI`` when set, else
MLflow 3's default store ``sqlite:///mlflow.db`` in the working directory (or the
older file store ``./mlruns`` when that folder already holds MLflow 2 experiments); a
new experiment keeps its files under ``./mlruns/<experiment id>/`` of the working
directory (pass ``artifact_location`` to put them elsewhere).
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

TRACKERS = ("mlflow", "none")  # the names make_tracker knows
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")  # how a run can end


class TrackingWarning(UserWarning):
    """A tracking backend failed; the run goes on untracked."""


class Tracker:
    """Where a run reports its parameters, metrics and files. This one drops them.

    Every tracker is a context manager that ends the run with FINISHED, FAILED (an
    exception) or KILLED (Ctrl-C)::

        with make_tracker("mlflow", run_name="copy") as tracker:
            trainer = Trainer(..., tracker=tracker)
    """

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record the run's settings once; nested sections become dotted names."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record numbers measured at optimizer step ``step``."""

    def log_artifact(self, path: str | Path, folder: Optional[str] = None) -> None:
        """Keep a file or a folder (under its own name, inside ``folder`` if given)."""

    def end(self, status: str = "FINISHED") -> None:
        """Close the run: FINISHED, FAILED or KILLED."""

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.end("FINISHED")
        else:
            self.end("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")


def flatten_params(params: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"d_model": 64}}`` -> ``{"model.d_model": 64}``; a dataclass counts as a dict.

    Lists stay one value (a recipe's list is one setting). An already flat dict comes
    back unchanged.
    """
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        from taa.config import to_dict

        params = to_dict(params)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict or a dataclass, got {type(params).__name__}")
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
            flat.update(flatten_params(value, name + "."))
        else:
            flat[name] = value
    return flat


def _param_text(value: Any) -> str:
    """How a parameter value reads in MLflow: JSON for lists, ``str`` for the rest."""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), default=str)
    return str(value)


def _one_line(error: BaseException, limit: int = 200) -> str:
    """``TypeName: first line of the message``, cut to ``limit`` characters."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _import_mlflow():
    try:
        import mlflow
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] == "mlflow":
            raise ImportError("MLflow tracking needs mlflow: pip install 'taa[tracking]'") from None
        raise
    return mlflow


class MLflowTracker(Tracker):
    """One MLflow run: parameters, metrics per step, artifacts, an end status.

    Args:
        experiment: the experiment's name; made when missing.
        run_name: the run's name in the MLflow UI (MLflow invents one when None).
        tracking_uri: the store, e.g. ``sqlite:///runs/mlflow.db`` or ``http://host:5000``;
            None: ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlflow.db`` in the
            working directory (MLflow 3's default).
        artifact_location: where a *new* experiment keeps its files (a folder or URI);
            None: MLflow's default, ``./mlruns/<experiment id>`` of the working directory
            for a local store. An existing experiment keeps its own location.

    The run starts here, so a wrong URI fails now, before any training. Talks to MLflow
    through an ``MlflowClient``, never the global active run, so trackers do not
    interfere with each other or with a user's own ``mlflow.start_run()``.
    """

    def __init__(
        self,
        experiment: str = "taa",
        run_name: Optional[str] = None,
        tracking_uri: Optional[str] = None,
        artifact_location: Optional[str | Path] = None,
    ) -> None:
        mlflow = _import_mlflow()
        from mlflow.tracking.context.registry import resolve_tags

        try:
            self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)
            self.experiment_id = self._experiment_id(experiment, artifact_location)
            run = self.client.create_run(self.experiment_id, tags=resolve_tags(), run_name=run_name or None)
        except ModuleNotFoundError as error:  # mlflow-skinny lacks sqlalchemy/alembic
            raise ImportError(
                f"MLflow tracking needs {error.name}: pip install 'taa[tracking]' "
                "(the full mlflow; mlflow-skinny has no sqlite store)"
            ) from None
        self.tracking_uri = self.client.tracking_uri
        self.run_id: str = run.info.run_id
        self.artifact_uri: str = run.info.artifact_uri
        self.ended = False

    def _experiment_id(self, name: str, artifact_location: Optional[str | Path]) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is None:
            location = str(artifact_location) if artifact_location is not None else None
            try:
                return self.client.create_experiment(name, artifact_location=location)
            except MlflowException:  # another process made it in between
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            raise ValueError(f"MLflow experiment {name!r} is deleted: restore it or pick another name")
        return found.experiment_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH

        entries = [Param(key, _param_text(value)) for key, value in flatten_params(params).items()]
        for start in range(0, len(entries), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=entries[start : start + MAX_PARAMS_TAGS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = []
        for key, value in metrics.items():
            if not hasattr(value, "__float__"):  # int, float, NumPy and 0-d tensor scalars
                raise TypeError(f"metric {key!r} is not a number: {value!r}")
            entries.append(Metric(key, float(value), now, int(step)))
        if entries:
            self.client.log_batch(self.run_id, metrics=entries)

    def log_artifact(self, path: str | Path, folder: Optional[str] = None) -> None:
        path = Path(path)
        if path.is_dir():  # a folder keeps its name: run/tokenizer -> tokenizer/...
            self.client.log_artifacts(self.run_id, str(path), "/".join(p for p in (folder, path.name) if p))
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), folder)
        else:
            raise FileNotFoundError(f"artifact {path}: no such file or folder")

    def end(self, status: str = "FINISHED") -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"status={status!r} is not one of {', '.join(RUN_STATUSES)}")
        if not self.ended:
            self.client.set_terminated(self.run_id, status)
            self.ended = True

    def __repr__(self) -> str:
        return f"MLflowTracker(run_id={self.run_id!r}, tracking_uri={self.tracking_uri!r})"


class SafeTracker(Tracker):
    """Wraps ``inner``; the first call that raises warns once and turns tracking off.

    Tracking is a record of the run, not the run: a lost server, a full disk or a
    locked database must not end hours of training. After the warning every call is
    a no-op; ``error`` keeps the exception. The inner run is not ended (its backend
    is what failed), so MLflow may show it as RUNNING.
    """

    def __init__(self, inner: Tracker) -> None:
        self.inner = inner
        self.error: Optional[BaseException] = None

    def _call(self, method: str, *args: Any) -> None:
        if self.error is not None:
            return
        try:
            getattr(self.inner, method)(*args)
        except Exception as error:  # noqa: BLE001 - any backend failure; Ctrl-C still stops the run
            self.error = error
            warnings.warn(
                f"tracking turned off for the rest of the run: {method} failed with {_one_line(error)}",
                TrackingWarning,
                stacklevel=3,
            )

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("log_params", params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._call("log_metrics", metrics, step)

    def log_artifact(self, path: str | Path, folder: Optional[str] = None) -> None:
        self._call("log_artifact", path, folder)

    def end(self, status: str = "FINISHED") -> None:
        self._call("end", status)

    def __repr__(self) -> str:
        return f"SafeTracker({self.inner!r}{', off' if self.error is not None else ''})"


def backend_errors() -> tuple[type[BaseException], ...]:
    """The errors a tracking backend raises when it cannot start (MLflow's own, when installed)."""
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:
        return ()
    return (MlflowException,)


def make_tracker(kind: str = "none", **kwargs: Any) -> Tracker:
    """``"mlflow"``: a :class:`SafeTracker` around :class:`MLflowTracker` (``kwargs`` go to it);
    ``"none"``: the no-op :class:`Tracker` (``kwargs`` are ignored, so callers can pass
    the same ones whatever the kind).
    """
    if kind == "none":
        return Tracker()
    if kind == "mlflow":
        return SafeTracker(MLflowTracker(**kwargs))
    raise ValueError(f"tracking={kind!r} is not one of {', '.join(repr(k) for k in TRACKERS)}")
