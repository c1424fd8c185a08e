"""Model server API, in process: every way a request can be wrong gets a 4xx naming the field (never a
5xx), scoring matches the Pipeline, auth, readiness, metrics and the prediction log."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from mlops.core.config import ServingConfig
from mlops.core.startup import wait_until
from mlops.serving.app import create_app
from mlops.serving.model import LoadError, ServedModel, build_served_model
from mlops.serving.predictlog import hash_value, read_prediction_log
from mlops.serving.records import records_from_frame
from tests.support.model_server import churn_frame, fit_pipeline

with warnings.catch_warnings():  # starlette asks for httpx2 instead of httpx; both work here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

JSON = {"content-type": "application/json"}


class FixedSource:
    """A registry stand-in: the alias points at `version`; `models` maps versions to models (or errors)."""

    def __init__(self, models: dict[str, Any], version: str | None) -> None:
        self.models = models
        self.version = version
        self.loads: list[str] = []

    def resolve(self) -> str:
        if self.version is None:
            raise LoadError("registry unreachable (test)")
        return self.version

    def load(self, version: str) -> ServedModel:
        self.loads.append(version)
        m = self.models[version]
        if isinstance(m, Exception):
            raise m
        return m


def reference(frame: pd.DataFrame, pipe: Any, target: str) -> pd.DataFrame:
    ref = frame.head(300).copy()
    X = ref.drop(columns=[target])
    ref["prediction"] = pipe.predict(X)
    ref["prediction_proba"] = pipe.predict_proba(X)[:, 1]
    return ref


@pytest.fixture(scope="module")
def churn() -> dict[str, Any]:
    pipe, contract, frame = fit_pipeline(churn_frame(1500, seed=3), "churned", params={"max_iter": 30},
                                         id_column="customer_id", timestamp_column="event_time")
    served = build_served_model("churn", "1", "run-1", pipe, contract, reference(frame, pipe, "churned"))
    X = frame.drop(columns=["churned"])
    return {"pipe": pipe, "contract": contract, "X": X, "served": served, "records": records_from_frame(X.head(50))}


@pytest.fixture(scope="module")
def tiny() -> ServedModel:
    """One numeric input: rows small enough to send 100,001 of them."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=400)})
    df["y"] = (df["x"] + rng.normal(scale=0.5, size=400) > 0).astype(int)
    pipe, contract, frame = fit_pipeline(df, "y", family="logistic_regression")
    return build_served_model("tiny", "1", "run-t", pipe, contract, reference(frame, pipe, "y"))


def wait_ready(client: TestClient, timeout: float = 10.0) -> None:
    wait_until(lambda: client.get("/ready").status_code == 200, timeout, "the server was not ready", interval=0.02)


@pytest.fixture
def client(churn: dict[str, Any], tmp_path: Path) -> Iterator[TestClient]:
    app = create_app("churn", serving=ServingConfig(poll_seconds=0.1), log_dir=tmp_path / "predictions",
                     environ={}, source=FixedSource({"1": churn["served"]}, "1"))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def post(client: TestClient, path: str, payload: Any, headers: dict[str, str] | None = None) -> Any:
    try:
        body = orjson.dumps(payload)
    except TypeError:  # integers beyond 64 bits
        body = json.dumps(payload).encode()
    return client.post(path, content=body, headers={**JSON, **(headers or {})})


# -- scoring ---------------------------------------------------------------------------------------


def test_predict_accepts_a_record_a_list_and_records_wrapper(client: TestClient, churn: dict[str, Any]) -> None:
    recs = churn["records"][:5]
    want = churn["pipe"].predict(churn["X"].head(5))
    want_p = churn["pipe"].predict_proba(churn["X"].head(5))
    for body, n in [(recs[0], 1), (recs, 5), ({"records": recs}, 5)]:
        r = post(client, "/predict", body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model_version"] == "1" and r.headers["x-model-version"] == "1"
        assert out["request_id"] == r.headers["x-request-id"]
        assert out["predictions"] == want[:n].tolist()
        assert out["classes"] == [0, 1]
        assert np.array_equal(np.asarray(out["probabilities"]), want_p[:n])  # bit-identical to the Pipeline


def test_request_id_header_is_kept(client: TestClient, churn: dict[str, Any]) -> None:
    r = post(client, "/predict", churn["records"][0], {"x-request-id": "order-42"})
    assert r.json()["request_id"] == "order-42"


def test_invocations_speaks_mlflow_scoring_protocol(client: TestClient, churn: dict[str, Any]) -> None:
    recs = churn["records"][:3]
    want = churn["pipe"].predict(churn["X"].head(3)).tolist()
    cols = list(recs[0])
    bodies = [
        {"dataframe_split": {"columns": cols, "data": [[r[c] for c in cols] for r in recs]}},
        {"dataframe_records": recs},
        {"inputs": recs},
        {"instances": recs},
        {"inputs": {c: [r[c] for r in recs] for c in cols}},
        {"dataframe_records": recs, "params": {}},
    ]
    for body in bodies:
        r = post(client, "/invocations", body)
        assert r.status_code == 200, (body, r.text)
        assert r.json() == {"predictions": want}
        assert r.headers["x-model-version"] == "1"


def test_fast_path_is_used_and_identical_on_the_reference(churn: dict[str, Any]) -> None:
    served = churn["served"]
    assert served.fast is not None, served.fast_reason
    assert served.self_check["reproduces_training_predictions"] and served.self_check["fast_path"]


def test_out_of_contract_values_can_be_scored_when_ranges_are_not_enforced(churn: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    pipe, contract = churn["pipe"], churn["contract"]
    lax = build_served_model("churn", "1", "r", pipe, contract, None, enforce_ranges=False)
    rec = dict(churn["records"][0], region="mars", age=500)
    app = create_app("churn", serving=ServingConfig(poll_seconds=0.1), log_dir=None, environ={},
                     source=FixedSource({"1": lax}, "1"))
    with TestClient(app) as c:
        wait_ready(c)
        r = post(c, "/predict", rec)
    assert r.status_code == 200, r.text
    frame = pd.DataFrame([{**churn["X"].iloc[0].to_dict(), "region": "mars", "age": 500.0}])
    assert r.json()["probabilities"][0] == pipe.predict_proba(frame)[0].tolist()


# -- bad requests ----------------------------------------------------------------------------------


def _rec(churn: dict[str, Any], **changes: Any) -> dict[str, Any]:
    rec = dict(churn["records"][0])
    for k, v in changes.items():
        if v is ...:
            rec.pop(k)
        else:
            rec[k] = v
    return rec


def _raw(rec: dict[str, Any], field: str, literal: str) -> bytes:
    """A record whose `field` holds a literal orjson refuses to write (NaN, Infinity)."""
    marker = "__MARKER__"
    return orjson.dumps({**rec, field: marker}).replace(f'"{marker}"'.encode(), literal.encode())


def bad_cases(churn: dict[str, Any]) -> list[tuple[str, str, bytes, dict[str, str], int, str | None]]:
    rec = churn["records"][0]
    d = orjson.dumps
    return [
        ("missing column", "/predict", d(_rec(churn, tenure_months=...)), JSON, 422, "tenure_months"),
        ("string in numeric", "/predict", d(_rec(churn, monthly_charges="12.5")), JSON, 422, "monthly_charges"),
        ("boolean in numeric", "/predict", d(_rec(churn, support_calls=True)), JSON, 422, "support_calls"),
        ("unknown field", "/predict", d(_rec(churn, favourite_colour="red")), JSON, 422, "favourite_colour"),
        ("target sent", "/predict", d(_rec(churn, churned=1)), JSON, 422, "churned"),
        ("NaN", "/predict", _raw(rec, "monthly_charges", "NaN"), JSON, 422, "monthly_charges"),
        ("Infinity", "/predict", _raw(rec, "usage_gb", "Infinity"), JSON, 422, "usage_gb"),
        ("-Infinity", "/predict", _raw(rec, "age", "-Infinity"), JSON, 422, "age"),
        ("overflowing number", "/predict", _raw(rec, "age", "1e400"), JSON, 422, "age"),
        ("huge integer", "/predict", _raw(rec, "age", "9" * 400), JSON, 422, "age"),
        ("unknown category", "/predict", d(_rec(churn, region="mars")), JSON, 422, "region"),
        ("out of range", "/predict", d(_rec(churn, age=500)), JSON, 422, "age"),
        ("bad timestamp", "/predict", d(_rec(churn, event_time="yesterday")), JSON, 422, "event_time"),
        ("number as timestamp", "/predict", d(_rec(churn, event_time=1700000000)), JSON, 422, "event_time"),
        ("year 1 with an offset", "/predict", d(_rec(churn, event_time="0001-01-01T00:00:00+01:00")), JSON, 422,
         "event_time"),
        ("object as value", "/predict", d(_rec(churn, plan={"a": 1})), JSON, 422, "plan"),
        ("row not an object", "/predict", d([rec, [1, 2]]), JSON, 422, None),
        ("scalar body", "/predict", b"42", JSON, 422, None),
        ("empty body", "/predict", b"", JSON, 400, None),
        ("whitespace body", "/predict", b"  \n", JSON, 400, None),
        ("zero rows", "/predict", b"[]", JSON, 422, None),
        ("zero records", "/predict", b'{"records": []}', JSON, 422, None),
        ("records not a list", "/predict", b'{"records": {"a": 1}}', JSON, 422, "records"),
        ("malformed JSON", "/predict", b'{"tenure_months": 3,', JSON, 400, None),
        ("not UTF-8", "/predict", b'{"region": "\xff\xfe"}', JSON, 400, None),
        ("deep nesting", "/predict", b"[" * 5000 + b"]" * 5000, JSON, 400, None),
        ("text/plain", "/predict", d(rec), {"content-type": "text/plain"}, 415, "content-type"),
        ("no content type", "/predict", d(rec), {}, 415, "content-type"),
        ("form data", "/predict", b"a=1", {"content-type": "application/x-www-form-urlencoded"}, 415,
         "content-type"),
        ("bad content length", "/predict", d(rec), {**JSON, "content-length": "abc"}, 400, None),
        ("mlflow: no format key", "/invocations", d({"rows": [rec]}), JSON, 400, None),
        ("mlflow: two format keys", "/invocations", d({"inputs": [rec], "instances": [rec]}), JSON, 400, None),
        ("mlflow: a list", "/invocations", d([rec]), JSON, 400, None),
        ("mlflow: ragged split", "/invocations", d({"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}),
         JSON, 422, "data"),
        ("mlflow: split columns", "/invocations", d({"dataframe_split": {"columns": 3, "data": []}}), JSON, 422,
         "columns"),
        ("mlflow: missing column", "/invocations", d({"dataframe_records": [_rec(churn, plan=...)]}), JSON, 422,
         "plan"),
        ("mlflow: zero rows", "/invocations", d({"dataframe_records": []}), JSON, 422, None),
        ("mlflow: NaN", "/invocations", b'{"inputs": [' + _raw(rec, "usage_gb", "NaN") + b"]}", JSON, 422,
         "usage_gb"),
    ]


def test_every_bad_request_gets_a_4xx_naming_the_field(client: TestClient, churn: dict[str, Any]) -> None:
    for name, path, body, headers, status, field in bad_cases(churn):
        r = client.post(path, content=body, headers=headers)
        assert r.status_code == status, (name, r.status_code, r.text)
        out = r.json()
        assert out["error"], name
        if field is not None:
            assert out.get("field") == field, (name, out)
            assert field.lower() in out["error"].lower(), (name, out)


def test_the_error_lists_each_bad_row(client: TestClient, churn: dict[str, Any]) -> None:
    recs = [churn["records"][0], _rec(churn, age="x"), _rec(churn, region="mars")]
    out = post(client, "/predict", recs).json()
    assert out["row"] == 1 and out["field"] == "age"
    assert [(e["row"], e["field"]) for e in out["errors"]] == [(1, "age"), (2, "region")]


def test_row_limit(tiny: ServedModel) -> None:
    app = create_app("tiny", serving=ServingConfig(), log_dir=None, environ={}, source=FixedSource({"1": tiny}, "1"))
    with TestClient(app) as c:
        wait_ready(c)
        over = c.post("/predict", content=orjson.dumps([{"x": 0.5}] * 100_001), headers=JSON)
        assert over.status_code == 413 and over.json()["field"] == "rows"
        assert "100001" in over.json()["error"] and "100000" in over.json()["error"]
        at = c.post("/predict", content=orjson.dumps({"records": [{"x": 0.5}] * 100_000}), headers=JSON)
        assert at.status_code == 200 and len(at.json()["predictions"]) == 100_000


def test_body_limit(client: TestClient) -> None:
    body = b"[" + b",".join([b'{"tenure_months": 1}'] * 1_100_000) + b"]"
    assert len(body) > 20 * 2**20
    r = client.post("/predict", content=body, headers=JSON)
    assert r.status_code == 413 and r.json()["field"] == "body"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        for _ in range(21):
            yield b" " * 2**20

    r = client.post("/predict", content=chunks(), headers=JSON)
    assert r.status_code == 413


def test_garbage_never_gives_a_5xx(client: TestClient, churn: dict[str, Any]) -> None:
    rng = np.random.default_rng(1)
    rec = churn["records"][0]
    values = [None, True, 0, -1, 1.5, 1e308, -1e308, "", "x" * 5000, [], {}, [None], {"a": []}, "2025-13-45",
              "\u0000", "NaN", 10**30]
    for i in range(300):
        body: Any = dict(rec)
        for key in rng.choice(list(rec), size=int(rng.integers(1, 4)), replace=False):
            body[str(key)] = values[int(rng.integers(len(values)))]
        if i % 7 == 0:
            body = {"records": [body, values[i % len(values)]]}
        for path in ("/predict", "/invocations"):
            payload = body if path == "/predict" else {"dataframe_records": [body]}
            r = post(client, path, payload)
            assert r.status_code < 500, (payload, r.text)


def test_unknown_route_and_method(client: TestClient) -> None:
    assert client.get("/nope").status_code == 404
    r = client.get("/predict")
    assert r.status_code == 405 and r.json()["error"]


# -- auth, readiness, reload -----------------------------------------------------------------------


def test_bearer_token_protects_scoring(churn: dict[str, Any]) -> None:
    app = create_app("churn", serving=ServingConfig(poll_seconds=0.1), log_dir=None,
                     environ={"MLOPS_SERVING_TOKEN": "s3cret"}, source=FixedSource({"1": churn["served"]}, "1"))
    rec = churn["records"][0]
    with TestClient(app) as c:
        wait_ready(c)
        assert c.get("/health").status_code == 200
        for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "s3cret"}):
            r = post(c, "/predict", rec, headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert post(c, "/invocations", {"inputs": [rec]}).status_code == 401
        assert post(c, "/predict", rec, {"authorization": "Bearer s3cret"}).status_code == 200
        # the scoring token also guards reloads when no admin token is set
        assert c.post("/admin/reload", headers={"authorization": "Bearer s3cret"}).status_code == 202


def test_reload_needs_a_token(churn: dict[str, Any]) -> None:
    source = FixedSource({"1": churn["served"], "2": dataclasses.replace(churn["served"], version="2")}, "1")
    app = create_app("churn", serving=ServingConfig(poll_seconds=60), log_dir=None, environ={}, source=source)
    with TestClient(app) as c:
        wait_ready(c)
        assert c.post("/admin/reload").status_code == 403
    app = create_app("churn", serving=ServingConfig(poll_seconds=60), log_dir=None,
                     environ={"MLOPS_SERVING_ADMIN_TOKEN": "adm"}, source=source)
    with TestClient(app) as c:
        wait_ready(c)
        assert c.post("/admin/reload").status_code == 401
        assert c.post("/admin/reload", headers={"authorization": "Bearer wrong"}).status_code == 401
        source.version = "2"  # the alias moved; a poll is 60 s away, the reload route checks now
        r = c.post("/admin/reload?wait=true", headers={"authorization": "Bearer adm"})
        assert r.status_code == 200, r.text
        assert r.json()["changed"] and r.json()["serving"] == "2"


def test_not_ready_until_the_registry_answers(churn: dict[str, Any]) -> None:
    source = FixedSource({"1": churn["served"]}, None)
    app = create_app("churn", serving=ServingConfig(poll_seconds=0.1), log_dir=None, environ={}, source=source)
    with TestClient(app) as c:
        time.sleep(0.3)
        assert c.get("/health").status_code == 200
        r = c.get("/ready")
        assert r.status_code == 503 and "unreachable" in r.json()["reason"]
        assert post(c, "/predict", churn["records"][0]).status_code == 503
        assert c.get("/model").status_code == 503
        source.version = "1"
        wait_ready(c)
        assert post(c, "/predict", churn["records"][0]).status_code == 200


def test_a_failed_swap_keeps_the_old_model(churn: dict[str, Any]) -> None:
    source = FixedSource({"1": churn["served"], "2": LoadError("version 2 fails its self-check")}, "1")
    app = create_app("churn", serving=ServingConfig(poll_seconds=0.05), log_dir=None, environ={}, source=source)
    rec = churn["records"][0]
    with TestClient(app) as c:
        wait_ready(c)
        source.version = "2"
        time.sleep(0.3)
        r = post(c, "/predict", rec)
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        watch = c.get("/model").json()["watch"]
        assert watch["alias_version"] == "2" and "self-check" in watch["last_error"]
        assert source.loads.count("2") == 1  # retried with backoff, not on every poll
        source.version = None  # registry gone during the swap window
        time.sleep(0.2)
        assert post(c, "/predict", rec).json()["model_version"] == "1"
        metrics = c.get("/metrics").text
    assert 'mlops_model_reloads_total{outcome="failed"} 1' in metrics
    assert 'mlops_model_reloads_total{outcome="unreachable"}' in metrics


# -- metrics, OpenAPI, prediction log --------------------------------------------------------------


def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in metrics")


def test_metrics(client: TestClient, churn: dict[str, Any]) -> None:
    for _ in range(3):
        post(client, "/predict", churn["records"][:2])
    post(client, "/predict", _rec(churn, age="x"))
    client.post("/predict", content=b"{", headers=JSON)
    text = client.get("/metrics").text
    assert _metric(text, 'mlops_requests_total{route="/predict",code="200"}') == 3
    assert _metric(text, 'mlops_request_errors_total{route="/predict",code="422"}') == 1
    assert _metric(text, 'mlops_request_errors_total{route="/predict",code="400"}') == 1
    assert _metric(text, 'mlops_request_duration_seconds_count{route="/predict"}') == 5
    assert _metric(text, 'mlops_request_duration_seconds_bucket{route="/predict",le="+Inf"}') == 5
    assert _metric(text, "mlops_predicted_rows_total") == 6
    assert _metric(text, "mlops_model_version") == 1
    assert _metric(text, "mlops_model_ready") == 1
    assert _metric(text, "mlops_prediction_log_dropped_rows_total") == 0


def test_a_lone_surrogate_is_a_clean_4xx_counted_as_sent(client: TestClient, churn: dict[str, Any]) -> None:
    """Issue 21: a lone UTF-16 surrogate escape in a field name gave a 500 and a dropped connection (the 422
    message repeated the key, which cannot be encoded) while /metrics counted a 422. The answer is now the
    422, whole, with the text shown escaped; what /metrics counts is what was sent."""
    rec = churn["records"][0]
    lone, pair = "\ud800", "\ud83d\ude00"  # json.dumps writes them as \\u escapes, as a client would send them
    bodies = [
        ("/predict", json.dumps({lone: 1, **rec})),  # a field name
        ("/predict", json.dumps([{**rec, "x" + "\udfff": 1}])),
        ("/predict", json.dumps({**rec, "region": lone})),  # a category
        ("/predict", '{"age": NaN, "\\udc00": 1}'),  # NaN first: orjson refuses that before the surrogate
        ("/invocations", json.dumps({"dataframe_records": [{lone: 1, **rec}]})),
        ("/invocations", json.dumps({"dataframe_split": {"columns": [lone], "data": [[1]]}})),
    ]
    for path, text in bodies:
        r = client.post(path, content=text.encode(), headers=JSON)
        assert r.status_code == 422, (text, r.status_code, r.text)
        error = r.json()["error"]  # a whole answer, valid UTF-8
        assert error.encode("utf-8") and ("\\ud" in error or "\\udc00" in error or "'age'" in error), error
    unknown = client.post("/predict", content=json.dumps({lone: 1, **rec}).encode(), headers=JSON).json()
    assert unknown["field"] == "\\ud800" and "unknown field '\\ud800'" in unknown["error"]
    ok = client.post("/predict", content=json.dumps({**rec, "customer_id": pair}).encode(), headers=JSON)
    assert ok.status_code == 200, ok.text  # a surrogate *pair* is text (an emoji)
    text = client.get("/metrics").text
    assert _metric(text, 'mlops_request_errors_total{route="/predict",code="422"}') == 5
    assert _metric(text, 'mlops_request_errors_total{route="/invocations",code="422"}') == 2
    assert _metric(text, 'mlops_requests_total{route="/predict",code="200"}') == 1
    assert 'code="500"' not in text


def test_a_full_log_queue_drops_and_counts_but_serves(churn: dict[str, Any], tmp_path: Path) -> None:
    serving = ServingConfig(poll_seconds=0.1, log_queue_rows=3, log_flush_seconds=60, log_flush_rows=10**6)
    app = create_app("churn", serving=serving, log_dir=tmp_path / "log", environ={},
                     source=FixedSource({"1": churn["served"]}, "1"))
    with TestClient(app) as c:
        wait_ready(c)
        codes = [post(c, "/predict", churn["records"][:2]).status_code for _ in range(4)]
        text = c.get("/metrics").text
    assert codes == [200] * 4
    assert _metric(text, "mlops_prediction_log_dropped_rows_total") == 6  # 3 of 4 requests did not fit
    assert len(read_prediction_log(tmp_path / "log")) == 2  # the queued one is written at shutdown


def test_openapi_describes_the_contract(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    record = spec["components"]["schemas"]["Record"]
    assert "customer_id" not in record["required"] and "tenure_months" in record["required"]
    assert "north" in record["properties"]["region"]["enum"]
    assert record["additionalProperties"] is False
    assert {"/predict", "/invocations", "/ready", "/metrics", "/admin/reload"} <= set(spec["paths"])


def test_model_route(client: TestClient) -> None:
    info = client.get("/model").json()
    assert info["version"] == "1" and info["run_id"] == "run-1" and info["name"] == "churn"
    assert {c["name"] for c in info["contract"]} >= {"tenure_months", "region", "event_time", "customer_id"}
    assert "promoted_at" in info and info["fast_path"].startswith("numpy features")


def test_every_scored_row_is_logged_with_sensitive_columns_hashed(churn: dict[str, Any], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_LOG_HASH_KEY", "k3y")
    serving = ServingConfig(poll_seconds=0.1, sensitive_columns=["customer_id"], sensitive_mode="hash")
    app = create_app("churn", serving=serving, log_dir=tmp_path / "log", environ={},
                     source=FixedSource({"1": churn["served"]}, "1"))
    recs = churn["records"][:4]
    with TestClient(app) as c:
        wait_ready(c)
        ids = [post(c, "/predict", recs[:3]).json()["request_id"], post(c, "/predict", recs[3]).json()["request_id"]]
        post(c, "/predict", _rec(churn, age="x"))  # rejected: not logged
    log = read_prediction_log(tmp_path / "log")
    assert len(log) == 4
    assert log["request_id"].tolist() == [ids[0]] * 3 + [ids[1]]
    assert log["request_row"].tolist() == [0, 1, 2, 0]
    assert set(log["model_version"]) == {"1"} and set(log["log_source"]) == {"api"}
    assert log["customer_id"].tolist() == [hash_value(r["customer_id"], b"k3y") for r in recs]
    assert not any(r["customer_id"] in log.to_string() for r in recs)
    assert log.attrs["hashed_columns"] == ["customer_id"]
    want = churn["pipe"].predict_proba(churn["X"].head(4))[:, 1]
    assert np.array_equal(log["prediction_proba"].to_numpy(), want)
    assert log["tenure_months"].tolist() == [r["tenure_months"] for r in recs]
    assert all(not math.isnan(v) for v in log["monthly_charges"])


# -- issue 12: the null budget, degraded readiness, a value the log cannot hash -------------------


def test_a_record_over_its_null_budget_is_a_422_naming_the_fields(client: TestClient, churn: dict[str, Any]) -> None:
    required = [c["name"] for c in client.get("/model").json()["contract"] if c["required"]]
    all_null = {name: None for name in required}
    r = post(client, "/predict", all_null)
    assert r.status_code == 422, r.text
    out = r.json()
    assert out["fields"] == required and out["row"] == 0 and out["field"] == required[0]
    assert all(name in out["error"] for name in required)
    half = len(required) // 2
    at_budget = _rec(churn, **{name: None for name in required[:half]})
    over_budget = _rec(churn, **{name: None for name in required[:half + 1]})
    assert post(client, "/predict", at_budget).status_code == 200
    r = post(client, "/predict", [churn["records"][1], over_budget])
    assert r.status_code == 422 and r.json()["row"] == 1 and r.json()["fields"] == required[:half + 1]
    assert post(client, "/invocations", {"dataframe_records": [all_null]}).status_code == 422


def test_ready_says_degraded_while_serving_with_the_registry_unreachable(churn: dict[str, Any]) -> None:
    source = FixedSource({"1": churn["served"]}, "1")
    app = create_app("churn", serving=ServingConfig(poll_seconds=0.05), log_dir=None, environ={}, source=source)
    with TestClient(app) as c:
        wait_ready(c)
        ok = c.get("/ready")
        assert ok.json()["status"] == "ok" and ok.headers["x-mlops-status"] == "ok"
        source.version = None  # the registry stops answering
        wait_until(lambda: c.get("/ready").json()["status"] == "degraded", 10, "never degraded", interval=0.02)
        r = c.get("/ready")
        body = r.json()
        assert r.status_code == 200 and r.headers["x-mlops-status"] == "degraded"
        assert body["model_version"] == "1" and "registry is unreachable" in body["reason"]
        assert post(c, "/predict", churn["records"][0]).json()["model_version"] == "1"
        assert c.get("/model").json()["watch"]["status"] == "degraded"
        assert _metric(c.get("/metrics").text, "mlops_model_degraded") == 1
        source.version = "1"  # back
        wait_until(lambda: c.get("/ready").json()["status"] == "ok", 10, "still degraded", interval=0.02)
        assert _metric(c.get("/metrics").text, "mlops_model_degraded") == 0


def test_a_value_the_log_cannot_hash_costs_one_marker_not_the_batch(churn: dict[str, Any], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.serving.predictlog import UNHASHABLE

    monkeypatch.setenv("MLOPS_LOG_HASH_KEY", "k3y")
    serving = ServingConfig(poll_seconds=0.1, sensitive_columns=["customer_id"], sensitive_mode="hash",
                            log_flush_seconds=60)
    app = create_app("churn", serving=serving, log_dir=tmp_path / "log", environ={},
                     source=FixedSource({"1": churn["served"]}, "1"))
    recs = churn["records"][:20]
    marker = "__SURROGATE__"
    bad = orjson.dumps({**recs[0], "customer_id": marker}).replace(f'"{marker}"'.encode(), b'"\\ud800"')
    with TestClient(app) as c:
        wait_ready(c)
        assert post(c, "/predict", recs).status_code == 200
        r = c.post("/predict", content=bad, headers=JSON)
        assert r.status_code == 200, r.text
        assert post(c, "/predict", recs[:3]).status_code == 200
    log = read_prediction_log(tmp_path / "log")
    assert len(log) == 24  # every scored row, written in one flush at shutdown
    assert (log["customer_id"] == UNHASHABLE).sum() == 1
    assert log.loc[log["request_id"] == r.json()["request_id"], "customer_id"].tolist() == [UNHASHABLE]
    stats = app.state.server.plog.stats
    assert stats.replaced_values == 1 and stats.dropped_rows == 0
    assert "mlops_prediction_log_replaced_values_total 1" in app.state.server.metrics.render(
        app.state.server._gauges(), app.state.server._log_counters())
