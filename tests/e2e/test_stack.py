"""The real stack on loopback (`mlops up` in a temporary state folder, free ports, a small config):
a signed webhook trains a champion through the worker and the model server serves it; refused
webhooks start nothing; every alert arrives once; a worker killed mid-run leaves the champion alone
and the next run works. Operations: the prediction log hashes with the stack's own key, `up` and
`mlops restart` return once the champion is served, CLI commands use the stack's Prefect API, and
MLflow runs without its job workers.

One stack serves the whole e2e session (tests/e2e/test_ui_browser.py uses it too): starting it is
most of the cost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from mlops.stack import supervisor as stack
from mlops.stack.options import HASH_KEY_FILE
from mlops.stack.processes import live_process, process_alive, read_state
from tests.conftest import REPO, write_config
from tests.support.stack import (
    SETTLE,
    TERMINAL,
    Live,
    api,
    champion,
    deliver,
    ensure_trained,
    events,
    logs,
    run_deployment,
    run_state,
    runs,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


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
    # a genuinely failing flow run: training on a data file that is not there (inside a data root)
    missing = live.opts.state_dir / "inbox" / "missing.csv"
    failing = run_deployment(live, "train", {"source_path": str(missing), "reason": "e2e failure"})
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


# ---- operations -------------------------------------------------------------------------------


def mlops(live: Live, *args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the `mlops` CLI against the live stack's state folder, as a user would (no API URL set), and
    collect the command lines of every process it started while it ran."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env["MLOPS_HOME"] = str(live.opts.state_dir)
    proc = subprocess.Popen([sys.executable, "-m", "mlops.cli.main", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: set[str] = set()
    me = live_process(proc.pid)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            seen |= {" ".join(c.cmdline()) for c in me.children(recursive=True)} if me else set()
        except Exception:  # noqa: BLE001 - a child that ended between listing and reading it
            pass
        time.sleep(0.05)
    out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), seen


def ready(live: Live) -> httpx.Response:
    return httpx.get(f"{live.opts.url('model-server')}/ready", timeout=5)


def test_up_said_there_was_no_champion_and_mlflow_runs_without_job_workers(live: Live) -> None:
    assert live.up is not None and live.up.serving == stack.Serving(None)  # a fresh state folder
    mlflow = read_state(live.opts.state_dir).processes["mlflow"]
    proc = live_process(mlflow.pid, mlflow.create_time)
    assert proc is not None
    family = [" ".join(p.cmdline()) for p in [proc, *proc.children(recursive=True)]]
    assert not [c for c in family if "huey" in c or "jobs._job_runner" in c], family


def test_the_model_server_hashes_sensitive_columns_with_the_stacks_private_key(live: Live) -> None:
    ensure_trained(live)
    key_file = live.opts.state_dir / HASH_KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    import pandas as pd

    from mlops.serving.predictlog import hash_value, read_prediction_log

    assert wait_for(lambda: ready(live).status_code == 200, timeout=60), ready(live).text
    row = json.loads(pd.read_csv(live.data).drop(columns=["churned"]).head(1).to_json(orient="records"))[0]
    pred = httpx.post(f"{live.opts.url('model-server')}/predict", json=row, timeout=10)
    assert pred.status_code == 200, pred.text
    rid = pred.json()["request_id"]

    def logged() -> list[object]:
        df = read_prediction_log(live.opts.state_dir / "predictions")
        return df.loc[df["request_id"] == rid, "customer_id"].tolist() if len(df) else []

    mine = wait_for(logged, timeout=30)
    assert mine, "the prediction was not logged"
    assert mine == [hash_value(row["customer_id"], key.encode())] and mine[0] != row["customer_id"]
    for path in [*live.opts.logs_dir.glob("*.log"), live.opts.state_dir / "stack.json"]:
        assert key not in path.read_text(errors="replace"), f"the hash key shows in {path}"


def test_mlops_restart_model_server_returns_once_it_serves_the_champion_again(live: Live) -> None:
    ensure_trained(live)
    before = read_state(live.opts.state_dir).processes["model-server"]
    res, _ = mlops(live, "restart", "model-server")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Restarted the model server" in res.stdout and f"serves the champion, {live.model} v" in res.stdout
    after = read_state(live.opts.state_dir).processes["model-server"]
    assert after.pid != before.pid and after.alive() and not before.alive()
    answer = ready(live)  # at once: `restart` returned only after this said so
    assert answer.status_code == 200 and answer.json()["model_version"] == champion(live), answer.text
    import pandas as pd

    row = json.loads(pd.read_csv(live.data).drop(columns=["churned"]).head(1).to_json(orient="records"))[0]
    assert httpx.post(f"{live.opts.url('model-server')}/predict", json=row, timeout=10).status_code == 200


def test_cli_commands_use_the_running_stacks_prefect_api(live: Live) -> None:
    ensure_trained(live)
    current = champion(live)
    cfg = str(live.work / "config.yaml")
    res, _ = mlops(live, "status", "--config", cfg)
    assert res.returncode == 0 and f"champion  v{current}" in res.stdout, res.stdout + res.stderr

    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    t0 = time.monotonic()
    res, children = mlops(live, "promote", "--version", str(current), "--config", cfg, "--reason", "e2e: same one")
    seconds = time.monotonic() - t0
    assert not [c for c in children if "mlops.cli.local_api" in c], children  # no second Prefect API
    assert f"using the stack running from {live.opts.state_dir}" in res.stderr
    assert "database is locked" not in res.stdout + res.stderr
    # promoting the champion again is refused as a registry error: its sentence and exit code 4
    assert res.returncode == 4 and "is already the champion" in res.stderr, res.stdout + res.stderr
    flow = api(live, "POST", "/flows/filter", json={"flows": {"name": {"any_": ["promote"]}}})
    assert flow, "the promote flow is not known to the stack's Prefect API"
    found = api(live, "POST", "/flow_runs/filter", json={
        "flows": {"id": {"any_": [flow[0]["id"]]}}, "flow_runs": {"start_time": {"after_": since}}})
    assert len(found) == 1 and found[0]["state"]["type"] in TERMINAL, found
    assert seconds < 90, f"the command took {seconds:.0f} s"
    assert champion(live) == current


def test_up_returns_only_once_the_model_server_serves_the_existing_champion(live: Live) -> None:
    ensure_trained(live)
    current = champion(live)
    stack.down(live.opts.state_dir, grace=10)
    said: list[str] = []
    result = stack.up(live.opts, said.append)
    answer = ready(live)  # at once: no waiting here
    assert answer.status_code == 200 and answer.json()["model_version"] == current, (answer.text, said)
    assert result.serving == stack.Serving(current) and "champion" in result.timings
    assert "waiting for the model server to load the champion ..." in said
    rows = {r.name: r for r in stack.status(live.opts.state_dir)}
    assert rows["model-server"].healthy and rows["model-server"].detail == f"serving {live.model} v{current}"
    live.up = result
