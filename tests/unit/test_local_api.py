"""The CLI's private Prefect API: a real server child on loopback that answers, stops with its owner,
and turns a child that dies into one sentence."""

from __future__ import annotations

import contextlib
import gc
import json
import shutil
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mlops.cli import local_api
from mlops.core import startup
from mlops.core.errors import MLOpsError


@pytest.fixture
def prefect_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return tmp_path / "prefect"


@pytest.mark.process
def test_serves_prefect_on_loopback_and_stops(prefect_home: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # the migrated template of this machine, copied with a mark only a seeded database can carry
    template = startup.prefect_database_template()
    assert template is not None, "a migrated Prefect database could not be made"
    monkeypatch.setenv("MLOPS_CACHE_DIR", str(tmp_path / "cache"))
    marked = startup.cache_dir() / template.name
    marked.parent.mkdir()
    shutil.copyfile(template, marked)
    with contextlib.closing(sqlite3.connect(marked)) as con, con:
        con.execute("CREATE TABLE seeded_from_template (mark TEXT)")
    api = local_api.LocalAPI()
    assert api.url.startswith("http://127.0.0.1:")
    api.start()
    try:
        api.wait_ready(timeout=120)
        with urllib.request.urlopen(f"{api.url}/health", timeout=5) as r:
            assert json.loads(r.read()) is True
        proc = api.proc
        assert proc is not None and proc.poll() is None
    finally:
        api.stop()
    assert proc.wait(timeout=15) is not None, "stopped with its owner"
    assert (prefect_home / "prefect.db").exists(), "its database lives under PREFECT_HOME"
    with contextlib.closing(sqlite3.connect(prefect_home / "prefect.db")) as con:
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"seeded_from_template", "flow_run", "alembic_version"} <= tables, "a new database starts from the template"


def test_a_server_that_dies_while_starting_is_one_sentence(prefect_home: Path) -> None:
    api = local_api.LocalAPI()
    api.start()
    assert api.proc is not None
    api.proc.kill()
    api.proc.wait()
    with pytest.raises(MLOpsError, match=r"local Prefect server exited with code -9 while starting on 127\.0\.0\.1:"):
        api.wait_ready(timeout=30)


def test_a_configured_api_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setattr(local_api, "_current", None)
    assert local_api.start_local_api() is None
    assert local_api.current() is None


# ---- the start-up helpers every launcher shares (mlops.core.startup) ---------------------------


def test_frozen_imports_collect_nothing_inside_and_freeze_what_they_loaded() -> None:
    gc.enable()
    before = gc.get_freeze_count()
    with startup.frozen_imports():
        assert not gc.isenabled()
        with startup.frozen_imports():  # nested: the outer block keeps collection off
            kept = [[] for _ in range(1000)]
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() >= before + len(kept)
    gc.unfreeze()


def test_wait_until_returns_the_probe_value_names_a_timeout_and_a_dead_process() -> None:
    calls = iter([None, 0, "up"])
    assert startup.wait_until(lambda: next(calls), 5, "never", interval=0.001) == "up"
    with pytest.raises(startup.WaitTimeout, match=r"^the thing was not ready within 0 s; see its log$"):
        startup.wait_until(lambda: False, 0, "the thing was not ready", detail=lambda: "see its log")
    with pytest.raises(startup.WaitAborted, match="exited with code 3"):
        startup.wait_until(lambda: True, 5, "never", gone=lambda: "exited with code 3")
    with pytest.raises(ZeroDivisionError):  # a bug in the probe is not "not yet" unless asked
        startup.wait_until(lambda: 1 / 0, 5, "never")
    flaky = iter([OSError("refused"), True])

    def probe() -> bool:
        value = next(flaky)
        if isinstance(value, Exception):
            raise value
        return value

    assert startup.wait_until(probe, 5, "never", interval=0.001, ignore=(OSError,)) is True
    assert startup.poll(lambda: 0, 0.01) == 0 and startup.http_ok("http://127.0.0.1:9/") is False


# ---- a running stack's API instead of a second private one (mlops.cli.common.use_running_stack) ---


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MLOPS_HOME in tmp_path and none of the variables `use_running_stack` sets (restored afterwards)."""
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLOPS_ARTIFACT_ROOT", "MLOPS_LOG_HASH_KEY",
                 "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING"):
        monkeypatch.setenv(name, "x")  # recorded, so the test's own settings are undone too
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(local_api, "_current", None)
    return tmp_path / "state"


def _stack_with(state: Path, url: str, alive: bool) -> Any:
    import subprocess
    import sys

    import psutil

    from mlops.stack import processes

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    rec = processes.ProcessRecord(name="prefect", pid=proc.pid, create_time=psutil.Process(proc.pid).create_time(),
                                  cmd=["prefect"], log="/dev/null", url=url)
    mlflow = processes.ProcessRecord(**{**rec.__dict__, "name": "mlflow", "url": "http://127.0.0.1:9"})
    state.mkdir(parents=True, exist_ok=True)
    (state / "log_hash_key").write_text("stack-key\n")
    processes.write_state(processes.StackState(state_dir=str(state), started_at="t",
                                               processes={"prefect": rec, "mlflow": mlflow}))
    if not alive:
        proc.kill()
        proc.wait()
    return proc


def test_a_command_uses_the_running_stacks_api_instead_of_starting_its_own(clean_env: Path) -> None:
    import os
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from mlops.cli import common

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()
            self.wfile.write(b"true")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    proc = _stack_with(clean_env, url, alive=True)
    try:
        assert common.use_running_stack() == f"{url}/api"
        assert os.environ["PREFECT_API_URL"] == f"{url}/api"
        assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:9"
        assert os.environ["MLOPS_ARTIFACT_ROOT"] == "mlflow-artifacts:/"
        assert os.environ["MLOPS_LOG_HASH_KEY"] == "stack-key"
        assert local_api.start_local_api() is None and local_api.current() is None, "no second Prefect API"
    finally:
        proc.kill()
        proc.wait()
        server.shutdown()
        server.server_close()


def test_without_a_running_stack_a_command_keeps_its_private_api(clean_env: Path) -> None:
    import os

    from mlops.cli import common

    _stack_with(clean_env, "http://127.0.0.1:9", alive=False)
    assert common.use_running_stack() is None
    assert "PREFECT_API_URL" not in os.environ and "MLFLOW_TRACKING_URI" not in os.environ
    os.environ["PREFECT_API_URL"] = "http://127.0.0.1:4200/api"  # what the user set wins (undone by the fixture)
    assert common.use_running_stack() is None and os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
