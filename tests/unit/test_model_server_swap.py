"""Hot swap against a real MLflow registry: promoting a new version while a client sends requests
gives zero errors, and the answering version switches exactly once, from old to new."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from mlops.core.config import ServingConfig
from mlops.core.startup import wait_until
from mlops.registry import versions as registry
from mlops.registry.verdict import seal_verdict
from mlops.serving.app import create_app
from mlops.serving.records import records_from_frame
from tests.support.model_server import churn_frame, fit_pipeline, isolated_state, register_model

with warnings.catch_warnings():  # starlette asks for httpx2 instead of httpx; both work here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

NAME = "churn-swap"


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with isolated_state(tmp_path_factory.mktemp("swap")) as state:
        fits = {}
        for v, (family, params) in {"1": ("hist_gradient_boosting", {"max_iter": 20}),
                                    "2": ("logistic_regression", {"C": 0.5})}.items():
            pipe, contract, frame = fit_pipeline(churn_frame(1200, seed=11), "churned", family=family, params=params,
                                                 id_column="customer_id", timestamp_column="event_time")
            got = register_model(NAME, pipe, contract, frame, promote=v == "1")
            assert got == v
            fits[v] = (pipe, frame.drop(columns=["churned"]))
        yield {"state": state, "fits": fits}


def test_promotion_while_serving_switches_once_with_no_errors(versions: dict[str, Any]) -> None:
    pipe1, X = versions["fits"]["1"]
    pipe2, _ = versions["fits"]["2"]
    record = records_from_frame(X.head(1))[0]
    want = {"1": pipe1.predict_proba(X.head(1))[0].tolist(), "2": pipe2.predict_proba(X.head(1))[0].tolist()}
    assert want["1"] != want["2"]
    app = create_app(NAME, serving=ServingConfig(poll_seconds=0.2), log_dir=versions["state"] / "predictions",
                     environ={})
    body = orjson.dumps(record)
    answers: list[tuple[int, str | None, list[float] | None]] = []
    promoted = threading.Event()

    def promote_later() -> None:
        time.sleep(1.0)
        registry.promote(NAME, "2", by="test", reason="hot swap test")
        promoted.set()

    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        wait_until(lambda: client.get("/ready").status_code == 200, 60, "the server was not ready",
                   detail=lambda: client.get("/ready").text)
        threading.Thread(target=promote_later, daemon=True).start()
        swapped_at = None
        while time.monotonic() < deadline:
            r = client.post("/predict", content=body, headers={"content-type": "application/json"})
            out = r.json()
            answers.append((r.status_code, r.headers.get("x-model-version"), out.get("probabilities", [None])[0]))
            assert out.get("model_version") == r.headers.get("x-model-version")
            if swapped_at is None and out.get("model_version") == "2":
                swapped_at = len(answers)
            if swapped_at is not None and len(answers) >= swapped_at + 50:
                break
        time.sleep(0.5)  # a poll or two: the promotion stamp lands just after the alias moves
        info = client.get("/model").json()
        metrics = client.get("/metrics").text
    assert promoted.is_set()
    assert all(code == 200 for code, _, _ in answers), [a for a in answers if a[0] != 200][:3]
    seq = [v for _, v, _ in answers]
    switches = sum(1 for a, b in zip(seq, seq[1:], strict=False) if a != b)
    assert seq[0] == "1" and seq[-1] == "2" and switches == 1, seq
    for _, v, proba in answers:  # every answer is the named version's own prediction
        assert v is not None and np.array_equal(proba, want[v])
    assert info["version"] == "2" and info["promoted_at"] and info["watch"]["swaps"][-1]["from"] == "1"
    assert 'mlops_model_reloads_total{outcome="swapped"} 2' in metrics  # initial load + the swap


GUARDED = "churn-guarded"


def test_a_gate_failed_version_set_outside_mlops_is_refused_until_an_override_is_recorded(
        versions: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """Issue 12: the alias moved straight to a gate-failed version (as MLflow's REST API does) is not
    served; the server keeps the old one and says why in /model, /ready, /metrics and its log."""
    import logging

    for v, C in (("1", 1.0), ("2", 0.01)):
        pipe, contract, frame = fit_pipeline(churn_frame(800, seed=5), "churned", family="logistic_regression",
                                             params={"C": C}, id_column="customer_id", timestamp_column="event_time")
        assert register_model(GUARDED, pipe, contract, frame, promote=v == "1") == v
    X = frame.drop(columns=["churned"])
    c = registry.client()
    c.set_model_version_tag(GUARDED, "2", "gate.failures", "threshold roc_auc 0.70 < 0.99")
    seal_verdict(GUARDED, "2", passed=False)  # rejected by the gate, sealed as the training flow does
    record = records_from_frame(X.head(1))[0]
    body = orjson.dumps(record)
    app = create_app(GUARDED, serving=ServingConfig(poll_seconds=0.2), log_dir=None, environ={})
    with caplog.at_level(logging.ERROR, logger="mlops.model_server"), TestClient(app) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, 60, "the server was not ready",
                   detail=lambda: client.get("/ready").text)
        c.set_registered_model_alias(GUARDED, "champion", "2")  # outside mlops

        def refused() -> bool:
            return (client.get("/model").json()["watch"].get("refused") or {}).get("version") == "2"

        wait_until(refused, 30, "version 2 was never refused", detail=lambda: client.get("/model").text)
        for _ in range(5):  # a few polls later: still the old model, and no reload attempt counted twice
            r = client.post("/predict", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 200 and r.json()["model_version"] == "1"
        time.sleep(0.5)
        info = client.get("/model").json()
        ready = client.get("/ready")
        metrics = client.get("/metrics").text
        assert info["version"] == "1" and info["watch"]["alias_version"] == "2"
        assert "failed its promotion gate" in info["watch"]["refused"]["reason"]
        assert "0.70 < 0.99" in info["watch"]["last_error"]
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert "v2" in ready.json()["reason"] and "promotion gate" in ready.json()["reason"]
        assert 'mlops_model_reloads_total{outcome="refused"} 1' in metrics
        assert "mlops_model_refused_version 2" in metrics and "mlops_model_degraded 1" in metrics
        assert "version 2 not served" in caplog.text and "still serving v1" in caplog.text

        registry.promote(GUARDED, "2", by="test", reason="accepted by hand after review", force=True)
        wait_until(lambda: client.get("/model").json()["version"] == "2", 30, "the override was not picked up",
                   detail=lambda: client.get("/model").text)
        assert client.get("/ready").json()["status"] == "ok"
        assert client.get("/model").json()["watch"]["refused"] is None
        assert "mlops_model_refused_version 0" in client.get("/metrics").text
