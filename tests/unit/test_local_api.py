"""The CLI's private Prefect API: a real server child on loopback that answers, stops with its owner,
and turns a child that dies into one sentence."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from mlops.cli import local_api
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
