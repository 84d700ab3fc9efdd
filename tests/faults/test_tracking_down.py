"""A tracking server that is down costs seconds, not minutes, and never the run; so does a
database that cannot be opened; a tracking URI MLflow cannot use is one line.

The server is a closed port on this machine, or a small stand-in for an MLflow server
(:class:`FakeMLflowServer`) that answers the few REST calls a run makes and can go away
after a given number of answers. A run must end within :data:`LIMIT` seconds: MLflow's
own retries would hold it for about four minutes at the start, and as long again at the
first metrics after the server went away.
"""

import json
import socket
import threading
import warnings
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlparse

import pytest

from taa.folders import METRICS, RECIPE, WEIGHTS
from taa.tracking import HTTP_LIMITS, TrackingWarning

from .conftest import COPY, TINY, assert_one_line_error, cli

pytest.importorskip("mlflow")

LIMIT = 60  # seconds a run may take here; a stalled one takes minutes


class FakeMLflowServer(HTTPServer):
    """An MLflow tracking server in a thread, as far as a taa run needs one: experiment
    ``taa``, one run whose files go to the folder ``artifacts``; every request is kept
    in ``requests`` as ``(method, endpoint, json body)``. After ``answers`` answers it
    goes away: the port closes, so later requests are refused."""

    def __init__(self, artifacts, answers=None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.artifacts, self.answers_left = artifacts, answers
        self.requests = []
        self.run = {"info": {"run_id": "run1", "run_uuid": "run1", "experiment_id": "1", "status": "RUNNING",
                             "artifact_uri": (artifacts / "run1").as_uri(), "lifecycle_stage": "active"},
                    "data": {}}
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def uri(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def endpoints(self):
        return [endpoint for _, endpoint, _ in self.requests]

    def go_away(self):
        self.shutdown()
        self.server_close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.socket.fileno() != -1:
            self.go_away()


class _Handler(BaseHTTPRequestHandler):
    server: FakeMLflowServer

    def do_GET(self):
        self._answer(None)

    def do_POST(self):
        self._answer(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}"))

    def _answer(self, body):
        server = self.server
        if server.answers_left == 0:  # gone, though the port may not have closed yet: no answer
            self.close_connection = True
            return
        endpoint = urlparse(self.path).path.removeprefix("/api/2.0/mlflow/")
        server.requests.append((self.command, endpoint, body))
        answers = {
            "experiments/get-by-name": {"experiment": {"experiment_id": "1", "name": "taa", "lifecycle_stage": "active",
                                                       "artifact_location": server.artifacts.as_uri()}},
            "runs/create": {"run": server.run},
            "runs/get": {"run": server.run},
            "runs/log-batch": {},
            "runs/update": {"run_info": server.run["info"]},
        }
        if endpoint not in answers:  # the reachability probe (GET /) and anything else: 404
            self.send_error(404)
        else:
            data = json.dumps(answers[endpoint]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        if server.answers_left is not None:
            server.answers_left -= 1
            if server.answers_left == 0:  # the port closes once this handler returns
                threading.Thread(target=server.go_away, daemon=True).start()

    def log_message(self, *args):  # quiet
        pass


def closed_port():
    """A port on this machine where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def closed_port_uri():
    """An http URI on this machine where nothing listens."""
    return f"http://127.0.0.1:{closed_port()}"


def train(out, *options):
    """``taa train`` of the tiny copy run, tracked, in this process (the imports are paid
    once), in a thread given :data:`LIMIT` seconds; the click result and the tracking
    warnings."""
    outcome = {}

    def run():
        outcome["result"] = cli("train", COPY, *TINY, "--out", out, "--no-progress", "--tracking", "mlflow", *options)

    thread = threading.Thread(target=run, daemon=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thread.start()
        thread.join(LIMIT)
    assert not thread.is_alive(), f"taa train still running after {LIMIT} s"
    return outcome["result"], [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]


@pytest.fixture
def working_directory(tmp_path, monkeypatch):
    """An empty working directory; MLflow's HTTP settings as they were after the test
    (the tracker bounds them for the process)."""
    monkeypatch.chdir(tmp_path)  # nothing the run does lands in the repository
    for name in (*HTTP_LIMITS, "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_a_server_down_at_start_is_one_line_naming_it(working_directory, monkeypatch):
    uri = closed_port_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result, tracking_warnings = train(working_directory / "run")
    assert tracking_warnings == []
    assert_one_line_error(result, f"--tracking mlflow: tracking server {uri} cannot be reached",
                          "--tracking none", "--tracking-optional")
    assert not (working_directory / "run" / WEIGHTS).exists()


def test_tracking_optional_trains_untracked_with_one_warning(working_directory, monkeypatch):
    uri = closed_port_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result, [warning] = train(working_directory / "run", "--tracking-optional")
    assert result.exit_code == 0, result.output
    assert warning == (f"--tracking mlflow: tracking server {uri} cannot be reached: Connection refused; "
                       "training goes on untracked (--tracking-optional)")
    assert (working_directory / "run" / WEIGHTS).is_file()
    assert not (working_directory / "mlflow.db").exists() and not (working_directory / "mlruns").exists()


def test_a_server_that_answers_gets_the_whole_run(working_directory, monkeypatch):
    with FakeMLflowServer(working_directory / "artifacts") as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        result, tracking_warnings = train(working_directory / "run")
    assert result.exit_code == 0, result.output
    assert tracking_warnings == []
    sent = server.endpoints()
    assert sent[:3] == ["/", "experiments/get-by-name", "runs/create"]  # the probe, then the run
    assert sent[-1] == "runs/update" and server.requests[-1][2]["status"] == "FINISHED"
    batches = [body for method, endpoint, body in server.requests if endpoint == "runs/log-batch"]
    assert "params" in batches[0]
    steps = [metric["step"] for batch in batches[1:] for metric in batch["metrics"] if metric["key"] == "train_loss"]
    assert steps == sorted(steps) and steps[-1] == 12  # in order, up to the last step
    # the files were sent before the run was closed, though a worker thread sends them
    kept = {path.name for path in (working_directory / "artifacts" / "run1").iterdir()}
    assert {WEIGHTS, RECIPE, METRICS} <= kept


def test_a_server_that_goes_away_mid_run_costs_one_warning(working_directory, monkeypatch):
    # answers the probe, the experiment, the run and the parameters; then the port closes
    with FakeMLflowServer(working_directory / "artifacts", answers=4) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        result, [warning] = train(working_directory / "run")
    assert result.exit_code == 0, result.output
    assert server.endpoints() == ["/", "experiments/get-by-name", "runs/create", "runs/log-batch"]
    assert warning.startswith("tracking turned off for the rest of the run: log_metrics failed with MlflowException")
    assert server.uri in warning and warning.endswith("Connection refused")
    assert (working_directory / "run" / WEIGHTS).is_file()


def unopenable_databases(folder):
    """Paths of sqlite stores that cannot be opened, and the reason each error gives."""
    (folder / "tracking").mkdir()
    (folder / "notes.db").write_text("not a database\n" * 100)
    (folder / "notes.txt").write_text("a file, not a folder\n")
    return [(folder / "tracking", f"{folder / 'tracking'} is a folder"),
            (folder / "notes.db", f"{folder / 'notes.db'}: file is not a database"),
            (folder / "notes.txt" / "mlflow.db", f"{folder / 'notes.txt'} is not a folder")]


def test_an_sqlite_store_that_cannot_be_opened_is_one_line_naming_it(working_directory, monkeypatch):
    # MLflow would retry opening each for about 100 s, printing every failure
    for path, reason in unopenable_databases(working_directory):
        uri = f"sqlite:///{path}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        result, tracking_warnings = train(working_directory / "run")
        assert tracking_warnings == []
        assert_one_line_error(result, f"--tracking mlflow: MLFLOW_TRACKING_URI={uri}: cannot open the tracking "
                              f"database ({reason}) (use --tracking none", "--tracking-optional", max_lines=1)
        assert not (working_directory / "run" / WEIGHTS).exists()


def test_tracking_optional_trains_untracked_when_the_database_cannot_be_opened(working_directory, monkeypatch):
    (working_directory / "tracking").mkdir()
    uri = f"sqlite:///{working_directory / 'tracking'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result, [warning] = train(working_directory / "run", "--tracking-optional")
    assert result.exit_code == 0, result.output
    assert warning == (f"--tracking mlflow: MLFLOW_TRACKING_URI={uri}: cannot open the tracking database "
                       f"({working_directory / 'tracking'} is a folder); training goes on untracked "
                       "(--tracking-optional)")
    assert (working_directory / "run" / WEIGHTS).is_file()


def test_a_database_server_down_is_one_line_naming_it_without_the_password(working_directory, monkeypatch):
    port = closed_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql://taa:secret@127.0.0.1:{port}/runs")
    result, tracking_warnings = train(working_directory / "run")
    assert tracking_warnings == []
    output = assert_one_line_error(
        result, f"--tracking mlflow: MLFLOW_TRACKING_URI=postgresql://taa:***@127.0.0.1:{port}/runs: "
        f"database server 127.0.0.1:{port} cannot be reached: Connection refused", "--tracking-optional")
    assert "secret" not in output


def test_a_folder_store_is_one_line_saying_what_to_set_even_with_tracking_optional(working_directory, monkeypatch):
    uri = (working_directory / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result, tracking_warnings = train(working_directory / "run", "--tracking-optional")
    assert tracking_warnings == []
    output = assert_one_line_error(result, f"--tracking mlflow: MLFLOW_TRACKING_URI={uri}: MLflow ",
                                   " keeps runs in a folder only with MLFLOW_ALLOW_FILE_STORE=true; or use a "
                                   "database, e.g. MLFLOW_TRACKING_URI=sqlite:///mlflow.db (use --tracking none",
                                   max_lines=1)
    assert "maintenance" not in output and "--tracking-optional" not in output  # it will not come up by itself
    assert not (working_directory / "run" / WEIGHTS).exists()


def test_a_tracking_uri_of_an_unknown_scheme_is_an_error_even_with_tracking_optional(working_directory, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "foo://bar")
    result, tracking_warnings = train(working_directory / "run", "--tracking-optional")
    assert tracking_warnings == []
    output = assert_one_line_error(result, "--tracking mlflow: MLFLOW_TRACKING_URI=foo://bar: MLflow has no store "
                                   "for the scheme 'foo' (it knows ", "http, https", "sqlite",
                                   "(use --tracking none to train without it)", max_lines=1)
    assert "--tracking-optional" not in output
    assert not (working_directory / "run" / WEIGHTS).exists()
