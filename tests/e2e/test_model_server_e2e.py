"""The model server as deployed: `python -m mlops.serving` under uvicorn with two workers on a
loopback port, a real MLflow registry, bearer tokens, a reload broadcast to every worker, metrics summed
across workers, and the prediction log flushed on shutdown with the sensitive column hashed."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mlops.core.startup import poll
from mlops.registry import versions as registry
from mlops.serving.predictlog import hash_value, read_prediction_log
from mlops.serving.records import records_from_frame
from tests.support.model_server import (
    ServerProcess,
    churn_frame,
    fit_pipeline,
    isolated_state,
    register_model,
    server_process,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

NAME = "churn-e2e"
TOKEN, ADMIN, HASH_KEY = "tok-e2e", "adm-e2e", "hash-e2e"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("model-server-e2e")
    with isolated_state(work) as state:
        pipe, contract, frame = fit_pipeline(churn_frame(1500, seed=21), "churned", params={"max_iter": 25},
                                             id_column="customer_id", timestamp_column="event_time")
        register_model(NAME, pipe, contract, frame)
        pipe2, contract2, frame2 = fit_pipeline(churn_frame(1500, seed=22), "churned", family="logistic_regression",
                                                id_column="customer_id", timestamp_column="event_time")
        register_model(NAME, pipe2, contract2, frame2, promote=False)
        config = work / "serving.yaml"
        config.write_text(yaml.safe_dump({
            "name": "churn-e2e", "task": "classification", "source": {"kind": "generated"}, "target": "churned",
            "models": [{"family": "hist_gradient_boosting"}], "registry": {"model_name": NAME},
            "serving": {"sensitive_columns": ["customer_id"], "sensitive_mode": "hash", "poll_seconds": 60,
                        "workers": 2, "log_flush_seconds": 60},
        }))
        env = {"MLOPS_SERVING_TOKEN": TOKEN, "MLOPS_SERVING_ADMIN_TOKEN": ADMIN, "MLOPS_LOG_HASH_KEY": HASH_KEY}
        with server_process(NAME, work, ["--config", str(config)], env=env, timeout=120, workers=2) as server:
            records = records_from_frame(frame.drop(columns=["churned"]).head(20))
            yield {"server": server, "state": state, "records": records, "pipe": pipe,
                   "X": frame.drop(columns=["churned"]).head(20)}


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_serves_over_http_with_a_token(stack: dict[str, Any]) -> None:
    url = stack["server"].url
    with httpx.Client(base_url=url, timeout=10) as c:
        assert c.get("/health").json()["ready"] is True
        assert c.post("/predict", json=stack["records"][0]).status_code == 401
        r = c.post("/predict", json=stack["records"][:3], headers=_auth())
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == stack["pipe"].predict(stack["X"].head(3)).tolist()
        assert r.json()["model_version"] == "1" == r.headers["x-model-version"]
        r = c.post("/invocations", json={"dataframe_records": stack["records"][:2]}, headers=_auth())
        assert r.json() == {"predictions": stack["pipe"].predict(stack["X"].head(2)).tolist()}
        bad = c.post("/predict", json={**stack["records"][0], "age": "old"}, headers=_auth())
        assert bad.status_code == 422 and bad.json()["field"] == "age"
        assert c.post("/predict", content=b"{oops", headers={**_auth(), "content-type": "application/json"}
                      ).status_code == 400


def test_metrics_sum_every_worker(stack: dict[str, Any]) -> None:
    url = stack["server"].url
    with httpx.Client(base_url=url, timeout=10) as c:
        time.sleep(2.5)  # each worker publishes its counters every 2 s: let earlier tests' requests land
        before = _count(c.get("/metrics").text)
        for _ in range(40):  # new connections spread over both workers
            assert httpx.post(f"{url}/predict", json=stack["records"][0], headers=_auth()).status_code == 200
        time.sleep(2.5)  # each worker publishes its counters every 2 s
        text = c.get("/metrics").text
    assert _count(text) - before == 40
    workers = [ln for ln in text.splitlines() if ln.startswith("mlops_model_version{worker=")]
    assert len(workers) == 2 and all(ln.endswith(" 1") for ln in workers)


def _count(text: str) -> int:
    for line in text.splitlines():
        if line.startswith('mlops_requests_total{route="/predict",code="200"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def test_reload_reaches_every_worker(stack: dict[str, Any]) -> None:
    url = stack["server"].url
    registry.promote(NAME, "2", by="e2e", reason="reload test")
    with httpx.Client(base_url=url, timeout=30) as c:
        assert c.post("/admin/reload", headers=_auth()).status_code == 401  # the scoring token is not enough
        r = c.post("/admin/reload?wait=true", headers=_auth(ADMIN))
        assert r.status_code == 200 and r.json()["serving"] == "2", r.text
    seen: list[str] = []

    def all_on_2() -> bool:  # the other worker follows the broadcast, not its 60 s poll
        seen[:] = [httpx.post(f"{url}/predict", json=stack["records"][0], headers=_auth()).json()["model_version"]
                   for _ in range(10)]
        return set(seen) == {"2"}

    poll(all_on_2, 60, interval=0.3)
    assert set(seen) == {"2"}


def test_prediction_log_is_flushed_on_shutdown(stack: dict[str, Any]) -> None:
    server: ServerProcess = stack["server"]
    n = httpx.post(f"{server.url}/predict", json=stack["records"], headers=_auth()).json()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(60)
    log = read_prediction_log(Path(stack["state"]) / "predictions")
    mine = log[log["request_id"] == n["request_id"]]
    assert len(mine) == len(stack["records"]) and set(mine["model_version"]) == {"2"}
    assert mine["customer_id"].tolist() == [hash_value(r["customer_id"], HASH_KEY.encode()) for r in stack["records"]]
    assert len(log) >= 40 + 3 + len(stack["records"]) and log.attrs["corrupt_files"] == []
