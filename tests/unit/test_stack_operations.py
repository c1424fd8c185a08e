"""Operating the local stack without its servers: the prediction-log hash key, MLflow without its job
workers, `up` waiting for the champion (and saying so), `mlops restart NAME`, and `stack-status`
reading the model server's /ready (degraded, loading, no champion yet). Fake servers on loopback
stand in for MLflow and the model server."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest
from typer.testing import CliRunner

from mlops.cli import stack as cli_stack
from mlops.core.startup import poll
from mlops.stack import options as stack_options
from mlops.stack import processes as stack_processes
from mlops.stack import readiness
from mlops.stack import supervisor as stack

Route = Callable[[], tuple[int, dict[str, Any]]]


class FakeHTTP:
    """A loopback server answering GET paths from `routes` (path without the query -> (status, JSON body))."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.hits: dict[str, int] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                fake.hits[path] = fake.hits.get(path, 0) + 1
                code, body = fake.routes[path]() if path in fake.routes else (404, {})
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fakes() -> Iterator[Callable[[dict[str, Route]], FakeHTTP]]:
    made: list[FakeHTTP] = []

    def make(routes: dict[str, Route]) -> FakeHTTP:
        made.append(FakeHTTP(routes))
        return made[-1]

    yield make
    for f in made:
        f.close()


ALIAS = "/api/2.0/mlflow/registered-models/alias"
NO_ALIAS: Route = lambda: (400, {"error_code": "INVALID_PARAMETER_VALUE",  # noqa: E731
                                 "message": "Registered model alias champion not found."})
CHAMPION_3: Route = lambda: (200, {"model_version": {"version": "3"}})  # noqa: E731
LOADING: Route = lambda: (503, {"ready": False, "state": "not ready",  # noqa: E731
                                "reason": "cannot resolve churn@champion: ConnectionError"})


def opts(tmp_path: Path, **kw: Any) -> stack_options.StackOptions:
    return stack_options.StackOptions.from_env(environ={}, state_dir=tmp_path / "state", **kw)


def captured(sup: stack.Supervisor, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[list[str], dict[str, str]]]:
    """What each launcher would start (command, environment), without starting it."""
    started: dict[str, tuple[list[str], dict[str, str]]] = {}
    monkeypatch.setattr(sup, "start", lambda name, cmd, env, probe: started.setdefault(name, (cmd, env)))
    return started


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)


def record(proc: subprocess.Popen[bytes], name: str, url: str | None = None) -> stack_processes.ProcessRecord:
    return stack_processes.ProcessRecord(name=name, pid=proc.pid, create_time=psutil.Process(proc.pid).create_time(),
                                         cmd=["sleep"], log="/dev/null", url=url)


def write_state(state_dir: Path, model_name: str | None = None, options: dict[str, Any] | None = None,
                **processes: stack_processes.ProcessRecord) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    stack_processes.write_state(stack_processes.StackState(state_dir=str(state_dir), started_at="t",
                                                           processes=processes, model_name=model_name,
                                                           options=options or {}))


# ---- secrets and MLflow's workers -------------------------------------------------------------


def test_the_model_server_and_worker_get_a_kept_private_hash_key_never_on_a_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    o = opts(tmp_path)
    sup = stack.Supervisor(o)
    sup.state.work_pool = "mlops-local"
    monkeypatch.setattr(sup, "recover_orphaned_runs", lambda: [])
    started = captured(sup, monkeypatch)
    sup.launch_model_server()
    sup.launch_worker()
    sup.close()
    key_file = o.state_dir / stack_options.HASH_KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    assert len(key) == 64
    for name in ("model-server", "worker"):
        cmd, env = started[name]
        assert env["MLOPS_LOG_HASH_KEY"] == key and key not in shlex.join(cmd)
    assert "MLOPS_LOG_HASH_KEY" not in sup.env, "only the processes that hash get the key"
    # kept across restarts (hashed ids stay joinable), made private again, and the environment wins
    key_file.chmod(0o644)
    assert stack_options.load_log_hash_key(o) == key and key_file.stat().st_mode & 0o777 == 0o600
    mine = stack_options.StackOptions.from_env(environ={"MLOPS_LOG_HASH_KEY": "from-env"}, state_dir=o.state_dir)
    assert stack_options.load_log_hash_key(mine) == "from-env"


def test_the_hash_key_makes_the_model_server_hash_not_drop() -> None:
    from mlops.serving.predictlog import Redactor, hash_key_from_env

    key = hash_key_from_env({"MLOPS_LOG_HASH_KEY": "k" * 64})
    redactor = Redactor(frozenset({"customer_id"}), "hash", key)
    assert redactor.hashed == ["customer_id"] and redactor.dropped == []
    assert redactor.column("customer_id", ["C-1"]) != ["C-1"]


def test_mlflow_runs_without_its_job_workers_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def mlflow_env(o: stack_options.StackOptions) -> dict[str, str]:
        sup = stack.Supervisor(o)
        started = captured(sup, monkeypatch)
        sup.launch_mlflow()
        sup.close()
        return started["mlflow"][1]

    assert mlflow_env(opts(tmp_path))["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert mlflow_env(opts(tmp_path, mlflow_jobs=True))["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"
    asked = stack_options.StackOptions.from_env(environ={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"},
                                                state_dir=tmp_path / "state")
    assert mlflow_env(asked)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


# ---- up waits for the champion ------------------------------------------------------------------


def test_ready_is_read_tolerantly() -> None:
    assert readiness.parse_ready(200, {"ready": True, "model_version": "2"}).serving
    degraded = readiness.parse_ready(200, {"ready": True, "status": "degraded", "reason": "registry unreachable",
                                           "model_version": 2})
    assert degraded.degraded and degraded.version == "2" and degraded.reason == "registry unreachable"
    assert readiness.parse_ready(200, {"degraded": True}).degraded
    assert not readiness.parse_ready(503, {"ready": False}).serving
    assert not readiness.parse_ready(503, "not json").serving


def test_up_waits_until_the_model_server_serves_the_champion(fakes: Callable[..., FakeHTTP]) -> None:
    answers = iter([LOADING] * 3)
    served: Route = lambda: next(answers, lambda: (200, {"ready": True, "model_version": "3"}))()  # noqa: E731
    serve, mlflow = fakes({"/ready": served}), fakes({ALIAS: CHAMPION_3})
    said: list[str] = []
    got = readiness.wait_serving(serve.url, mlflow.url, "churn", 10, progress=said.append)
    assert got == readiness.Serving("3") and serve.hits["/ready"] == 4
    assert got.summary("churn") == "the model server serves the champion, churn v3"


def test_up_says_plainly_when_there_is_no_champion(fakes: Callable[..., FakeHTTP]) -> None:
    serve, mlflow = fakes({"/ready": LOADING}), fakes({ALIAS: NO_ALIAS})
    got = readiness.wait_serving(serve.url, mlflow.url, "churn", 10)
    assert got == readiness.Serving(None) and "no champion yet" in got.summary("churn")
    unknown = fakes({ALIAS: lambda: (404, {"error_code": "RESOURCE_DOES_NOT_EXIST"})})
    assert readiness.wait_serving(serve.url, unknown.url, "churn", 10) == readiness.Serving(None)


def test_waiting_for_the_champion_shows_progress_and_its_timeout_names_the_option(
        fakes: Callable[..., FakeHTTP], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readiness, "PROGRESS_SECONDS", 0.2)
    serve, mlflow = fakes({"/ready": LOADING}), fakes({ALIAS: CHAMPION_3})
    said: list[str] = []
    with pytest.raises(stack.StackError, match=r"did not load the champion of churn within 2 s; raise the limit "
                                               r"with --timeout"):
        readiness.wait_serving(serve.url, mlflow.url, "churn", 1.5, progress=said.append)
    assert said and all("model server: loading champion v3" in line for line in said)


def test_a_champion_the_server_refuses_ends_the_wait_with_the_reason(
        fakes: Callable[..., FakeHTTP], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readiness, "LOAD_FAILURE_PATIENCE", 0.3)
    refused = (503, {"ready": False, "reason": "version 3 not served: its gate failed"})
    serve, mlflow = fakes({"/ready": lambda: refused}), fakes({ALIAS: CHAMPION_3})
    got = readiness.wait_serving(serve.url, mlflow.url, "churn", 10)
    assert got.champion == "3" and "its gate failed" in got.problem


def test_a_server_that_is_not_healthy_in_time_names_the_timeout_option(tmp_path: Path) -> None:
    o = opts(tmp_path, timeout=0.5)
    sup = stack.Supervisor(o)
    try:
        slow = sup.start("mlflow", [sys.executable, "-c", "import time; time.sleep(60)"], dict(sup.env), lambda: False)
        with pytest.raises(stack.StackError, match="the MLflow server was not healthy within 0 s; raise the limit "
                                                   "with --timeout; last lines of"):
            slow.result()
    finally:
        sup.close()
        stack.down(o.state_dir, grace=5)


def test_up_says_which_components_it_is_still_waiting_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "PROGRESS_SECONDS", 0.1)
    sup = stack.Supervisor(opts(tmp_path))
    done: Future[float] = Future()
    threading.Timer(0.5, lambda: done.set_result(0.5)).start()
    monkeypatch.setattr(sup, "launchers", lambda: {"model-server": lambda: done})
    said: list[str] = []
    timings: dict[str, float] = {}
    stack._bring_up(sup, "0 * * * *", {"model-server"}, True, timings, said.append)
    sup.close()
    assert any(line.startswith("  still starting: model server (") for line in said), said
    assert said[-1] == "  model server ready in 0.5 s" and timings == {"model-server": 0.5}


# ---- restart ------------------------------------------------------------------------------------


def test_restart_stops_the_component_and_starts_it_again_as_up_did(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    o = opts(tmp_path, serve_port=18123, timeout=20.0)
    old, other = sleeper(), sleeper()
    commands: list[list[str]] = []

    def fake_launch(self: stack.Supervisor) -> Future[float]:
        commands.append([str(self.opts.serve_port)])
        return self.start("model-server", [sys.executable, "-c", "import time; time.sleep(120)"], dict(self.env),
                          lambda: True)

    monkeypatch.setattr(stack.Supervisor, "launch_model_server", fake_launch)
    try:
        write_state(o.state_dir, "churn", o.record(), **{"model-server": record(old, "model-server"),
                                                         "webhook-bridge": record(other, "webhook-bridge")})
        res = CliRunner().invoke(cli_stack.app, ["restart", "model-server", "--state-dir", str(o.state_dir)])
        assert res.exit_code == 0, res.output
        assert "Restarted the model server" in res.output
        assert poll(lambda: old.poll() is not None, 10), "the running one was stopped"
        assert other.poll() is None, "the other components were left alone"
        new = stack_processes.read_state(o.state_dir).processes["model-server"]
        assert new.alive() and new.pid != old.pid and commands == [["18123"]], "started with the recorded options"
        res = CliRunner().invoke(cli_stack.app, ["restart", "nothing", "--state-dir", str(o.state_dir)])
        assert res.exit_code == 2 and "unknown component 'nothing'; choose from prefect, mlflow" in res.output
    finally:
        stack.down(o.state_dir, grace=2)
        for p in (old, other):
            p.kill()
            p.wait()


def test_restart_without_a_stack_says_so(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli_stack.app, ["restart", "worker", "--state-dir", str(tmp_path / "state")])
    assert res.exit_code == 2 and "no stack is recorded" in res.output and "mlops up" in res.output


def test_options_round_trip_through_the_pid_file(tmp_path: Path) -> None:
    o = opts(tmp_path, prefect_port=4999, serve_poll_seconds=1.0, mlflow_jobs=True, timeout=33.0)
    back = stack_options.StackOptions.from_record(o.state_dir, json.loads(json.dumps(o.record())), environ={})
    assert back.record() == o.record() and back.config_path == o.config_path
    assert "alert_url" not in o.record() and "environ" not in o.record()


# ---- stack-status reads /ready --------------------------------------------------------------------


def status_of(tmp_path: Path, ready: Route, alias: Route) -> tuple[stack.ComponentStatus, str, FakeHTTP, FakeHTTP]:
    serve, mlflow = FakeHTTP({"/ready": ready}), FakeHTTP({ALIAS: alias})
    procs = [sleeper(), sleeper()]
    try:
        state_dir = tmp_path / "state"
        write_state(state_dir, "churn", **{"mlflow": record(procs[0], "mlflow", mlflow.url),
                                           "model-server": record(procs[1], "model-server", serve.url)})
        row = {r.name: r for r in stack.status(state_dir)}["model-server"]
        out = CliRunner().invoke(cli_stack.app, ["stack-status", "--state-dir", str(state_dir)]).output
        return row, out, serve, mlflow
    finally:
        for p in procs:
            p.kill()
            p.wait()
        serve.close()
        mlflow.close()


def test_stack_status_shows_a_degraded_model_server(tmp_path: Path) -> None:
    body = {"ready": True, "status": "degraded", "reason": "registry unreachable", "model_version": "2"}
    row, out, _, _ = status_of(tmp_path, lambda: (200, body), CHAMPION_3)
    assert row.healthy and row.condition == "degraded"
    assert "degraded: registry unreachable" in row.detail and "serving churn v2" in row.detail
    assert "degraded" in out
    assert row.rss_bytes > 0 and row.processes == 1 and "GiB resident in 2 processes" in out  # the stack's memory


def test_stack_status_tells_loading_the_champion_from_having_none(tmp_path: Path) -> None:
    row, out, _, _ = status_of(tmp_path, LOADING, CHAMPION_3)
    assert row.healthy is False and row.condition == "loading" and "champion v3 not loaded yet" in row.detail
    assert "no champion" not in out
    row, _, _, _ = status_of(tmp_path, LOADING, NO_ALIAS)
    assert row.healthy and row.detail == "up, no champion yet"
    row, _, _, _ = status_of(tmp_path, lambda: (200, {"ready": True, "model_version": "3"}), CHAMPION_3)
    assert row.healthy and not row.condition and row.detail == "serving churn v3"
