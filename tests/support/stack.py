"""The live stack for e2e tests: `mlops up` once per session in a temporary state folder (free ports, a
small config, an alert receiver), and helpers that talk to its Prefect API, webhook bridge and MLflow.

Every e2e module uses the same stack (`live` fixture in tests/e2e/conftest.py): starting it is most of
the cost.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from mlops.stack import supervisor as stack
from tests.conftest import INFRA_VALIDATED, write_config
from tests.support import loopback
from tests.support.loopback import prefect_call

SETTLE = 3.0  # a triggered run or an alert appears within ~1 s here; wait past that before saying "none"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class AlertReceiver:
    """A tiny webhook receiver on loopback: the notification block posts alerts here."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        received = self.alerts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                received.append(json.loads(body or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def about(self, event_id: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts if event_id in a.get("body", "")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Live:
    opts: stack.StackOptions
    work: Path
    data: Path
    secret: str
    receiver: AlertReceiver
    model: str = "churn-small"
    trained_run: dict[str, Any] | None = None
    started: float = field(default_factory=time.monotonic)
    up: stack.UpResult | None = None  # what `up` returned (the champion it waited for, timings)

    @property
    def api(self) -> str:
        return self.opts.api_url


_LIVE: Live | None = None


def live_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Live:
    """Start the stack once per session (stopped at the end of the session)."""
    global _LIVE
    if _LIVE is not None:
        return _LIVE
    from mlops.core.data import generate_churn
    from tests.support.webhooks import free_port

    work = tmp_path_factory.mktemp("stack-e2e")
    cfg = write_config(work, serving={"sensitive_columns": ["customer_id"]},  # hashed, as configs/default.yaml
                       gate=INFRA_VALIDATED)
    data = work / "incoming" / "churn-2026-06-01.csv"
    data.parent.mkdir()
    generate_churn(rows=3000, seed=11, corrupt=0.004).to_csv(data, index=False)
    receiver = AlertReceiver()
    # The tests read events back through Prefect's API: persist them within a second instead of the
    # stack's 10 s timer (the user's environment wins over SQLITE_PREFECT_SETTINGS, as here).
    environ = {**os.environ, "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1"}
    opts = stack.StackOptions.from_env(
        environ=environ,
        state_dir=work / "state", config_path=cfg, prefect_port=free_port(), mlflow_port=free_port(),
        serve_port=free_port(), webhook_port=free_port(), alert_url=receiver.url, schedules=False,
        serve_poll_seconds=1.0, worker_poll_seconds=1.0, timeout=150.0,
    )

    request.session.addfinalizer(receiver.close)
    try:
        result = start_stack(request, opts)
    except stack.StackError as exc:
        pytest.fail(f"the stack did not start: {exc}")
    secret = stack.load_webhook_secrets(opts)["MLOPS_WEBHOOK_DATA_VENDOR_SECRET"]
    _LIVE = Live(opts, work, data, secret, receiver, up=result)
    return _LIVE


def start_stack(request: pytest.FixtureRequest, opts: stack.StackOptions) -> stack.UpResult:
    """`mlops up` for a test session, stopped by a session finalizer; a SIGTERM to the test run runs that
    finalizer (tests/support/sigterm.py), and a reaper process stops the stack if the test process dies
    without running it (SIGKILL)."""
    from tests.support.reaper import Reaper

    opts.state_dir.mkdir(parents=True, exist_ok=True)
    reaper = Reaper(opts.state_dir, opts.state_dir.parent / f"reaper-{opts.state_dir.name}.log")

    def stop() -> None:
        try:
            stack.down(opts.state_dir, grace=10)
        finally:
            reaper.release()

    request.session.addfinalizer(stop)
    return stack.up(opts)


# ---- helpers ----------------------------------------------------------------------------------


def api(live: Live, method: str, path: str, **kw: Any) -> Any:
    """A Prefect API call that retries 429/502/503 as Prefect's client does (SQLite answers 503 under load)."""
    resp = prefect_call(method, live.api + path, timeout=15, **kw)
    return resp.json() if resp.content else None


def deliver(live: Live, payload: dict[str, Any], *, delivery: str, timestamp: int | None = None,
            signed: bool = True) -> httpx.Response:
    from mlops.webhooks.signing import signed_headers

    body = orjson.dumps(payload)
    headers = signed_headers(live.secret, body, delivery_id=delivery, timestamp=timestamp)
    if not signed:
        headers.pop("X-Mlops-Signature")
    return httpx.post(f"{live.opts.url('webhook-bridge')}/hooks/data-vendor", content=body, headers=headers, timeout=30)


def runs(live: Live, deployment: str = "train") -> list[dict[str, Any]]:
    found = api(live, "POST", "/flow_runs/filter",
                json={"deployments": {"name": {"any_": [deployment]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 200})
    return sorted(found, key=lambda r: r["created"])


def run_state(live: Live, run_id: str) -> str:
    return str(api(live, "GET", f"/flow_runs/{run_id}")["state"]["type"])


def wait_for(probe: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    return loopback.wait_for(probe, timeout=timeout, interval=interval)


def wait_state(live: Live, run_id: str, states: set[str], timeout: float) -> str:
    state = wait_for(lambda: (s := run_state(live, run_id)) in states and s, timeout)
    return state or run_state(live, run_id)


def run_deployment(live: Live, name: str, parameters: dict[str, Any]) -> str:
    dep = api(live, "GET", f"/deployments/name/{name}/{name}")
    run = api(live, "POST", f"/deployments/{dep['id']}/create_flow_run", json={"parameters": parameters})
    return str(run["id"])


def champion(live: Live) -> str | None:
    resp = httpx.get(f"{live.opts.url('mlflow')}/api/2.0/mlflow/registered-models/alias",
                     params={"name": live.model, "alias": "champion"}, timeout=10)
    return str(resp.json()["model_version"]["version"]) if resp.status_code == 200 else None


def events(live: Live, name: str, resource: str | None = None) -> list[dict[str, Any]]:
    now = time.time()
    flt: dict[str, Any] = {
        "occurred": {"since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600)),
                     "until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600))},
        "event": {"name": [name]},
    }
    if resource:
        flt["resource"] = {"id": [resource]}
    return list(api(live, "POST", "/events/filter", json={"filter": flt, "limit": 50})["events"])


def logs(live: Live) -> str:
    return "\n".join(f"--- {n}\n{stack.tail(live.opts.logs_dir / f'{n}.log', 15)}" for n in ("worker", "prefect"))


def ensure_trained(live: Live) -> dict[str, Any]:
    """A completed training run started by a signed webhook (the first test makes it; others reuse it)."""
    if live.trained_run is not None:
        return live.trained_run
    before = len(runs(live))
    resp = deliver(live, {"dataset": "churn", "path": str(live.data), "rows": 3000}, delivery=f"vendor-{uuid.uuid4()}")
    assert resp.status_code == 202, resp.text
    new = wait_for(lambda: runs(live)[before:], timeout=30)
    assert len(new) == 1, logs(live)
    state = wait_state(live, new[0]["id"], TERMINAL, timeout=240)
    assert state == "COMPLETED", logs(live)
    live.trained_run = api(live, "GET", f"/flow_runs/{new[0]['id']}")
    return live.trained_run




# ---- the production profile (tests/e2e/test_production.py, bench/bench_profiles.py) ---------------

ACCESS_LINE = re.compile(r'uvicorn\.access - \S+ - "(\S+) (\S+) HTTP/[\d.]+" (\d{3})')


def server_errors(log: Path) -> list[str]:
    """The requests a Prefect server answered with 5xx, from its access log (PREFECT_SERVER_LOGGING_LEVEL=INFO)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    return [f"{m.group(3)} {m.group(1)} {m.group(2)}" for m in ACCESS_LINE.finditer(text) if m.group(3).startswith("5")]


def answered(log: Path) -> int:
    """How many requests the Prefect server's access log records."""
    try:
        return len(ACCESS_LINE.findall(log.read_text(errors="replace")))
    except OSError:
        return 0


def submitted_by(live: Live, run_ids: list[str]) -> dict[str, str]:
    """Which worker submitted each flow run (Prefect's `prefect.worker.submitted-flow-run` events)."""
    now = time.time()
    flt = {"occurred": {"since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600)),
                        "until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600))},
           "event": {"name": ["prefect.worker.submitted-flow-run"]}}
    page = api(live, "POST", "/events/filter", json={"filter": flt, "limit": 50})
    found: dict[str, str] = {}
    while True:
        for event in page["events"]:
            worker = event["resource"].get("prefect.worker.name") or event["resource"]["prefect.resource.id"]
            for rel in event.get("related", []):
                rid = rel["prefect.resource.id"].removeprefix("prefect.flow-run.")
                if rel.get("prefect.resource.role") == "flow-run" and rid in run_ids:
                    found[rid] = worker
        if not page.get("next_page"):
            return found
        page = prefect_call("GET", page["next_page"], timeout=15).json()


def state_times(live: Live, run_id: str) -> dict[str, float]:
    """When a flow run first entered each state type (server time, epoch seconds)."""
    from datetime import datetime

    states = api(live, "GET", "/flow_run_states/", params={"flow_run_id": run_id})
    out: dict[str, float] = {}
    for s in sorted(states, key=lambda s: s["timestamp"]):
        out.setdefault(s["type"], datetime.fromisoformat(s["timestamp"].replace("Z", "+00:00")).timestamp())
    return out


def build_registry(model: str, versions: int, artifact_root: str, deleted: tuple[int, ...] = ()) -> None:
    """Register `versions` small sklearn versions of `model` in the current MLflow store the way the flows do
    (a run with params, metrics, a contract and a card; the logged model; gate tags), make the last champion and
    the one before previous through the registry's alias moves, then delete the versions in `deleted`."""
    import mlflow
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mlops.core.data import generate_churn
    from mlops.registry import versions as registry
    from mlops.registry.tracking import log_model_version, log_run_artifacts
    from mlops.registry.verdict import seal_verdict

    frame = generate_churn(400, seed=5)
    X = frame[["tenure_months", "monthly_charges", "support_calls"]].fillna(0.0)
    y = frame["churned"]
    exp = registry.ensure_experiment(model, artifact_root)
    for i in range(1, versions + 1):
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1 * i)).fit(X, y)
        with mlflow.start_run(experiment_id=exp, run_name=f"train-{model}-v{i}") as run:
            mlflow.log_params({"C": 0.1 * i, "family": "logistic_regression"})
            for step in range(3):
                mlflow.log_metric("cv_score", 0.6 + i / 100 + step / 1000, step=step)
        log_run_artifacts(run.info.run_id, [], {"contract/contract.json": json.dumps({"version": i}),
                                                "card/model_card.md": f"# {model} v{i}\n"})
        version = log_model_version(run.info.run_id, pipe, model, X, pipe.predict(X))
        seal_verdict(model, version, passed=True)
        registry.client().set_model_version_tag(model, version, "metric.roc_auc", f"{0.7 + i / 100:.4f}")
        if i > 1:
            registry.move_alias(model, "previous", str(i - 1), by="test", reason=f"replaced by v{i}")
        registry.move_alias(model, "champion", version, by="test", reason=f"v{version} passed the gate")
    for number in deleted:
        registry.client().delete_model_version(model, str(number))
