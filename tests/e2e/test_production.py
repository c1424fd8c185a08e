"""The production profile end to end: `mlops up --profile production` in its own temporary state folder
on free ports (its own PostgreSQL holding Prefect's database and MLflow's store, MLflow serving the
artifacts, two workers on pool mlops-production), started once for this module and stopped at its end;
it never touches the shared SQLite `live` stack.

The loop: a signed webhook trains on a worker -> the model server serves the champion it loaded through
MLflow's artifact proxy (`mlflow-artifacts:` URIs, no local path) -> predictions are logged -> the
monitor asks for a retrain -> the retrain runs while a scoring run and another monitor run go on beside
it, the runs spread over both workers. Then the load that made Prefect on SQLite answer 503 on a busy
machine (every flow-run process writing states, task runs and logs at once while the event persister
writes): 8 monitor runs and a training started together, with the monitor deployment's limit raised
to 8 so all of them run. Prefect's own access log must show no 5xx for the whole module. Last, a local
SQLite state with 2 versions and aliases is migrated (`mlops migrate`) without losing anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from mlops.stack import supervisor as stack
from mlops.stack.postgres import LocalPostgres
from tests.conftest import INFRA_VALIDATED, REPO, write_config
from tests.support.postgres import require_postgresql
from tests.support.stack import (
    TERMINAL,
    AlertReceiver,
    Live,
    api,
    champion,
    deliver,
    logs,
    run_deployment,
    runs,
    server_errors,
    state_times,
    submitted_by,
    wait_for,
    wait_state,
)
from tests.support.webhooks import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
ALL = {"postgres", "prefect", "mlflow", "worker", "worker-2", "model-server", "webhook-bridge"}
LOAD_MONITORS = 8
WORKER_LIMIT = 5  # MLOPS_WORKER_LIMIT of the test's stack: 8 monitors + 1 training need both workers


def prod_workers(live: Live) -> set[str]:
    """The names of the workers on the stack's pool."""
    return {w["name"] for w in api(live, "POST", "/work_pools/mlops-production/workers/filter", json={"limit": 10})}


def worker_names(submitted: dict[str, str]) -> set[str]:
    """Worker names from `submitted_by` (a worker's name, or its resource id `prefect.worker.process.<name>`)."""
    return {w.removeprefix("prefect.worker.process.") for w in submitted.values()}


@pytest.fixture(scope="module")
def prod(request: pytest.FixtureRequest) -> Iterator[Live]:
    """The production profile in a folder its PostgreSQL user may enter (pytest's temporary root is private)."""
    require_postgresql()
    from mlops.core.data import generate_churn

    work = Path(tempfile.mkdtemp(prefix="mlops-prod-e2e-"))
    work.chmod(0o711)
    policy = {"consecutive_windows": 1, "drift_trigger": "always", "min_rows": 200, "cooldown_minutes": 0,
              "run_training_locally": False, "dedupe_seconds": 0}
    cfg = write_config(work, serving={"enforce_contract_ranges": False, "log_flush_seconds": 1.0},
                       monitoring={"policy": policy}, gate=INFRA_VALIDATED)
    data = work / "incoming" / "churn-2026-06-01.csv"
    data.parent.mkdir()
    generate_churn(rows=3000, seed=11, corrupt=0.004).to_csv(data, index=False)
    receiver = AlertReceiver()
    # the access log counts Prefect's 5xx; events are persisted within a second for the tests to read
    # each worker takes at most WORKER_LIMIT runs at once, so runs started together are spread over both workers
    # (without a limit the worker whose poll comes first takes every scheduled run)
    environ = {**os.environ, "PREFECT_SERVER_LOGGING_LEVEL": "INFO",
               "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1", "MLOPS_WORKER_LIMIT": str(WORKER_LIMIT)}
    opts = stack.StackOptions.from_env(
        environ=environ, state_dir=work / "state", config_path=cfg, profile="production", pg_port=free_port(),
        prefect_port=free_port(), mlflow_port=free_port(), serve_port=free_port(), webhook_port=free_port(),
        schedules=False, serve_poll_seconds=1.0, worker_poll_seconds=1.0, timeout=180.0)
    failed_before = request.session.testsfailed
    try:
        result = stack.up(opts)
        secret = stack.load_webhook_secrets(opts)["MLOPS_WEBHOOK_DATA_VENDOR_SECRET"]
        yield Live(opts, work, data, secret, receiver, up=result)
    except stack.StackError as exc:
        pytest.fail(f"the production stack did not start: {exc}")
    finally:
        stack.down(opts.state_dir, grace=10)
        receiver.close()
        if request.session.testsfailed == failed_before:
            shutil.rmtree(work, ignore_errors=True)
        else:  # kept for the logs of what failed
            print(f"\nthe production stack's state folder is kept: {work}")


def mlflow_client(prod: Live) -> Any:
    from mlflow import MlflowClient

    url = prod.opts.mlflow_url
    return MlflowClient(tracking_uri=url, registry_uri=url)


def why(prod: Live, run_ids: list[str]) -> str:
    """The state message and last log lines of each run that did not complete, for a failure message."""
    out = []
    for run_id in run_ids:
        run = api(prod, "GET", f"/flow_runs/{run_id}")
        if run["state"]["type"] == "COMPLETED":
            continue
        lines = api(prod, "POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}},
                                                         "sort": "TIMESTAMP_DESC", "limit": 15})
        out.append(f"--- {run['name']} {run['state']['type']}: {run['state'].get('message')}\n"
                   + "\n".join(str(line["message"])[:400] for line in reversed(lines)))
    return "\n".join(out)


def overlapped(a: dict[str, float], b: dict[str, float]) -> bool:
    """True when two runs were Running at the same time."""
    return a["RUNNING"] < b["COMPLETED"] and b["RUNNING"] < a["COMPLETED"]


# ---- tests ------------------------------------------------------------------------------------


def test_the_stack_runs_on_its_own_postgresql_with_two_workers_and_no_sqlite(prod: Live) -> None:
    rows = {r.name: r for r in stack.status(prod.opts.state_dir)}
    assert set(rows) == ALL and all(r.running and r.healthy is not False for r in rows.values()), rows
    state = prod.opts.state_dir
    assert not (state / "prefect" / "prefect.db").exists() and not (state / "mlflow.db").exists()
    pg = LocalPostgres(state, prod.opts.pg_port)
    with pg.connect("prefect") as conn:
        assert conn.execute("SELECT count(*) FROM deployment").fetchone()[0] == 6
    with pg.connect("mlflow") as conn:
        assert conn.execute("SELECT count(*) FROM experiments").fetchone()[0] >= 1
    workers = api(prod, "POST", "/work_pools/mlops-production/workers/filter", json={"limit": 10})
    assert sorted(w["status"] for w in workers) == ["ONLINE", "ONLINE"]
    password = (state / "postgres_password").read_text().strip()
    for log in prod.opts.logs_dir.glob("*.log"):
        assert password not in log.read_text(errors="replace"), log
    assert password not in (state / "stack.json").read_text()


def test_a_signed_webhook_trains_on_a_worker_and_the_champion_is_served_through_the_artifact_proxy(
        prod: Live) -> None:
    resp = deliver(prod, {"dataset": "churn", "path": str(prod.data), "rows": 3000}, delivery=f"v-{uuid.uuid4()}")
    assert resp.status_code == 202, resp.text
    new = wait_for(lambda: runs(prod), timeout=30)
    assert len(new) == 1 and new[0]["work_pool_name"] == "mlops-production"
    assert wait_state(prod, new[0]["id"], TERMINAL, timeout=300) == "COMPLETED", logs(prod)
    assert champion(prod) == "1"
    # the training wrote the state folder's first gate key and left PostgreSQL's user a way through to its cluster
    # (it was tightened to 700: the server stopped at its next checkpoint, minutes later)
    assert (prod.opts.state_dir / "gate_key").is_file() and prod.opts.state_dir.stat().st_mode & 0o011 == 0o011

    serve = prod.opts.url("model-server")
    assert wait_for(lambda: httpx.get(f"{serve}/ready", timeout=5).status_code == 200, timeout=60), \
        httpx.get(f"{serve}/ready").text
    row = json.loads(pd.read_csv(prod.data).drop(columns=["churned"]).head(1).to_json(orient="records"))[0]
    pred = httpx.post(f"{serve}/predict", json=row, timeout=10)
    assert pred.status_code == 200 and pred.headers["x-model-version"] == "1", pred.text

    # every place the model lives is behind the tracking server: nothing names a file on this machine
    c = mlflow_client(prod)
    mv = c.get_model_version(prod.model, "1")
    assert httpx.get(f"{serve}/model", timeout=5).json()["run_id"] == mv.run_id
    model_id = mv.source.removeprefix("models:/")
    uris = [c.get_run(mv.run_id).info.artifact_uri, c.get_logged_model(model_id).artifact_location]
    import mlflow

    mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{uris[1]}/MLmodel", tracking_uri=prod.opts.mlflow_url)
    import yaml

    uris.append(yaml.safe_load(Path(mlmodel).read_text())["artifact_path"])
    for uri in uris:
        assert uri.startswith("mlflow-artifacts:/"), uri
        assert "file:" not in uri and str(prod.opts.state_dir) not in uri, uri


def test_predictions_monitor_and_retrain_with_scoring_and_monitoring_beside_the_training(prod: Live) -> None:
    from mlops.core.data import CHURN_START, generate_churn

    assert champion(prod) == "1"
    serve = prod.opts.url("model-server")
    drifted = generate_churn(rows=600, seed=21, drift=0.8, start=CHURN_START + pd.Timedelta(days=120))
    inputs = drifted.drop(columns=["churned"])
    for start in range(0, len(inputs), 200):
        body = json.loads(inputs.iloc[start:start + 200].to_json(orient="records", date_format="iso"))
        resp = httpx.post(f"{serve}/predict", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
    log_dir = prod.opts.state_dir / "predictions"
    assert wait_for(lambda: log_dir.is_dir() and any(log_dir.rglob("*.parquet")), timeout=30), "no prediction log"
    labels = prod.work / "incoming" / "labels.csv"
    drifted[["customer_id", "churned"]].to_csv(labels, index=False)
    batch = prod.work / "incoming" / "to-score.csv"
    inputs.head(300).to_csv(batch, index=False)

    before_retrain = len(runs(prod, "retrain"))
    monitor = run_deployment(prod, "monitor", {"labels_path": str(labels), "html_report": False})
    assert wait_state(prod, monitor, TERMINAL, timeout=240) == "COMPLETED", logs(prod)
    retrain = wait_for(lambda: runs(prod, "retrain")[before_retrain:], timeout=60)
    assert len(retrain) == 1, "the monitor asked for no retrain"
    retrain_id = retrain[0]["id"]
    assert wait_state(prod, retrain_id, {"RUNNING", *TERMINAL}, timeout=120) == "RUNNING", logs(prod)

    # while the retrain trains, a batch is scored and the monitor runs again
    score = run_deployment(prod, "score", {"input_path": str(batch)})
    again = run_deployment(prod, "monitor", {"html_report": False})
    for run_id in (score, again):
        assert wait_state(prod, run_id, TERMINAL, timeout=240) == "COMPLETED", logs(prod)
    assert wait_state(prod, retrain_id, TERMINAL, timeout=300) == "COMPLETED", logs(prod)
    times = {r: state_times(prod, r) for r in (retrain_id, score, again)}
    assert overlapped(times[retrain_id], times[score]) and overlapped(times[retrain_id], times[again]), times

    c = mlflow_client(prod)
    v2 = c.get_model_version(prod.model, "2")
    assert "/monitor/" in v2.tags["lineage.data_source"], v2.tags
    trained = [r["id"] for r in runs(prod, "train")]
    workers = wait_for(lambda: (w := submitted_by(prod, [*trained, monitor, retrain_id, score, again]))
                       and len(w) == len(trained) + 4 and w, timeout=30)
    assert workers and worker_names(workers) <= prod_workers(prod), workers  # the stack's own workers took them


def test_eight_monitor_runs_and_a_training_at_once_get_no_5xx_from_prefect(prod: Live) -> None:
    dep = api(prod, "GET", "/deployments/name/monitor/monitor")
    pool_url = "/work_pools/mlops-production"
    api(prod, "PATCH", f"/deployments/{dep['id']}", json={"concurrency_limit": LOAD_MONITORS})
    # the runs are created while the pool is paused, so the workers' next polls (1 s apart) find all nine at once:
    # every run is handed to a worker before the first can finish (a flow run's process alone takes longer to start)
    api(prod, "PATCH", pool_url, json={"is_paused": True})
    try:
        t0 = time.monotonic()
        with ThreadPoolExecutor(LOAD_MONITORS + 1) as pool:
            started = list(pool.map(lambda job: run_deployment(prod, *job),
                                    [("monitor", {"html_report": False})] * LOAD_MONITORS
                                    + [("train", {"source_path": str(prod.data), "reason": "load test"})]))
        api(prod, "PATCH", pool_url, json={"is_paused": False})
        ends = {r: wait_state(prod, r, TERMINAL, timeout=420) for r in started}
        wall = time.monotonic() - t0
    finally:
        api(prod, "PATCH", pool_url, json={"is_paused": False})
        api(prod, "PATCH", f"/deployments/{dep['id']}", json={"concurrency_limit": 1})
    assert list(ends.values()) == ["COMPLETED"] * (LOAD_MONITORS + 1), why(prod, started)
    times = [state_times(prod, r) for r in started]
    assert max(t["PENDING"] for t in times) < min(t["COMPLETED"] for t in times), "the runs were not in flight at once"
    assert server_errors(prod.opts.logs_dir / "prefect.log") == [], "Prefect answered 5xx"
    # nine runs at once, at most WORKER_LIMIT per worker: both workers took runs while the others ran
    workers = wait_for(lambda: (w := submitted_by(prod, started)) and len(w) == len(started) and w, timeout=30)
    assert workers and worker_names(workers) == prod_workers(prod) and len(prod_workers(prod)) == 2, workers
    print(f"\n8 monitor runs + 1 training on the production profile: {wall:.1f} s wall, 0 failed, 0 5xx")


def test_a_local_sqlite_state_moves_to_production_without_losing_a_version_or_an_alias(prod: Live) -> None:
    from mlflow import MlflowClient

    from mlops.registry.history import read_history
    from mlops.stack.migration import verify

    old = prod.work / "old-state"
    old.mkdir()
    model = "churn-legacy"
    script = ("import mlflow, sys; from tests.support.stack import build_registry; "
              f"mlflow.set_tracking_uri('sqlite:///{old / 'mlflow.db'}'); "
              f"build_registry('{model}', 2, '{(old / 'mlartifacts').as_uri()}')")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_API", "MLOPS_"))}
    made = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**env, "MLOPS_HOME": str(old)},  # its gate key
                          capture_output=True, text=True,
                          timeout=180)
    assert made.returncode == 0, made.stderr[-2000:]

    res = subprocess.run([sys.executable, "-m", "mlops.cli.main", "migrate", "--to", "production", "--from-state",
                          str(old), "--state-dir", str(prod.opts.state_dir)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert f"{model}: 2 versions; aliases champion -> v2, previous -> v1; 3 alias-history entries; verified" \
        in res.stdout, res.stdout
    assert "Deployments re-applied: train, retrain, monitor, score, promote, rollback." in res.stdout

    src_uri = f"sqlite:///{old / 'mlflow.db'}"
    assert verify(src_uri, prod.opts.mlflow_url, [model]) == []
    src, dst = MlflowClient(src_uri, src_uri), mlflow_client(prod)
    assert sorted(int(v.version) for v in dst.search_model_versions(f"name='{model}'")) == [1, 2]
    assert dict(dst.get_registered_model(model).aliases) == {"champion": "2", "previous": "1"}
    assert read_history(dst, model, {}) == read_history(src, model, {})
    for version in ("1", "2"):
        mv = dst.get_model_version(model, version)
        assert dst.get_logged_model(mv.source.removeprefix("models:/")).artifact_location.startswith(
            "mlflow-artifacts:/")
        assert dict(mv.tags) == dict(src.get_model_version(model, version).tags)
    # the migrated champion loads through the tracking server and predicts as it did
    frame = pd.DataFrame({"tenure_months": [1.0, 40.0], "monthly_charges": [50.0, 90.0], "support_calls": [2.0, 0.0]})
    probe = (f"import io, mlflow, sys, pandas as pd; from mlops.registry.trusted_types import load_sklearn_model; "
             f"mlflow.set_tracking_uri(sys.argv[1]); frame = pd.read_json(io.StringIO(sys.argv[2])); "
             f"print(load_sklearn_model('models:/{model}@champion').predict_proba(frame).round(10).tolist())")
    answers = [subprocess.run([sys.executable, "-c", probe, uri, frame.to_json()], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120) for uri in (src_uri, prod.opts.mlflow_url)]
    assert all(a.returncode == 0 for a in answers), [a.stderr[-1500:] for a in answers]
    assert answers[0].stdout == answers[1].stdout
    assert "PANIC" not in (prod.opts.logs_dir / "postgres.log").read_text(errors="replace")
