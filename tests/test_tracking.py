"""taa.tracking: the MLflow and TensorBoard adapters write what they are given, which reads back;
a failing backend never stops a run.

The MLflow tests share one sqlite store per module: creating its tables takes seconds,
so later stores are copies of the first (a copy opens in milliseconds). Every test runs
in an empty working directory, so a misplaced default could never write into the repo.
"""

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from taa.config import RecipeConfig
import taa.tracking
from taa.tracking import (
    HTTP_LIMITS,
    BackgroundTracker,
    MLflowTracker,
    SafeTracker,
    Tracker,
    TrackingWarning,
    flatten_params,
    make_tracker,
)

# MLflow's own use of SQLAlchemy; nothing taa can change
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")


@pytest.fixture(autouse=True)
def empty_working_directory(tmp_path, monkeypatch):
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return workdir


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One initialised sqlite store: ``uri``, its ``db`` file, an ``artifacts`` folder."""
    mlflow = pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.MlflowClient(uri).search_experiments()  # creates the tables (the slow part)
    return SimpleNamespace(root=root, db=root / "mlflow.db", uri=uri, artifacts=root / "artifacts")


def copy_of(store, path):
    """A store of its own, ready at once: a copy of the initialised database."""
    shutil.copy(store.db, path)
    return f"sqlite:///{path}"


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


# ---------------------------------------------------------------- MLflow


def test_mlflow_tracker_records_params_metrics_and_artifacts(store, tmp_path, empty_working_directory):
    recipe = RecipeConfig()
    tokenizer = tmp_path / "run" / "tokenizer"
    (tokenizer / "source").mkdir(parents=True)
    (tokenizer / "vocab.json").write_text("{}")
    (tokenizer / "source" / "merges.txt").write_text("a b\n")
    config = tmp_path / "run" / "recipe.yaml"
    config.write_text("task: copy\n")
    plot = tmp_path / "run" / "curves.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n")

    tracker = MLflowTracker(experiment="records", run_name="unit", tracking_uri=store.uri,
                            artifact_location=store.artifacts)
    tracker.log_params(recipe)  # a dataclass: flattened to dotted names
    tracker.log_params({"extra": {"sizes": [1, 2], "note": None}})
    for step, loss in ((10, 3.0), (20, 2.5), (30, 2.0)):
        tracker.log_metrics({"train_loss": loss, "lr": step * 1e-4}, step)
    tracker.log_metrics({"val_loss": np.float32(2.25), "val_bleu": 7}, 20)  # NumPy and int values
    tracker.log_artifact(config)
    tracker.log_artifact(tokenizer)  # a folder keeps its name
    tracker.log_artifact(plot, "plots")
    tracker.end()

    mlflow_client = client(store.uri)
    run = mlflow_client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "unit"
    params = run.data.params
    assert params["model.d_model"] == str(recipe.model.d_model)
    assert params["train.schedule"] == recipe.train.schedule
    assert params["data.length"] == str(recipe.data.length)
    assert params["task"] == "copy"
    assert params["extra.sizes"] == "[1, 2]" and params["extra.note"] == "None"
    assert len(params) == len(flatten_params(recipe)) + 2

    def history(key):
        return [(m.step, m.value) for m in mlflow_client.get_metric_history(tracker.run_id, key)]

    assert history("train_loss") == [(10, 3.0), (20, 2.5), (30, 2.0)]
    steps, rates = zip(*history("lr"))
    assert steps == (10, 20, 30) and rates == pytest.approx((1e-3, 2e-3, 3e-3))
    assert history("val_loss") == [(20, 2.25)] and history("val_bleu") == [(20, 7.0)]

    def listing(folder=None):
        return sorted(a.path for a in mlflow_client.list_artifacts(tracker.run_id, folder))

    assert listing() == ["plots", "recipe.yaml", "tokenizer"]
    assert listing("tokenizer") == ["tokenizer/source", "tokenizer/vocab.json"]
    assert listing("tokenizer/source") == ["tokenizer/source/merges.txt"]
    assert listing("plots") == ["plots/curves.png"]
    # the files lie under the experiment's artifact location, nothing in the working directory
    run_folder = Path(tracker.artifact_uri.removeprefix("file://"))
    assert run_folder.is_relative_to(store.artifacts)
    assert "tokenizer/source/merges.txt" in files_under(run_folder)
    assert files_under(empty_working_directory) == []


def test_mlflow_tracker_rejects_bad_calls_by_name(store):
    tracker = MLflowTracker(experiment="records", tracking_uri=store.uri)
    with pytest.raises(TypeError, match="metric 'bleu' is not a number: 'n/a'"):
        tracker.log_metrics({"bleu": "n/a"}, 1)
    with pytest.raises(FileNotFoundError, match="artifact missing.txt: no such file or folder"):
        tracker.log_artifact("missing.txt")
    with pytest.raises(ValueError, match="status='DONE' is not one of FINISHED, FAILED, KILLED"):
        tracker.end("DONE")
    tracker.end("KILLED")
    tracker.end()  # a second end changes nothing
    assert client(store.uri).get_run(tracker.run_id).info.status == "KILLED"


def test_a_run_that_raises_ends_failed(store):
    with pytest.raises(RuntimeError, match="diverged"):
        with make_tracker("mlflow", experiment="records", tracking_uri=store.uri) as tracker:
            raise RuntimeError("diverged")
    assert client(store.uri).get_run(tracker.inner.run_id).info.status == "FAILED"


def test_mlflow_tracking_uri_variable_is_respected(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    tracker = MLflowTracker(experiment="records")
    tracker.end()
    assert tracker.tracking_uri == store.uri
    assert client(store.uri).get_run(tracker.run_id).info.status == "FINISHED"


def test_default_store_is_mlflow_db_and_mlruns_in_the_working_directory(store, empty_working_directory):
    copy_of(store, empty_working_directory / "mlflow.db")  # MLflow 3's default file, already initialised
    tracker = MLflowTracker(experiment="default-place")
    tracker.log_artifact(store.db, "copies")
    tracker.end()
    assert tracker.tracking_uri == f"sqlite:///{empty_working_directory}/mlflow.db"
    assert Path(tracker.artifact_uri.removeprefix("file://")).is_relative_to(empty_working_directory / "mlruns")


def test_a_store_that_breaks_mid_run_warns_once_and_goes_on(store, tmp_path):
    broken = tmp_path / "broken.db"
    tracker = make_tracker("mlflow", tracking_uri=copy_of(store, broken), artifact_location=tmp_path / "art")
    assert type(tracker) is SafeTracker  # a local store: each call lands before it returns
    tracker.log_params({"model": {"d_model": 8}})
    tracker.log_metrics({"train_loss": 1.0}, 1)
    with broken.open("r+b") as database:  # the disk under the store goes bad
        database.write(b"\0" * 100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.log_metrics({"train_loss": 0.5}, 2)
        tracker.log_metrics({"train_loss": 0.4}, 3)
        tracker.log_artifact(broken)
        tracker.end()
    assert [w.category for w in caught] == [TrackingWarning]
    message = str(caught[0].message)
    assert "\n" not in message and "log_metrics failed" in message and "not a database" in message
    assert tracker.error is not None


def test_a_server_that_does_not_answer_fails_at_once_naming_it(monkeypatch):
    for name in HTTP_LIMITS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")  # the user's own setting
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{closed.getsockname()[1]}"
    with pytest.raises(ConnectionError, match=rf"^tracking server {uri} cannot be reached: Connection refused$"):
        make_tracker("mlflow", tracking_uri=uri)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"  # kept
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == HTTP_LIMITS["MLFLOW_HTTP_REQUEST_TIMEOUT"]  # bounded


def test_a_database_another_process_holds_locked_fails_at_once_naming_it(store, tmp_path, monkeypatch):
    uri = copy_of(store, tmp_path / "locked.db")
    monkeypatch.setattr(taa.tracking, "PROBE_SECONDS", 0.1)  # how long a writer is waited for
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, and writing
    try:
        with pytest.raises(OSError, match=rf"^tracking store {re.escape(uri)}: cannot open the tracking database "
                                          rf"\({re.escape(str(tmp_path))}/locked.db: database is locked\)$"):
            make_tracker("mlflow", tracking_uri=uri)
    finally:
        holder.close()


def test_an_older_mlruns_folder_picked_by_default_says_what_to_set(empty_working_directory, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    (empty_working_directory / "mlruns" / "1").mkdir(parents=True)
    (empty_working_directory / "mlruns" / "1" / "meta.yaml").write_text("name: old\n")  # an MLflow 2 experiment
    with pytest.raises(ValueError, match=rf"^MLflow's default store file://{re.escape(str(empty_working_directory))}"
                                         r"/mlruns \(picked as ./mlruns holds an older MLflow's experiments\): "
                                         r"MLflow \S+ keeps runs in a folder only with MLFLOW_ALLOW_FILE_STORE=true; "
                                         r"or use a database, e.g. MLFLOW_TRACKING_URI=sqlite:///mlflow.db$"):
        MLflowTracker()


def test_a_folder_store_mlflow_is_allowed_to_open_records_the_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    with make_tracker("mlflow", tracking_uri=uri) as tracker:
        tracker.log_metrics({"train_loss": 1.0}, 1)
    assert tracker.error is None
    run = client(uri).get_run(tracker.inner.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"train_loss": 1.0}


def test_a_store_on_another_machine_is_tracked_from_a_worker_thread(monkeypatch):
    class Remote(Tracker):
        remote = True

        def __init__(self, **kwargs):
            pass

    monkeypatch.setattr(taa.tracking, "MLflowTracker", Remote)
    tracker = make_tracker("mlflow", tracking_uri="http://tracking.example:5000")
    assert type(tracker) is BackgroundTracker and type(tracker.inner) is Remote
    tracker.end()


# ---------------------------------------------------------------- SafeTracker


class Recording(Tracker):
    def __init__(self, fail_on=None):
        self.calls, self.fail_on = [], fail_on

    def _record(self, name, *args):
        self.calls.append((name, *args))
        if name == self.fail_on:
            raise ConnectionError("tracking server went away\n(a long second line)")

    def log_params(self, params):
        self._record("log_params", params)

    def log_metrics(self, metrics, step):
        self._record("log_metrics", metrics, step)

    def log_artifact(self, path, folder=None):
        self._record("log_artifact", path, folder)

    def end(self, status="FINISHED"):
        self._record("end", status)


def test_safe_tracker_passes_every_call_through():
    inner = Recording()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with SafeTracker(inner) as tracker:
            tracker.log_params({"a": 1})
            tracker.log_metrics({"loss": 1.0}, 3)
            tracker.log_artifact("f.txt", "files")
    assert inner.calls == [
        ("log_params", {"a": 1}), ("log_metrics", {"loss": 1.0}, 3), ("log_artifact", "f.txt", "files"),
        ("end", "FINISHED"),
    ]


def _five_step_trainer(tracker):
    """A Trainer of a 2-weight linear model for 5 steps, logging every step to ``tracker``."""
    torch = pytest.importorskip("torch")
    from taa.config import TrainConfig
    from taa.torch.training.loop import Trainer

    batch = torch.ones(4, 2)

    def compute_loss(model, batch):
        return model(batch).pow(2).sum(), batch.shape[0]

    train = TrainConfig(steps=5, log_every=1, schedule="constant", lr=0.01, threads=1)
    return Trainer(torch.nn.Linear(2, 1), train, compute_loss, iter(lambda: batch, None), d_model=2, tracker=tracker,
                   evaluate=lambda model: {"val_loss": 1.0}, progress=False)


def test_failing_backend_warns_once_and_training_goes_on():
    torch = pytest.importorskip("torch")
    inner = Recording(fail_on="log_metrics")
    tracker = SafeTracker(inner)
    trainer = _five_step_trainer(tracker)
    threads = torch.get_num_threads()  # fit() sets the thread count for the process
    try:
        with pytest.warns(TrackingWarning) as caught:
            result = trainer.fit()
            tracker.end()
    finally:
        torch.set_num_threads(threads)
    assert result.steps == 5 and len(result.history) == 5
    assert len(caught) == 1
    assert str(caught[0].message) == (
        "tracking turned off for the rest of the run: log_metrics failed with "
        "ConnectionError: tracking server went away"
    )
    assert caught[0].filename.endswith("loop.py")  # the warning points at the caller
    assert [call[0] for call in inner.calls] == ["log_metrics"]  # nothing after the failure
    assert isinstance(tracker.error, ConnectionError)


# ---------------------------------------------------------------- BackgroundTracker


class Blocking(Recording):
    """A backend that does not answer: each call is recorded, then waits for ``release``."""

    def __init__(self, fail_on=None):
        super().__init__(fail_on)
        self.release = threading.Event()

    def _record(self, name, *args):
        assert self.release.wait(30), "never released"
        super()._record(name, *args)


@pytest.fixture
def blocking():
    inner = Blocking()
    yield inner
    inner.release.set()  # let a worker still waiting finish


def test_background_tracker_never_makes_the_run_wait(blocking):
    torch = pytest.importorskip("torch")
    tracker = BackgroundTracker(blocking)
    trainer = _five_step_trainer(tracker)
    threads = torch.get_num_threads()  # fit() sets the thread count for the process
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            tracker.log_params({"a": 1})
            result = trainer.fit()  # every call waits in the queue: the backend has answered none
        finally:
            torch.set_num_threads(threads)
        assert result.steps == 5 and blocking.calls == []
        blocking.release.set()
        tracker.end()  # waits for the queue: every call made, in order, the end last
    assert [call[0] for call in blocking.calls] == ["log_params", *["log_metrics"] * 6, "end"]
    assert [call[2] for call in blocking.calls if call[0] == "log_metrics"] == [1, 2, 3, 4, 5, 5]  # 5: validation
    assert tracker.error is None


def test_background_tracker_warns_once_for_a_failed_call_and_drops_the_rest():
    inner = Recording(fail_on="log_metrics")
    tracker = BackgroundTracker(inner)
    with pytest.warns(TrackingWarning) as caught:
        tracker.log_metrics({"loss": 1.0}, 1)
        tracker.log_metrics({"loss": 0.5}, 2)
        tracker.log_artifact("f.txt")
        tracker.end()
    assert [str(w.message) for w in caught] == [
        "tracking turned off for the rest of the run: log_metrics failed with ConnectionError: tracking server went away"
    ]
    assert caught[0].filename == __file__  # the warning points at the caller, not at the worker thread
    assert inner.calls == [("log_metrics", {"loss": 1.0}, 1)]
    assert isinstance(tracker.error, ConnectionError)


def test_background_tracker_end_gives_up_on_a_backend_that_does_not_answer(blocking):
    tracker = BackgroundTracker(blocking, end_timeout=0.01)
    with pytest.warns(TrackingWarning) as caught:
        tracker.log_metrics({"loss": 1.0}, 1)
        tracker.log_metrics({"loss": 0.5}, 2)
        tracker.end()
        tracker.end()  # a second end changes nothing
    assert [str(w.message) for w in caught] == [
        "tracking gave up on the tracking store after 0.01 s without an answer: "
        "the run's last 3 tracking calls are not recorded"
    ]
    assert isinstance(tracker.error, TimeoutError)


def test_background_tracker_turns_off_when_the_backend_falls_too_far_behind(blocking):
    tracker = BackgroundTracker(blocking, queue_size=2)
    with pytest.warns(TrackingWarning) as caught:
        for step in range(1, 6):
            tracker.log_metrics({"loss": 1.0 / step}, step)
    assert [str(w.message) for w in caught] == [
        "tracking turned off for the rest of the run: the tracking store is 2 calls behind"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.end()  # off: nothing more to say, nothing to wait for
    assert isinstance(tracker.error, TimeoutError)


def test_background_tracker_sends_a_copy_of_the_metrics(blocking):
    tracker = BackgroundTracker(blocking)
    metrics = {"loss": 1.0}
    tracker.log_metrics(metrics, 1)
    metrics["loss"] = 0.5  # the caller reuses its dict before the worker sent it
    blocking.release.set()
    tracker.end()
    assert blocking.calls[0] == ("log_metrics", {"loss": 1.0}, 1)


# ---------------------------------------------------------------- make_tracker


def test_make_tracker_none_writes_nothing_and_needs_no_mlflow(monkeypatch, empty_working_directory, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    artifact = tmp_path / "model.txt"
    artifact.write_text("weights")
    with make_tracker("none", run_name="ignored") as tracker:
        tracker.log_params({"model": {"d_model": 8}})
        tracker.log_metrics({"train_loss": 1.0}, 1)
        tracker.log_artifact(artifact)
    assert type(tracker) is Tracker
    assert files_under(empty_working_directory) == []


def test_make_tracker_mlflow_without_mlflow_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ImportError, match=r"^MLflow tracking needs mlflow: pip install 'taa\[tracking\]'$"):
        make_tracker("mlflow")


def test_make_tracker_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match=r"^tracking='wandb' is not one of 'mlflow', 'tensorboard', 'none'$"):
        make_tracker("wandb")


# ---------------------------------------------------------------- TensorBoard


def scalars(folder):
    """``{tag: [(step, value), ...]}`` as TensorBoard reads the event files in ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def texts(folder, tag="params/text_summary"):
    """``[(step, text), ...]`` of a text summary in ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors(tag)]


@pytest.fixture
def tensorboard(monkeypatch):
    """tensorboard installed, and no Vertex AI folder set by the environment the tests run in."""
    pytest.importorskip("tensorboard")
    monkeypatch.delenv("AIP_TENSORBOARD_LOG_DIR", raising=False)


def test_tensorboard_tracker_writes_scalars_and_params_that_read_back(tensorboard, empty_working_directory):
    with make_tracker("tensorboard", run_name="copy") as tracker:
        tracker.log_params({"model": {"d_model": 8}, "sizes": [1, 2], "name": "a|b"})
        tracker.log_metrics({"train_loss": 2.5, "lr": np.float32(0.5), "note": "text", "nothing": None}, 10)
        tracker.log_metrics({"train_loss": 1.25, "valid_loss": float("nan")}, 20)
        tracker.log_metrics({"train_loss": float("inf")}, 30)
        tracker.log_artifact(empty_working_directory / "no-such-file")  # TensorBoard keeps no files
    assert isinstance(tracker, SafeTracker) and tracker.error is None
    folder = Path("runs/copy/tensorboard")
    assert tracker.inner.log_dir == folder
    found = scalars(folder)
    assert set(found) == {"train_loss", "lr", "valid_loss"}  # the text and the None are skipped
    assert found["train_loss"] == [(10, 2.5), (20, 1.25), (30, float("inf"))]
    assert found["lr"] == [(10, 0.5)]
    [(step, value)] = found["valid_loss"]
    assert step == 20 and np.isnan(value)  # written as it is
    [(step, table)] = texts(folder)
    assert step == 10  # with the first metrics
    assert "| model.d_model | 8 |" in table and "| sizes | [1, 2] |" in table and "| name | a&#124;b |" in table


def test_tensorboard_tracker_writes_no_file_before_the_first_metrics(tensorboard, tmp_path):
    with pytest.raises(RuntimeError):
        with make_tracker("tensorboard", run_folder=tmp_path / "run") as tracker:
            tracker.log_params({"a": 1})
            tracker.log_metrics({"note": "not a number"}, 1)
            raise RuntimeError("the run fails before it trains")
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_hides_the_steps_a_killed_run_logged_after_its_state(tensorboard, tmp_path):
    folder = tmp_path / "run"
    killed = make_tracker("tensorboard", run_folder=folder)
    for step in (1, 2, 3, 4):
        killed.log_metrics({"train_loss": float(step)}, step)
    killed.end("KILLED")
    with make_tracker("tensorboard", run_folder=folder) as resumed:  # from the state saved at step 2
        for step in (3, 4, 5):
            resumed.log_metrics({"train_loss": 10.0 * step}, step)
    assert len(list((folder / "tensorboard").iterdir())) == 2  # one event file each
    assert scalars(folder / "tensorboard")["train_loss"] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0), (5, 50.0)]


def test_aip_tensorboard_log_dir_comes_before_the_run_folder(tensorboard, tmp_path, monkeypatch):
    from taa.tracking import tensorboard_dir

    vertex = tmp_path / "vertex" / "logs"
    monkeypatch.setenv("AIP_TENSORBOARD_LOG_DIR", str(vertex))
    with make_tracker("tensorboard", run_name="copy", run_folder=tmp_path / "run") as tracker:
        tracker.log_metrics({"train_loss": 0.5}, 7)
    assert scalars(vertex) == {"train_loss": [(7, 0.5)]}
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("AIP_TENSORBOARD_LOG_DIR", "gs://bucket/job/logs")  # as Vertex AI sets it
    assert tensorboard_dir("copy") == Path("/gcs/bucket/job/logs")
    monkeypatch.delenv("AIP_TENSORBOARD_LOG_DIR")
    assert tensorboard_dir("copy") == Path("runs/copy/tensorboard")
    assert tensorboard_dir("copy", tmp_path / "run") == tmp_path / "run" / "tensorboard"
    with pytest.raises(ValueError, match="give log_dir, run_folder or run_name"):
        tensorboard_dir()


def test_a_tensorboard_folder_that_cannot_be_written_fails_at_once_in_one_line(tensorboard, tmp_path):
    from taa.api.training import _make_tracker
    from taa.config import ConfigError

    (tmp_path / "tensorboard").write_text("a file where the folder goes")
    with pytest.raises(NotADirectoryError, match=f"{tmp_path / 'tensorboard'} is not a folder$"):
        make_tracker("tensorboard", run_folder=tmp_path)
    with pytest.raises(ConfigError, match=r"^--tracking tensorboard: TensorBoard's event files cannot go in .* is "
                                          r"not a folder \(use --tracking none"):
        _make_tracker("tensorboard", "run", folder=tmp_path)
    with pytest.warns(TrackingWarning, match="training goes on untracked"):
        assert type(_make_tracker("tensorboard", "run", optional=True, folder=tmp_path)) is Tracker


def test_tensorboard_missing_says_what_to_install(monkeypatch, tmp_path):
    from taa.api.training import _make_tracker
    from taa.config import ConfigError

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"^TensorBoard tracking needs tensorboard: pip install tensorboard$"):
        make_tracker("tensorboard", run_folder=tmp_path / "run")
    with pytest.raises(ConfigError) as raised:
        _make_tracker("tensorboard", "run", folder=tmp_path / "run")
    assert str(raised.value) == ("--tracking tensorboard: TensorBoard tracking needs tensorboard: pip install "
                                 "tensorboard (use --tracking none to train without it)")
    assert not (tmp_path / "run").exists()


def test_inside_vertex_ai_mlflow_without_a_store_means_tensorboard(tensorboard, store, tmp_path, monkeypatch):
    from taa.api.training import _make_tracker

    monkeypatch.setenv("AIP_TENSORBOARD_LOG_DIR", str(tmp_path / "logs"))
    tracker = _make_tracker("mlflow", "run", folder=tmp_path / "run")
    assert isinstance(tracker.inner, taa.tracking.TensorBoardTracker) and tracker.inner.log_dir == tmp_path / "logs"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", copy_of(store, tmp_path / "mlflow.db"))  # a store the user chose
    with _make_tracker("mlflow", "run", folder=tmp_path / "run") as tracker:
        assert isinstance(tracker.inner, MLflowTracker)


def test_tensorboard_tracking_does_not_load_tensorflow(tensorboard, tmp_path):
    code = ("import sys\nfrom taa.tracking import make_tracker\n"
            f"with make_tracker('tensorboard', log_dir={str(tmp_path)!r}) as tracker:\n"
            "    tracker.log_metrics({'train_loss': 1.0}, 1)\n"
            "print('tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert scalars(tmp_path) == {"train_loss": [(1, 1.0)]}


def test_taa_train_tracking_tensorboard_writes_the_run_folder_s_event_files(tensorboard, tmp_path):
    from click.testing import CliRunner

    from taa.cli import main

    out = tmp_path / "copy"
    result = CliRunner().invoke(main, ["train", "copy", "--set", "train.steps=3", "--tracking", "tensorboard",
                                       "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    found = scalars(out / "tensorboard")
    [(step, loss)] = found["train_loss"]
    assert step == 3 and loss == pytest.approx(json.loads((out / "metrics.json").read_text())["final_train_loss"])
    assert "| train.steps | 3 |" in texts(out / "tensorboard")[0][1]


def test_a_long_error_keeps_the_system_error_it_wraps():
    from taa.tracking import _one_line

    error = RuntimeError("API request to http://host:5000/api failed: " + "x" * 300
                         + " (Caused by NewConnectionError(\"[Errno 111] Connection refused\"))")
    text = _one_line(error)
    assert len(text) == 200 and text.startswith("RuntimeError: API request to http://host:5000/api failed: xxx")
    assert text.endswith("xxx... [Errno 111] Connection refused")
    assert _one_line(ValueError("short\nsecond line")) == "ValueError: short"


def test_flatten_params_makes_dotted_names():
    nested = {"model": {"d_model": 64, "ffn": {"d_ff": 256}}, "name": "x", "sizes": [1, 2]}
    flat = {"model.d_model": 64, "model.ffn.d_ff": 256, "name": "x", "sizes": [1, 2]}
    assert flatten_params(nested) == flat
    assert flatten_params(flat) == flat  # already flat: unchanged
    with pytest.raises(TypeError, match="params must be a dict or a dataclass, got list"):
        flatten_params([1, 2])
