"""Experiment tracking: where a run reports its parameters, metrics and files.

Three trackers, one interface (the :class:`Trainer` calls ``log_metrics`` each log
interval and after each validation):

- :class:`Tracker` records nothing (``--tracking none``).
- :class:`MLflowTracker` records into MLflow. The only module of taa that imports
  mlflow, and only when one is made: ``import taa.tracking`` stays cheap.
- :class:`TensorBoardTracker` writes TensorBoard's event files into a folder (the run
  folder's ``tensorboard/``, or the one a Vertex AI job names); it imports tensorboard,
  through PyTorch's writer, only when one is made.
- :class:`SafeTracker` wraps another tracker so a failing backend costs one warning,
  never the training run.
- :class:`BackgroundTracker` is a :class:`SafeTracker` that makes the inner tracker's
  calls on a worker thread, so a slow or lost tracking server never holds up training.

:func:`make_tracker` picks one by name, as ``taa train --tracking`` does: a store on
another machine (``http://...``, a database server) gets the background worker, a
local store (sqlite, a folder) is written in line, in order, before the call returns.
TensorBoard's writer queues events on its own thread, so it is written in line too.

A store that is down costs seconds, not minutes: each is checked before MLflow opens it
(:func:`_check_store`), since MLflow's own retries are made for a store that is busy, not
one that is not there. An ``http(s)`` server is probed (:data:`PROBE_SECONDS`) and
MLflow's HTTP retries, which back off for about four minutes by default, are bounded
(:data:`HTTP_LIMITS`) unless the user set them; a database server's port is probed; an
sqlite file is opened for writing. MLflow retries opening a database ten times over
about 100 s, with no setting to change that, so a database it cannot open must not get
that far.

Where MLflow writes, unless told otherwise: ``MLFLOW_TRACKING_URI`` when set, else
MLflow 3's default store ``sqlite:///mlflow.db`` in the working directory (or the
older folder store ``./mlruns`` when that folder already holds MLflow 2 experiments,
which MLflow 3 opens only with ``MLFLOW_ALLOW_FILE_STORE=true``); a new experiment keeps
its files under ``./mlruns/<experiment id>/`` of the working directory (pass
``artifact_location`` to put them elsewhere).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import re
import socket
import sys
import threading
import time
import types
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

TRACKERS = ("mlflow", "tensorboard", "none")  # the names make_tracker knows
# Set by Vertex AI inside a training job given a TensorBoard instance: where its uploader
# reads event files (a gs:// URI; taa.vertex.local_path maps it to the mounted path).
TENSORBOARD_VARIABLE = "AIP_TENSORBOARD_LOG_DIR"
# How often TensorBoard's writer flushes its queue to the event file (its default is 120 s):
# a run killed outright loses at most this much, and a job's uploader sees the curves this soon.
FLUSH_SECONDS = 30
# The loggers of MLflow, of the database migrations it runs on a new sqlite store, and of
# SQLAlchemy, which it opens databases with.
MLFLOW_LOGGERS = ("mlflow", "alembic", "sqlalchemy")
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")  # how a run can end
LOCAL_SCHEMES = ("", "file", "sqlite")  # stores on this machine's disk: no network to wait on
PROBE_SECONDS = 5.0  # how long a tracking server or database has to answer before the run starts
# Database servers MLflow can keep runs in, and the port each listens on unless the URI names one.
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
# MLflow's HTTP client settings (environment variables it reads at each request), bounded
# so that a server that is gone fails a request in seconds: 2 retries, the second 2-3 s
# after the first; 30 s for a connection or an answer (a large file's upload must fit).
# MLflow's defaults (7 retries, back-off factor 2, 120 s) wait about four minutes for a
# closed port. A value the user set is kept.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


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


# The operating system's words inside a longer message ("... [Errno 111] Connection refused')"),
# as network libraries wrap them: group 1 is the words.
_SYSTEM_ERROR = re.compile(r"\[Errno -?\d+\] ([^'\")(]+)")


def _one_line(error: BaseException, limit: int = 200) -> str:
    """``TypeName: first line of the message``, cut to ``limit`` characters; a cut message
    ends with the system error it wraps, if any (``... [Errno 111] Connection refused``)."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    if len(text) <= limit:
        return text
    cause = _SYSTEM_ERROR.search(text)
    tail = f"... {cause.group(0).strip()}" if cause else "..."
    return text[: limit - len(tail)] + tail


def _import_mlflow():
    """mlflow, its log quieted to warnings: its INFO lines (a new sqlite store's "Creating
    initial MLflow database tables...") would print among taa's own output. A level the
    user set in ``MLFLOW_LOGGING_LEVEL`` is kept; warnings and errors are always shown."""
    try:
        import mlflow
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] == "mlflow":
            raise ImportError("MLflow tracking needs mlflow: pip install 'taa[tracking]'") from None
        raise
    _raise_log_levels(logging.WARNING)
    return mlflow


def _raise_log_levels(level: int) -> list[tuple[logging.Logger, int]]:
    """Raise the loggers of :data:`MLFLOW_LOGGERS` to ``level`` at least, unless the user set
    ``MLFLOW_LOGGING_LEVEL``; the loggers and their levels before, to put back."""
    if os.environ.get("MLFLOW_LOGGING_LEVEL"):
        return []
    before = []
    for name in MLFLOW_LOGGERS:
        logger = logging.getLogger(name)
        before.append((logger, logger.level))
        logger.setLevel(max(logger.getEffectiveLevel(), level))
    return before


@contextlib.contextmanager
def _errors_only():
    """MLflow's loggers show errors only inside the block: while a run starts, whatever goes
    wrong becomes one line of taa's, and MLflow's warnings about it (a retry, each with the
    database error's text) would only bury that line."""
    before = _raise_log_levels(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in before:
            logger.setLevel(level)


def _scheme(uri: str) -> str:
    """``http`` for ``http://host:5000``, ``postgresql`` for ``postgresql+psycopg2://...``, ``""`` for a path."""
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme.lower().split("+", 1)[0]
    return "" if len(scheme) == 1 else scheme  # C:\runs: a Windows drive, not a scheme


def _shown(uri: str) -> str:
    """``uri`` as it may be printed: a password in it becomes ``***``."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if not parts.password:
        return uri
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _store_name(uri: str, given: bool) -> str:
    """How an error names the store: by the setting that chose it, so the user knows what to change."""
    if given:
        return f"tracking store {_shown(uri)}"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return f"MLFLOW_TRACKING_URI={_shown(uri)}"
    if _scheme(uri) in ("", "file"):  # MLflow 3 picks ./mlruns only when it holds an older MLflow's experiments
        return f"MLflow's default store {uri} (picked as ./mlruns holds an older MLflow's experiments)"
    return f"MLflow's default store {uri}"


def _check_store(uri: str, where: str) -> None:
    """Whether the store ``uri`` (named ``where`` in messages) can be written, before MLflow opens it.

    A store that is down or cannot be opened is an ``OSError`` (a ``ConnectionError``
    for a server) within :data:`PROBE_SECONDS`; a store MLflow will refuse, whatever
    the moment, is a ``ValueError``. A scheme MLflow does not know is left to MLflow.
    """
    scheme = _scheme(uri)
    if scheme in ("http", "https"):
        for name, value in HTTP_LIMITS.items():
            os.environ.setdefault(name, value)
        _check_answers(uri)
    elif scheme in ("", "file"):
        _check_folder_store(where)
    elif scheme == "sqlite":
        _check_sqlite(uri, where)
    elif scheme in DATABASE_PORTS:
        _check_database_server(uri, where)


def _check_folder_store(where: str) -> None:
    """A ``ValueError`` unless MLflow will keep runs in a folder: MLflow 3 refuses its folder
    store (``file:``, ``./mlruns``) unless ``MLFLOW_ALLOW_FILE_STORE`` is true, and says so
    in a paragraph about migrating; this says what to set, in one line. An MLflow without
    that setting writes folder stores as it always did."""
    import mlflow
    from mlflow import environment_variables

    allowed = getattr(environment_variables, "MLFLOW_ALLOW_FILE_STORE", None)
    if allowed is not None and not allowed.get():
        raise ValueError(f"{where}: MLflow {mlflow.__version__} keeps runs in a folder only with "
                         "MLFLOW_ALLOW_FILE_STORE=true; or use a database, e.g. "
                         "MLFLOW_TRACKING_URI=sqlite:///mlflow.db")


def _database_url(uri: str, where: str):
    """``uri`` read as MLflow's database store reads it (SQLAlchemy's ``URL``); a ``ValueError``
    naming ``where`` when it is not one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(uri)
    except ArgumentError:
        raise ValueError(f"{where}: not a database URI, e.g. sqlite:///mlflow.db or "
                         "postgresql://user@host/database") from None


def _check_sqlite(uri: str, where: str) -> None:
    """An ``OSError`` naming ``where`` unless the sqlite file of ``uri`` can be written.

    The file's folder is made when missing, as MLflow does; the file is opened and a
    write is tried and undone, which finds a path that is a folder or cannot be made, a
    file that is not a database or is read-only, and a database another process holds
    locked for :data:`PROBE_SECONDS`. A new file is left empty, for MLflow to fill.
    """
    import sqlite3

    database = _database_url(uri, where).database
    if not database or database == ":memory:":
        return
    path = Path(database)
    if path.is_dir():
        raise IsADirectoryError(f"{where}: cannot open the tracking database ({path} is a folder)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path, timeout=PROBE_SECONDS, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")  # the write lock: waits for another writer up to the timeout
            version = db.execute("PRAGMA user_version").fetchone()[0]
            db.execute(f"PRAGMA user_version = {int(version)}")  # a write, the same value, undone next
            db.execute("ROLLBACK")
    except OSError as error:  # the folder cannot be made
        blocked = Path(error.filename or path.parent)
        problem = (f"{blocked} is not a folder" if blocked.exists() and not blocked.is_dir()
                   else f"cannot make the folder {blocked}: {error.strerror or error}")
    except sqlite3.Error as error:
        problem = f"{path}: {error}"
    else:
        return
    raise OSError(f"{where}: cannot open the tracking database ({problem})")


def _check_database_server(uri: str, where: str) -> None:
    """A ``ConnectionError`` naming ``where`` unless the database server of ``uri`` accepts a
    connection within :data:`PROBE_SECONDS`. Only the port is tried (the login is MLflow's);
    a server reached through a local socket (no host in the URI) is left to MLflow."""
    url = _database_url(uri, where)
    if not url.host:
        return
    port = url.port or DATABASE_PORTS[_scheme(uri)]
    try:
        socket.create_connection((url.host, port), timeout=PROBE_SECONDS).close()
    except TimeoutError:
        raise ConnectionError(f"{where}: database server {url.host}:{port} did not answer within "
                              f"{PROBE_SECONDS:g} s") from None
    except OSError as error:
        raise ConnectionError(f"{where}: database server {url.host}:{port} cannot be reached: "
                              f"{error.strerror or error}") from None


def _check_answers(uri: str) -> None:
    """A ``ConnectionError`` naming ``uri`` unless an HTTP server answers there within
    :data:`PROBE_SECONDS`.

    Any answer counts (401, 404, a certificate MLflow is told to accept): the probe asks
    only whether something listens, so that MLflow's own retries, meant for a busy
    server, are not spent on one that is not there. It goes through ``requests``, as
    MLflow does, so a proxy set in the environment is used.
    """
    import requests

    try:
        requests.get(uri, timeout=PROBE_SECONDS, allow_redirects=False, stream=True).close()
    except requests.exceptions.SSLError:  # a server answered; MLflow has its own certificate settings
        return
    except requests.exceptions.Timeout:
        raise ConnectionError(f"tracking server {_shown(uri)} did not answer within {PROBE_SECONDS:g} s") from None
    except requests.exceptions.ConnectionError as error:
        cause = _SYSTEM_ERROR.search(str(error))
        reason = cause.group(1).strip() if cause else "no connection"  # e.g. Connection refused
        raise ConnectionError(f"tracking server {_shown(uri)} cannot be reached: {reason}") from None


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

    The run starts here, so a wrong store fails now, before any training, naming the
    setting that chose it: a store that is down or cannot be opened (a server that does
    not answer within :data:`PROBE_SECONDS`, an sqlite file that cannot be written) is an
    ``OSError``, a URI MLflow cannot use (a scheme it does not know, a folder store MLflow
    refuses) a ``ValueError``. For an ``http(s)`` server the process's MLflow HTTP settings
    are bounded (:data:`HTTP_LIMITS`; MLflow reads them per process, not per client). Talks to
    MLflow through an ``MlflowClient``, never the global active run, so trackers do not
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
        from mlflow.exceptions import MlflowException
        from mlflow.tracking.context.registry import resolve_tags
        from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException

        uri = str(tracking_uri) if tracking_uri else mlflow.get_tracking_uri()  # as MlflowClient resolves it
        where = _store_name(uri, given=bool(tracking_uri))
        try:
            with _errors_only():
                _check_store(uri, where)
                try:
                    self.client = mlflow.MlflowClient(tracking_uri=uri)  # opens a database store, checked above
                except UnsupportedModelRegistryStoreURIException as error:
                    known = ", ".join(scheme for scheme in error.supported_uri_schemes if scheme)
                    raise ValueError(f"{where}: MLflow has no store for the scheme {_scheme(uri)!r} "
                                     f"(it knows {known})") from None
                except MlflowException as error:  # MLflow's word that the URI is wrong (a malformed database URI)
                    if error.error_code != "INVALID_PARAMETER_VALUE":
                        raise
                    raise ValueError(f"{where}: {(error.message.strip().splitlines() or ['invalid'])[0]}") from None
                self.experiment_id = self._experiment_id(experiment, artifact_location)
                run = self.client.create_run(self.experiment_id, tags=resolve_tags(), run_name=run_name or None)
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] in ("sqlalchemy", "alembic"):  # mlflow-skinny lacks them
                raise ImportError(
                    f"MLflow tracking needs {error.name}: pip install 'taa[tracking]' "
                    "(the full mlflow; mlflow-skinny has no sqlite store)"
                ) from None
            raise ImportError(f"{where} needs the database driver {error.name}, which is not installed") from None
        self.tracking_uri = self.client.tracking_uri
        self.run_id: str = run.info.run_id
        self.artifact_uri: str = run.info.artifact_uri
        self.ended = False

    @property
    def remote(self) -> bool:
        """Whether the store is on another machine (an HTTP server, a database server)."""
        return _scheme(self.tracking_uri) not in LOCAL_SCHEMES

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
            self._turn_off(f"{method} failed with {_one_line(error)}", error)

    def _turn_off(self, reason: str, error: BaseException, stacklevel: int = 4) -> None:
        """Keep ``error``, warn once in one line, drop every later call. ``stacklevel``
        makes the warning point at the run's code (4: the caller of ``log_metrics`` and
        the like, which called ``_call``, which called this)."""
        self.error = error
        warnings.warn(f"tracking turned off for the rest of the run: {reason}", TrackingWarning,
                      stacklevel=stacklevel)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("log_params", params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._call("log_metrics", metrics, step)

    def log_artifact(self, path: str | Path, folder: Optional[str] = None) -> None:
        self._call("log_artifact", path, folder)

    def end(self, status: str = "FINISHED") -> None:
        self._call("end", status)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r}{', off' if self.error is not None else ''})"


class BackgroundTracker(SafeTracker):
    """A :class:`SafeTracker` whose inner calls run on a worker thread, one at a time, in order.

    The run's thread only queues a call, so a tracking server that is slow, or gone and
    being retried, never holds up training. A call that fails on the worker turns
    tracking off as in :class:`SafeTracker`: the worker drops the rest, and the one
    warning comes on the run's thread with its next call (so it points at the run's
    code and never breaks into a progress bar from another thread). ``queue_size``
    calls waiting to be sent also turn tracking off: the server is that far behind.

    :meth:`end` waits for the calls still queued (the run's files are usually among
    them) as long as the worker keeps finishing them; when none finishes for
    ``end_timeout`` seconds it gives up with one warning and the rest stay unsent. A
    server that is gone fails the worker's call sooner (a closed port: in about 3 s
    with :data:`HTTP_LIMITS`), and the wait ends then. The worker is a daemon thread,
    so a request that hangs does not keep the process alive.
    """

    def __init__(self, inner: Tracker, queue_size: int = 1000, end_timeout: float = 30.0) -> None:
        super().__init__(inner)
        self.end_timeout = end_timeout
        self._calls: queue.Queue[tuple[str, tuple[Any, ...]]] = queue.Queue(maxsize=queue_size)
        self._changed = threading.Condition()  # notified each time the worker finishes a call
        self._queued = self._finished = 0  # calls put in the queue / taken out and made (or dropped)
        self._failure: Optional[tuple[str, BaseException]] = None  # the worker's failed call, once
        self._ended = False
        self._worker = threading.Thread(target=self._work, name="taa-tracking", daemon=True)
        self._worker.start()

    def _work(self) -> None:
        """The worker: make the queued calls until ``end``, the first failure, or tracking
        turned off from the run's thread (the calls still queued are dropped)."""
        while True:
            method, args = self._calls.get()
            if self.error is not None:
                return
            try:
                getattr(self.inner, method)(*args)
            except Exception as error:  # noqa: BLE001 - reported on the run's thread
                self._failure = (method, error)
            with self._changed:
                self._finished += 1
                self._changed.notify_all()
            if method == "end" or self._failure is not None:
                return

    def _report_failure(self, stacklevel: int) -> None:
        """The worker's failure, if there is one not reported yet, as the one warning."""
        if self._failure is not None and self.error is None:
            method, error = self._failure
            self._turn_off(f"{method} failed with {_one_line(error)}", error, stacklevel=stacklevel + 1)

    def _call(self, method: str, *args: Any) -> None:
        self._report_failure(stacklevel=4)
        if self.error is not None or self._ended:
            return
        with self._changed:
            self._queued += 1
        try:
            self._calls.put_nowait((method, args))
        except queue.Full:
            with self._changed:
                self._queued -= 1
            behind = self._calls.maxsize
            self._turn_off(f"the tracking store is {behind:,} calls behind",
                           TimeoutError(f"{behind} tracking calls waiting"))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._call("log_metrics", dict(metrics), step)  # a copy: the caller may reuse its dict meanwhile

    def end(self, status: str = "FINISHED") -> None:
        if self._ended:
            return
        self._call("end", status)
        self._ended = True
        if self.error is not None:
            return
        with self._changed:
            while self._finished < self._queued and self._failure is None:
                if not self._changed.wait(self.end_timeout):
                    break  # no call finished for end_timeout seconds
        self._report_failure(stacklevel=3)
        unsent = self._queued - self._finished
        if self.error is None and unsent:
            self.error = TimeoutError(f"{unsent} tracking calls not sent")
            warnings.warn(f"tracking gave up on the tracking store after {self.end_timeout:g} s without an answer: "
                          f"the run's last {unsent} tracking calls are not recorded", TrackingWarning, stacklevel=2)


def _import_summary_writer():
    """PyTorch's ``SummaryWriter``, writing through TensorBoard's own file layer.

    tensorboard reads and writes files with TensorFlow's file API when TensorFlow is
    installed, and imports all of it to do so (seconds, and TensorFlow's log lines in a
    PyTorch run), unless the module ``tensorboard.compat.notf`` exists: then it uses its
    own stub of that API, as its TensorFlow-free build does. The stub writes local paths,
    which is all taa gives it (a gs:// folder is read as its mounted path), so that module
    is registered, empty, unless TensorFlow is already loaded. It holds for the process.
    """
    import importlib.util

    for package in ("tensorboard", "torch"):
        if importlib.util.find_spec(package) is None:
            raise ImportError(f"TensorBoard tracking needs {package}: pip install {package}")
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ModuleNotFoundError as error:  # one that find_spec did not see (a broken install)
        name = (error.name or "tensorboard").split(".")[0]
        raise ImportError(f"TensorBoard tracking needs {name}: pip install {name}") from None
    return SummaryWriter


def tensorboard_dir(run_name: Optional[str] = None, run_folder: Optional[str | Path] = None) -> Path:
    """Where :class:`TensorBoardTracker` writes unless told: the folder
    ``AIP_TENSORBOARD_LOG_DIR`` names when set (inside a Vertex AI job, where its TensorBoard
    uploader reads; ``gs://bucket/x`` is the mounted ``/gcs/bucket/x``), else
    ``<run_folder>/tensorboard``, else ``runs/<run_name>/tensorboard`` (the folder
    ``taa train`` gives a run of that name). A ``ValueError`` when none of them is given."""
    from taa import folders

    given = os.environ.get(TENSORBOARD_VARIABLE)
    if given:
        from taa.vertex import local_path

        return local_path(given, TENSORBOARD_VARIABLE)
    if run_folder is not None:
        return Path(run_folder) / folders.TENSORBOARD
    if run_name:
        return Path("runs") / run_name / folders.TENSORBOARD
    raise ValueError("TensorBoard tracking needs a folder: give log_dir, run_folder or run_name")


def _check_log_dir(path: Path) -> None:
    """An ``OSError`` naming ``path`` unless event files can be written there: a file in its
    place or in place of a folder above it, or the nearest existing folder read-only."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"TensorBoard's event files cannot go in {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"TensorBoard's event files cannot go in {path}: {existing} is not writable")


def _markdown_table(params: Mapping[str, Any]) -> str:
    """The parameters as a two-column Markdown table, as TensorBoard's Text tab shows it."""
    rows = [f"| {key} | {_param_text(value).replace('|', '&#124;')} |" for key, value in params.items()]
    return "\n".join(["| parameter | value |", "| --- | --- |", *rows])


class TensorBoardTracker(Tracker):
    """TensorBoard's event files in one folder: metrics as scalars, parameters as one text table.

    Args:
        log_dir: the folder; None: :func:`tensorboard_dir` of ``run_name`` and ``run_folder``
            (``AIP_TENSORBOARD_LOG_DIR`` first).
        run_name, run_folder: see :func:`tensorboard_dir`.

    A folder that cannot be written (a file in its place, a read-only parent) is an
    ``OSError`` here, before any training; tensorboard missing is one ``ImportError``.

    The event file is opened at the first metrics, not before: the parameters given
    earlier are written then, at that step, and a run that stops before its first
    metrics writes no file (a run that ``--overwrite`` replaces is set aside by then).
    The writer is opened with ``purge_step`` at that first step, so TensorBoard hides what
    an earlier writer in the same folder logged from that step on: a run resumed from its
    last saved state does not show twice the steps a killed run logged after that state.

    A metric that is not a number (no ``__float__``: a string, None) is skipped, not an
    error: TensorBoard has no place for it. nan and inf are written as they are:
    TensorBoard marks them, which shows where a run diverged. TensorBoard keeps no files,
    so :meth:`log_artifact` does nothing (the run folder has them). :meth:`end` closes the
    writer, which flushes what it has queued.
    """

    def __init__(self, log_dir: Optional[str | Path] = None, run_name: Optional[str] = None,
                 run_folder: Optional[str | Path] = None) -> None:
        self._summary_writer = _import_summary_writer()
        self.log_dir = Path(log_dir) if log_dir is not None else tensorboard_dir(run_name, run_folder)
        _check_log_dir(self.log_dir)
        self.writer: Any = None  # the SummaryWriter, from the first metrics on
        self._params: dict[str, Any] = {}  # given before the writer opened
        self._last_step = 0  # of the last metrics written
        self.ended = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._params.update(flatten_params(params))
        if self.writer is not None:  # more parameters once running: written at the last step
            self._write_params(self._last_step)

    def _write_params(self, step: int) -> None:
        if self._params:
            self.writer.add_text("params", _markdown_table(self._params), step)
            self._params = {}

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        numbers = {key: float(value) for key, value in metrics.items() if hasattr(value, "__float__")}
        if not numbers or self.ended:
            return
        step = int(step)
        if self.writer is None:
            self.writer = self._summary_writer(str(self.log_dir), purge_step=step, flush_secs=FLUSH_SECONDS)
            self._write_params(step)
        for key, value in numbers.items():
            self.writer.add_scalar(key, value, step)
        self._last_step = step

    def end(self, status: str = "FINISHED") -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"status={status!r} is not one of {', '.join(RUN_STATUSES)}")
        if not self.ended:
            self.ended = True
            if self.writer is not None:
                self.writer.close()

    def __repr__(self) -> str:
        return f"TensorBoardTracker(log_dir={str(self.log_dir)!r})"


def backend_errors() -> tuple[type[BaseException], ...]:
    """The errors a tracking backend raises when it cannot start: MLflow's own, and those of
    SQLAlchemy, which MLflow lets through from a database store (each when installed)."""
    errors: list[type[BaseException]] = []
    try:
        from mlflow.exceptions import MlflowException

        errors.append(MlflowException)
        from sqlalchemy.exc import SQLAlchemyError

        errors.append(SQLAlchemyError)
    except ImportError:
        pass
    return tuple(errors)


def make_tracker(kind: str = "none", *, run_folder: Optional[str | Path] = None, **kwargs: Any) -> Tracker:
    """``"mlflow"``: a :class:`SafeTracker` around :class:`MLflowTracker` (``kwargs`` go to it),
    a :class:`BackgroundTracker` when the store is on another machine; ``"tensorboard"``: a
    :class:`SafeTracker` around :class:`TensorBoardTracker` (``run_folder`` and ``kwargs``,
    ``run_name`` and ``log_dir``, go to it); ``"none"``: the no-op :class:`Tracker`
    (``kwargs`` are ignored, so callers can pass the same ones whatever the kind).
    ``run_folder`` is the folder a training run writes; MLflow keeps its own store.

    A local store stays in line: writing to this machine's disk takes milliseconds, and
    each call has landed when it returns (the artifacts of a finished run are there).
    """
    if kind == "none":
        return Tracker()
    if kind == "mlflow":
        inner = MLflowTracker(**kwargs)
        return BackgroundTracker(inner) if inner.remote else SafeTracker(inner)
    if kind == "tensorboard":
        return SafeTracker(TensorBoardTracker(run_folder=run_folder, **kwargs))
    raise ValueError(f"tracking={kind!r} is not one of {', '.join(repr(k) for k in TRACKERS)}")
