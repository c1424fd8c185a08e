"""Whether the stack's model server serves the champion: what MLflow says the champion is, and what the
model server's `/ready` says, read tolerantly (a field may be absent; a degraded server says so).

Used by `mlops up` and `mlops restart` (they return once the champion is loaded, or say there is none)
and by `mlops stack-status`. Nothing here starts a process.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.core.startup import WaitAborted, WaitTimeout, wait_until
from mlops.stack.options import StackError, prefect_auth_header
from mlops.stack.processes import ProcessRecord, live_process, read_state

HEALTH_PATHS = {"prefect": "/api/health", "mlflow": "/health", "model-server": "/health",
                "webhook-bridge": "/health"}

PROGRESS_SECONDS = 10.0  # how often a long wait says what it is waiting for
# A load the model server reports as failed ("version N not served") is retried 5 s later; the same
# failure for this long is taken as final for `up` (the stack stays up and says why).
LOAD_FAILURE_PATIENCE = 12.0
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


@dataclass(frozen=True)
class Ready:
    """The model server's `/ready`: 200 with the version it serves, or 503 with why not."""

    code: int | None  # None when the server did not answer
    version: str | None = None
    degraded: bool = False
    reason: str = ""
    state: str = ""

    @property
    def serving(self) -> bool:
        return self.code == 200 or (self.degraded and self.version is not None)


def parse_ready(code: int, body: Any) -> Ready:
    """A `/ready` answer, whatever fields it has: `status: degraded` or `degraded: true` mark a server
    that serves but cannot reach something (the registry); `reason`/`detail` say why."""
    raw = body if isinstance(body, dict) else {}
    status = str(raw.get("status") or "").lower()
    degraded = status == "degraded" or raw.get("degraded") is True
    version = raw.get("model_version", raw.get("version"))
    reason = raw.get("reason") or raw.get("detail") or raw.get("degraded_reason") or ""
    return Ready(code, None if version in (None, "") else str(version), degraded, str(reason),
                 str(raw.get("state") or status))


def read_ready(serve_url: str, timeout: float = 2.0) -> Ready:
    """GET `/ready` of the model server at `serve_url`; Ready(code=None) when it does not answer."""
    import httpx

    try:
        resp = httpx.get(f"{serve_url}/ready", timeout=timeout)
    except httpx.HTTPError as exc:
        return Ready(None, reason=type(exc).__name__)
    try:
        body = resp.json()
    except ValueError:
        body = {}
    return parse_ready(resp.status_code, body)


def champion_version(mlflow_url: str, model: str, auth: tuple[str, str] | None = None,
                     timeout: float = 5.0) -> str | None:
    """The version holding `model@champion` on the MLflow server, None when there is none.

    Raises httpx.HTTPError (or ValueError) while MLflow does not answer usefully.
    """
    import httpx

    resp = httpx.get(f"{mlflow_url}/api/2.0/mlflow/registered-models/alias",
                     params={"name": model, "alias": "champion"}, auth=auth, timeout=timeout)
    if resp.status_code in (400, 404) and resp.json().get("error_code") in NOT_FOUND_CODES:
        return None
    resp.raise_for_status()
    return str(resp.json()["model_version"]["version"])


@dataclass(frozen=True)
class Serving:
    """What `up` found: the champion's version (None: there is none yet) and, if it is not served, why."""

    champion: str | None
    problem: str = ""

    def summary(self, model: str) -> str:
        if self.champion is None:
            return (f"no champion yet: the model server answers 503 until a training run promotes a version of "
                    f"{model} (`mlops train`, or a webhook)")
        if self.problem:
            return f"the model server does not serve champion {model} v{self.champion}: {self.problem}"
        return f"the model server serves the champion, {model} v{self.champion}"


def wait_serving(serve_url: str, mlflow_url: str, model: str, timeout: float, *,
                 auth: tuple[str, str] | None = None, gone: Callable[[], str | None] | None = None,
                 progress: Callable[[str], None] | None = None, stop: threading.Event | None = None,
                 detail: Callable[[], str] | None = None) -> Serving:
    """Wait until the model server serves the champion, or MLflow says there is none.

    A load that keeps failing (the same "not served" reason for LOAD_FAILURE_PATIENCE s) ends the wait
    with the reason, not an error: the server runs and says why in `/model`. A timeout is a StackError
    naming `--timeout`; `gone()` (the server died) ends it at once.
    """
    say = progress or (lambda _m: None)
    t0 = last_said = time.monotonic()
    failing: dict[str, float] = {}

    def probe() -> Serving | None:
        nonlocal last_said
        ready = read_ready(serve_url)
        if ready.serving:
            return Serving(ready.version)
        try:
            champion = champion_version(mlflow_url, model, auth)
        except Exception:  # noqa: BLE001 - MLflow not answering yet, whatever the reason
            champion, why = "?", "MLflow does not answer yet"
        else:
            if champion is None:
                return Serving(None)
            why = f"loading champion v{champion}" + (f" ({ready.reason})" if ready.reason else "")
            if " not served" in ready.reason:
                first = failing.setdefault(ready.reason, time.monotonic())
                if time.monotonic() - first >= LOAD_FAILURE_PATIENCE:
                    return Serving(champion, ready.reason)
        now = time.monotonic()
        if now - last_said >= PROGRESS_SECONDS:
            last_said = now
            say(f"  model server: {why} ({now - t0:.0f} s)")
        return None

    try:
        return wait_until(probe, timeout, f"the model server did not load the champion of {model}", interval=0.5,
                          gone=gone, stop=stop,
                          detail=lambda: "raise the limit with --timeout" + (f"; {detail()}" if detail else ""))
    except WaitAborted as exc:
        raise StackError(str(exc)) from None
    except WaitTimeout as exc:
        raise StackError(str(exc)) from None


# ---- a starting process ----------------------------------------------------------------------


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def wait_healthy(rec: ProcessRecord, probe: Callable[[], bool], what: str, timeout: float,
                 stop: threading.Event | None = None) -> float:
    """Seconds until `probe()` passes while the process runs; its exit or the timeout is a StackError.

    Every server and the worker start through it (`wait_until`, the project's one polling loop).
    """
    t0 = time.monotonic()

    def last_lines() -> str:
        return f"last lines of {rec.log}:\n{tail(Path(rec.log))}"

    try:
        wait_until(probe, timeout, f"the {what} was not healthy", interval=0.25, stop=stop,
                   ignore=(Exception,),  # not up yet, whatever the reason
                   gone=lambda: None if rec.alive() else f"the {what} exited while starting; {last_lines()}",
                   detail=lambda: f"raise the limit with --timeout; {last_lines()}")
    except WaitAborted as exc:
        raise StackError(f"stopped waiting for the {what}" if stop is not None and stop.is_set() else str(exc)) from None
    except WaitTimeout as exc:
        raise StackError(str(exc)) from None
    return time.monotonic() - t0


# ---- stack-status -----------------------------------------------------------------------------


@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool | None
    url: str | None
    detail: str = ""
    condition: str = ""  # a word for the model server beyond ok/unhealthy: "degraded", "loading"
    rss_bytes: int = 0  # resident memory of the process and everything it started
    processes: int = 0


def resident(rec: ProcessRecord) -> tuple[int, int]:
    """(bytes resident, process count) of a recorded process and its descendants (psutil RSS; 0 when gone)."""
    import psutil

    root = live_process(rec.pid, rec.create_time)
    if root is None:
        return 0, 0
    total = count = 0
    try:
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        family = [root]
    for proc in family:
        try:
            total += proc.memory_info().rss
            count += 1
        except psutil.Error:
            pass
    return total, count


def model_server_status(url: str, mlflow_url: str | None, model: str | None) -> tuple[bool, str, str]:
    """(healthy, condition, detail) of a running model server, from its /ready and MLflow's champion."""
    ready = read_ready(url)
    if ready.code is None:
        return False, "", ready.reason
    serving = f"serving {model or 'the model'} v{ready.version}" if ready.version else "serving"
    if ready.degraded:
        return True, "degraded", f"{serving}; degraded: {ready.reason or 'no reason given'}"
    if ready.serving:
        return True, "", serving
    champion: str | None = "?"
    if mlflow_url and model:
        try:
            champion = champion_version(mlflow_url, model, timeout=2.0)
        except Exception:  # noqa: BLE001 - MLflow down or asking for credentials: say what is known
            champion = "?"
    if champion is None:
        return True, "", "up, no champion yet"
    what = f"champion v{champion}" if champion != "?" else "the champion"
    return False, "loading", f"{what} not loaded yet" + (f": {ready.reason}" if ready.reason else "")


def postgres_status(state_dir: Path, port: Any) -> tuple[bool | None, str]:
    """(healthy, detail) of the stack's own PostgreSQL: does it take the `mlops` role's login."""
    from mlops.stack.postgres import DATABASES, LocalPostgres

    if not isinstance(port, int):
        return None, ""
    ok = LocalPostgres(state_dir, port).answers()
    return ok, f"databases {', '.join(DATABASES)}" if ok else "does not take a login"


def status(state_dir: Path) -> list[ComponentStatus]:
    """What the pid file records, whether each process runs, and whether it answers its health check
    (the model server: whether it serves the champion, is degraded, or there is no champion yet)."""
    import httpx

    state_dir = state_dir.expanduser().resolve()
    state = read_state(state_dir)
    if state is None:
        return []
    out = []
    headers = prefect_auth_header(os.environ)
    mlflow = state.processes.get("mlflow")
    mlflow_url = mlflow.url if mlflow is not None and mlflow.alive() else None
    for name, rec in state.processes.items():
        running = rec.alive()
        healthy: bool | None = None
        detail = condition = ""
        if running and name == "model-server" and rec.url:
            healthy, condition, detail = model_server_status(rec.url, mlflow_url, state.model_name)
        elif running and name == "postgres":
            healthy, detail = postgres_status(state_dir, state.options.get("pg_port"))
        elif running and rec.url:
            try:
                resp = httpx.get(rec.url + HEALTH_PATHS.get(name, "/"), timeout=2.0)
                healthy = resp.status_code == 200
            except httpx.HTTPError as exc:
                healthy, detail = False, type(exc).__name__
        elif running and name.startswith("worker") and state.work_pool:
            prefect = state.processes.get("prefect")
            try:
                resp = httpx.post(f"{prefect.url}/api/work_pools/{state.work_pool}/workers/filter",
                                  json={"limit": 50}, headers=headers, timeout=2.0)
                if resp.status_code == 401:
                    detail = f"pool {state.work_pool} (set PREFECT_API_AUTH_STRING to check it)"
                else:
                    resp.raise_for_status()
                    healthy = any(w.get("status") == "ONLINE" for w in resp.json())
                    detail = f"pool {state.work_pool}"
            except (httpx.HTTPError, ValueError, AttributeError) as exc:
                healthy, detail = False, type(exc).__name__
        out.append(ComponentStatus(name, rec.pid, running, healthy, rec.url, detail, condition, *resident(rec)))
    return out
