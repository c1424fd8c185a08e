"""The CLI's private Prefect API: a real server child on loopback that answers, stops with its owner,
and turns a child that dies into one sentence."""

from __future__ import annotations

import gc
import json
import urllib.request
from pathlib import Path

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


def test_serves_prefect_on_loopback_and_stops(prefect_home: Path) -> None:
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
