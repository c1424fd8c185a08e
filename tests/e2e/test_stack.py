"""The real stack on loopback (`mlops up` in a temporary state folder, free ports, a small config):
a signed webhook trains a champion through the worker and the model server serves it; refused
webhooks start nothing; every alert arrives once; a worker killed mid-run leaves the champion alone
and the next run works.

One stack serves the whole e2e session (tests/e2e/test_ui_browser.py uses it too): starting it is
most of the cost.
"""

from __future__ import annotations

import json
import os
import signal
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
from mlops.stack.processes import process_alive
from tests.conftest import write_config
from tests.support import loopback
from tests.support.loopback import prefect_call

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

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
    cfg = write_config(work)
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

    def stop() -> None:
        stack.down(opts.state_dir, grace=10)
        receiver.close()

    request.session.addfinalizer(stop)
    try:
        stack.up(opts)
    except stack.StackError as exc:
        pytest.fail(f"the stack did not start: {exc}")
    secret = stack.load_webhook_secrets(opts)["MLOPS_WEBHOOK_DATA_VENDOR_SECRET"]
    _LIVE = Live(opts, work, data, secret, receiver)
    return _LIVE


@pytest.fixture(scope="module")
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Live:
    return live_stack(request, tmp_path_factory)


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


# ---- tests ------------------------------------------------------------------------------------


def test_signed_webhook_trains_once_through_the_worker_and_the_model_server_serves_the_champion(live: Live) -> None:
    assert runs(live) == [] and champion(live) is None
    run = ensure_trained(live)

    assert run["parameters"]["source_path"] == str(live.data)
    assert "new file landed from the data vendor" in run["parameters"]["reason"]
    assert run["work_pool_name"] == "mlops-local" and run["infrastructure_pid"]
    assert champion(live) == "1"

    # the model server picks the new champion up by itself and answers with it
    serve = live.opts.url("model-server")
    ready = wait_for(lambda: httpx.get(f"{serve}/ready", timeout=5).status_code == 200, timeout=30)
    assert ready, httpx.get(f"{serve}/ready").text
    import pandas as pd

    row = json.loads(pd.read_csv(live.data).drop(columns=["churned"]).head(1).to_json(orient="records"))[0]
    pred = httpx.post(f"{serve}/predict", json=row, timeout=10)
    assert pred.status_code == 200, pred.text
    assert pred.headers["x-model-version"] == "1"

    # exactly one run, and the promotion was announced exactly once
    time.sleep(SETTLE)
    assert len(runs(live)) == 1
    promoted = events(live, "mlops.model.promoted", f"mlops.model.{live.model}")
    assert len(promoted) == 1 and promoted[0]["payload"]["to_version"] == "1"
    assert len(wait_for(lambda: live.receiver.about(promoted[0]["id"]), timeout=20)) == 1


def test_unsigned_stale_and_replayed_webhooks_start_no_run(live: Live) -> None:
    ensure_trained(live)
    before = len(runs(live))
    other = live.work / "incoming" / "never-trained.csv"
    payload = {"dataset": "churn-refused", "path": str(other)}

    assert deliver(live, payload, delivery=str(uuid.uuid4()), signed=False).status_code == 401
    assert deliver(live, payload, delivery=str(uuid.uuid4()), timestamp=int(time.time()) - 600).status_code == 401
    first = deliver(live, {"dataset": "churn-replay", "path": str(other)}, delivery="replayed-delivery")
    assert first.status_code == 202
    first_run = wait_for(lambda: runs(live)[before:], timeout=30)
    assert len(first_run) == 1
    # let that run end (its file does not exist) so the replay checks see a quiet deployment
    wait_state(live, first_run[0]["id"], TERMINAL, timeout=120)
    assert deliver(live, {"dataset": "churn-replay", "path": str(other)}, delivery="replayed-delivery").status_code == 409
    assert deliver(live, payload, delivery="replayed-delivery").status_code == 409

    time.sleep(SETTLE)
    assert len(runs(live)) == before + 1
    assert events(live, "mlops.data.arrived", "mlops.dataset.churn-refused") == []


def test_every_alert_arrives_exactly_once(live: Live) -> None:
    ensure_trained(live)
    ids = {}
    resource = {"prefect.resource.id": f"mlops.model.{live.model}", "prefect.resource.name": live.model}
    for name, payload in [
        ("mlops.gate.rejected", {"version": "9", "reasons": ["FAIL threshold roc_auc"], "by": "e2e"}),
        ("mlops.model.rolled_back", {"from_version": "2", "to_version": "1", "by": "e2e", "reason": "drill"}),
        ("mlops.drift.detected", {"drift_share": 0.6, "drifted_columns": ["age"]}),
    ]:
        ids[name] = str(uuid.uuid4())
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        api(live, "POST", "/events", json=[{"id": ids[name], "occurred": now, "event": name, "resource": resource,
                                            "payload": payload}])
    # a genuinely failing flow run: training with a config that is not there
    failing = run_deployment(live, "train", {"config_path": str(live.work / "missing.yaml"), "reason": "e2e failure"})
    assert wait_state(live, failing, TERMINAL, timeout=120) == "FAILED", logs(live)
    failed = wait_for(lambda: events(live, "prefect.flow-run.Failed", f"prefect.flow-run.{failing}"), timeout=20)
    assert len(failed) == 1
    ids["failed run"] = failed[0]["id"]

    for what, event_id in ids.items():
        got = wait_for(lambda event_id=event_id: live.receiver.about(event_id), timeout=30)
        assert len(got) == 1, (what, live.receiver.alerts)
    time.sleep(SETTLE)
    for what, event_id in ids.items():
        assert len(live.receiver.about(event_id)) == 1, what
    assert "gate rejected churn-small v9" in live.receiver.about(ids["mlops.gate.rejected"])[0]["subject"]
    assert "Failed" in live.receiver.about(ids["failed run"])[0]["subject"]
    # no alert was ever sent twice for one event
    seen = [a["body"].rsplit("event ", 1)[-1].split()[1] for a in live.receiver.alerts]
    assert len(seen) == len(set(seen))


def test_a_worker_killed_mid_run_leaves_the_champion_and_the_next_run_works(live: Live) -> None:
    ensure_trained(live)
    before = champion(live)
    assert before is not None

    doomed = run_deployment(live, "train", {"source_path": str(live.data), "reason": "worker dies mid-run"})
    assert wait_state(live, doomed, {"RUNNING", *TERMINAL}, timeout=120) == "RUNNING", logs(live)
    infra = wait_for(lambda: api(live, "GET", f"/flow_runs/{doomed}")["infrastructure_pid"], timeout=10)
    pid = int(str(infra).rsplit(":", 1)[-1])
    assert process_alive(pid)
    assert stack.kill_component(live.opts.state_dir, "worker", signal.SIGKILL)
    assert wait_for(lambda: not process_alive(pid), timeout=10)

    time.sleep(SETTLE)
    assert champion(live) == before
    assert run_state(live, doomed) == "RUNNING"  # Prefect cannot know yet: the run holds the slot

    stack.restart_component(live.opts, "worker")  # marks runs whose process is gone Crashed
    assert run_state(live, doomed) == "CRASHED"
    assert champion(live) == before

    nxt = run_deployment(live, "train", {"source_path": str(live.data), "reason": "after the crash"})
    assert wait_state(live, nxt, TERMINAL, timeout=240) == "COMPLETED", logs(live)
    result = champion(live)
    assert result is not None and int(result) >= int(before)
    crashed = events(live, "prefect.flow-run.Crashed", f"prefect.flow-run.{doomed}")
    assert len(crashed) == 1
    assert len(wait_for(lambda: live.receiver.about(crashed[0]["id"]), timeout=20)) == 1


def test_a_scoring_batch_and_a_retrain_request_start_their_deployments(live: Live) -> None:
    ensure_trained(live)
    before_score, before_retrain, before_train = (len(runs(live, d)) for d in ("score", "retrain", "train"))
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    batch = live.work / "incoming" / "to-score.csv"
    import pandas as pd

    pd.read_csv(live.data).drop(columns=["churned"]).head(200).to_csv(batch, index=False)
    api(live, "POST", "/events", json=[
        {"id": str(uuid.uuid4()), "occurred": now, "event": "mlops.data.arrived",
         "resource": {"prefect.resource.id": "mlops.scoring.churn"}, "payload": {"path": str(batch)}},
        {"id": str(uuid.uuid4()), "occurred": now, "event": "mlops.retrain.requested",
         "resource": {"prefect.resource.id": f"mlops.model.{live.model}"},
         "payload": {"training_file": str(live.data), "triggers": ["drift in 2 consecutive windows"]}},
    ])
    scored = wait_for(lambda: runs(live, "score")[before_score:], timeout=30)
    retrain = wait_for(lambda: runs(live, "retrain")[before_retrain:], timeout=30)
    assert len(scored) == 1 and scored[0]["parameters"]["input_path"] == str(batch)
    assert len(retrain) == 1 and retrain[0]["parameters"]["source_path"] == str(live.data)
    assert retrain[0]["parameters"]["reason"] == "retrain requested: drift in 2 consecutive windows"
    assert wait_state(live, scored[0]["id"], TERMINAL, timeout=180) == "COMPLETED", logs(live)
    assert wait_state(live, retrain[0]["id"], TERMINAL, timeout=240) == "COMPLETED", logs(live)
    # a batch to score does not start a training, and each event started exactly one run
    time.sleep(SETTLE)
    assert len(runs(live, "score")) == before_score + 1 and len(runs(live, "retrain")) == before_retrain + 1
    assert len(runs(live, "train")) == before_train


def test_basic_auth_on_prefect_and_mlflow_when_turned_on(tmp_path: Path) -> None:
    from tests.support.webhooks import free_port

    env = {**os.environ, "PREFECT_SERVER_API_AUTH_STRING": "admin:e2e-prefect-pw",
           "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "e2e-mlflow-Pw-123"}
    opts = stack.StackOptions.from_env(
        environ=env, state_dir=tmp_path / "state", config_path=write_config(tmp_path), prefect_port=free_port(),
        mlflow_port=free_port(), components=("prefect", "mlflow"), mlflow_basic_auth=True,
    )
    try:
        stack.up(opts)
        deployments = f"{opts.api_url}/deployments/filter"
        assert httpx.post(deployments, json={}, timeout=10).status_code == 401
        assert httpx.post(deployments, json={}, auth=("admin", "e2e-prefect-pw"), timeout=10).status_code == 200
        search = f"{opts.url('mlflow')}/api/2.0/mlflow/experiments/search"
        assert httpx.get(search, params={"max_results": 1}, timeout=10).status_code == 401
        ok = httpx.get(search, params={"max_results": 1}, auth=("admin", "e2e-mlflow-Pw-123"), timeout=10)
        assert ok.status_code == 200, ok.text
    finally:
        stack.down(opts.state_dir, grace=10)


def test_stack_status_reports_every_component_healthy(live: Live) -> None:
    rows = {r.name: r for r in stack.status(live.opts.state_dir)}
    assert set(rows) == set(stack.COMPONENTS)
    assert all(r.running and r.healthy for r in rows.values()), rows
    with pytest.raises(stack.StackError, match="already running"):
        stack.up(live.opts)
