"""Loopback helpers for the end-to-end test and the benchmark: a real `prefect server start`, the
bridge under uvicorn, and a deployment whose trigger listens for a bridge event.

Each process is started in its own session and stopped by its own process id; nothing here touches
processes it did not start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from mlops.core.startup import SQLITE_URL_PREFIX, seed_prefect_database
from tests.support.loopback import free_port, prefect_call, tail, wait_for, wait_http

__all__ = ["Running", "bridge_process", "create_triggered_deployment", "events", "flow_runs", "free_port",
           "prefect_server", "quiet_prefect_env", "stop", "tail", "wait_for"]

REPO = Path(__file__).resolve().parents[2]


def quiet_prefect_env(home: Path, api_url: str) -> dict[str, str]:
    """Environment for a hermetic local Prefect server and its clients (no telemetry, no UI)."""
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        # Persist events quickly so /events/filter sees them within a fraction of a second.
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.2",
        # Nothing here is scheduled; keep triggered runs in their plain Scheduled state.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
    }


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a process this module started (and its own session), by its id."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@dataclass
class Running:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@contextmanager
def prefect_server(
    workdir: Path, timeout: float = 90.0, extra_env: dict[str, str] | None = None, name: str = "prefect"
) -> Iterator[Running]:
    """`prefect server start` on a free loopback port with its own PREFECT_HOME under `workdir`."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = workdir / f"{name}-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **quiet_prefect_env(home, api), **(extra_env or {})}
    # a new database starts migrated, as the stack's and the CLI's servers start theirs
    seed_prefect_database(env.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or f"{SQLITE_URL_PREFIX}{home / 'prefect.db'}")
    log = workdir / f"{name}-server.log"
    # The interpreter's own Prefect, whatever is on PATH.
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"{api}/health", proc, timeout, log)
        yield Running(api, proc, log)
    finally:
        stop(proc)


@contextmanager
def bridge_process(
    workdir: Path,
    prefect_api_url: str,
    secrets: dict[str, str],
    config: Path = REPO / "configs" / "webhooks.yaml",
    timeout: float = 30.0,
) -> Iterator[Running]:
    """`python -m mlops.webhooks` under uvicorn on a free loopback port."""
    port = free_port()
    state = workdir / "bridge-state"
    log = workdir / "bridge.log"
    env = {**os.environ, **secrets, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    cmd = [
        sys.executable, "-m", "mlops.webhooks",
        "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
        "--state-dir", str(state), "--prefect-api-url", prefect_api_url, "--log-level", "warning",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, timeout, log)
        yield Running(url, proc, log)
    finally:
        stop(proc)


def create_triggered_deployment(
    api_url: str,
    *,
    flow_name: str,
    deployment_name: str,
    expect: str,
    match: dict[str, str],
    parameters: dict[str, Any] | None = None,
) -> UUID:
    """A flow and a deployment (no work pool, no worker) with a DeploymentEventTrigger on `expect`.

    Creates the automation the way `prefect deploy` does for a trigger in prefect.yaml.
    """
    from prefect.client.orchestration import PrefectClient
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    async def build() -> UUID:
        async with PrefectClient(api_url) as client:
            flow_id = await client.create_flow_from_name(flow_name)
            deployment_id = await client.create_deployment(
                flow_id=flow_id, name=deployment_name, entrypoint="flows/train.py:train"
            )
            trigger = DeploymentEventTrigger(
                name=f"{deployment_name}-on-{expect}",
                expect={expect},
                match=match,
                parameters=parameters,
            )
            trigger.set_deployment_id(deployment_id)
            await client.create_automation(trigger.as_automation())
            return deployment_id

    return asyncio.run(build())


def flow_runs(api_url: str, deployment_id: UUID) -> list[dict[str, Any]]:
    """All flow runs of a deployment, straight from the Prefect API."""
    resp = prefect_call("POST", f"{api_url}/flow_runs/filter",
                        json={"deployments": {"id": {"any_": [str(deployment_id)]}}})
    return list(resp.json())


def events(api_url: str, filter_: dict[str, Any]) -> list[dict[str, Any]]:
    """Events matching an EventFilter (the last hour unless `occurred` is given), via POST /events/filter."""
    now = time.time()
    occurred = {
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600)),
        "until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
    }
    body = {"filter": {"occurred": occurred, **filter_}, "limit": 50}
    resp = prefect_call("POST", f"{api_url}/events/filter", json=body)
    return list(resp.json()["events"])
