"""Loopback helpers every test process shares: a free port, waiting for a started server, and calls
to a Prefect API that retry a busy server the way Prefect's own client does.

The waiting itself is the production loop, `mlops.core.startup.wait_until`.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from mlops.core.startup import WaitAborted, WaitTimeout, http_ok, poll, wait_until
from mlops.core.startup import free_port as free_port  # the loopback port every test uses

# Prefect's client retries these (a SQLite-backed server answers 503 while another write holds its lock)
RETRY_STATUSES = frozenset({429, 502, 503})


def tail(log: Path | None, lines: int = 30) -> str:
    """The last lines of a process log, for failure messages."""
    if log is None:
        return ""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def wait_started(probe: Callable[[], Any], proc: subprocess.Popen[bytes], what: str, timeout: float,
                 log: Path | None = None, interval: float = 0.2) -> None:
    """Until `probe()` passes while `proc` runs: its exit is a RuntimeError, the timeout a TimeoutError,
    each with the end of its log."""
    try:
        wait_until(probe, timeout, f"{what} was not ready", interval=interval, ignore=(httpx.HTTPError,),
                   gone=lambda: None if proc.poll() is None else f"{what} exited with {proc.returncode}:\n{tail(log)}",
                   detail=lambda: "\n" + tail(log))
    except WaitAborted as exc:
        raise RuntimeError(str(exc)) from None
    except WaitTimeout as exc:
        raise TimeoutError(str(exc)) from None


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path | None = None) -> None:
    """Until GET `url` answers 200 while `proc` runs."""
    wait_started(lambda: http_ok(url, timeout=1.0), proc, url, timeout, log)


def wait_for(probe: Callable[[], Any], *, timeout: float, interval: float = 0.05) -> Any:
    """Call `probe` until it returns something truthy; return that, or the last value at timeout."""
    return poll(probe, timeout, interval)


def prefect_call(method: str, url: str, *, retries: int = 5, **kw: Any) -> httpx.Response:
    """One Prefect API call, retried on 429/502/503 with a short backoff (as Prefect's client does);
    any other error status raises."""
    kw.setdefault("timeout", 10)
    for attempt in range(retries + 1):
        resp = httpx.request(method, url, **kw)
        if resp.status_code not in RETRY_STATUSES or attempt == retries:
            break
        time.sleep(min(2.0, 0.1 * 2**attempt))
    resp.raise_for_status()
    return resp


@contextmanager
def mlflow_server(folder: Path, timeout: float = 120.0) -> Iterator[str]:
    """An MLflow tracking server on loopback (SQLite store, artifacts served under `folder`), as `mlops up`
    runs it; yields its URL and stops it (its whole session) on exit."""
    import os
    import signal
    import sys

    port = free_port()
    log = folder / "mlflow-server.log"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
               MLFLOW_BACKEND_STORE_URI=f"sqlite:///{folder / 'mlflow-server.db'}")
    with log.open("wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--serve-artifacts",
                                 "--artifacts-destination", str(folder / "served"), "--default-artifact-root",
                                 "mlflow-artifacts:/", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, timeout=timeout, log=log)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its gunicorn/uvicorn workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
