"""Webhook bridge, in process: a body that fails its source's payload schema is a 422 naming the field;
signing headers sent twice are a 400 and whitespace around them is tolerated; every accepted delivery
can be looked up (signed) until it ends in a run or in a reason why not."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from mlops.webhooks.app import create_app
from mlops.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signed_headers, status_headers
from mlops.webhooks.sinks import EmitError, EventRejected, RecordingSink
from mlops.webhooks.status import EventOutcome, PrefectRuns
from mlops.webhooks.store import DeliveryStore
from tests.unit.test_webhook_bridge import ARRIVED, CONFIG, ENV, SECRET, assert_refused, client_for, post


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeRuns:
    """What Prefect did with each event, set by the test."""

    def __init__(self) -> None:
        self.outcomes: dict[str, EventOutcome] = {}
        self.asked: list[str] = []

    async def outcome(self, event_id: str, since: float) -> EventOutcome:
        self.asked.append(event_id)
        return self.outcomes.get(event_id, EventOutcome())

    async def aclose(self) -> None:
        return None


@pytest.fixture
def runs() -> FakeRuns:
    return FakeRuns()


@pytest.fixture
def app(tmp_path: Path, runs: FakeRuns) -> Any:
    return create_app(CONFIG, state_dir=tmp_path / "state", sink=RecordingSink(), environ=ENV, runs=runs)


async def status(app: Any, delivery: str, source: str = "data-vendor", *, secret: str = SECRET,
                 headers: dict[str, str] | None = None) -> httpx.Response:
    path = f"/hooks/{source}/deliveries/{delivery}"
    h = headers if headers is not None else status_headers(secret, path)
    async with client_for(app) as c:
        return await c.get(path, headers=h)


# ---- the payload schema (configs/webhooks.yaml) ------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "words"), [
    ("", "payload field 'path' must not be empty"),
    ("   ", "payload field 'path' must be a path that is not blank"),
    (None, "payload field 'path' must be a string, got null"),
    (123, "payload field 'path' must be a string, got an integer"),
    (["/a.csv"], "payload field 'path' must be a string, got a list"),
    ({"p": 1}, "payload field 'path' must be a string, got an object"),
])
async def test_an_empty_null_or_wrong_typed_path_is_422_naming_the_field(app: Any, path: object, words: str) -> None:
    assert_refused(await post(app, payload={**ARRIVED, "path": path}), 422, app, words)


@pytest.mark.anyio
async def test_a_missing_path_is_a_clear_422_not_a_type_error(app: Any) -> None:
    resp = await post(app, payload={"dataset": "churn", "rows": 3})
    assert_refused(resp, 422, app, "payload field 'path' is required")
    assert "StrictUndefined" not in resp.text and "TypeError" not in resp.text


@pytest.mark.anyio
async def test_the_schema_error_does_not_echo_the_senders_values(app: Any) -> None:
    resp = await post(app, payload={**ARRIVED, "rows": "SECRET-VALUE-9"})
    assert_refused(resp, 422, app, "payload field 'rows' must be an integer or null, got a string")
    assert "SECRET-VALUE-9" not in resp.text


@pytest.mark.anyio
async def test_ops_and_labels_sources_have_schemas_too(tmp_path: Path) -> None:
    env = {**ENV, "MLOPS_WEBHOOK_OPS_SECRET": "ops"}
    app = create_app(CONFIG, state_dir=tmp_path / "s", sink=RecordingSink(), environ=env)
    assert_refused(await post(app, "ops", {"dataset": "churn", "reason": ""}, secret="ops"), 422, app,
                   "payload field 'reason' must not be empty")
    assert_refused(await post(app, "labels", {"dataset": "churn", "path": None}, secret="labels-" + SECRET), 422,
                   app, "payload field 'path' must be a string")


def test_a_bad_payload_schema_fails_at_start_naming_the_source(tmp_path: Path) -> None:
    from mlops.core.errors import ConfigError
    from mlops.webhooks.config import load_webhook_config

    cfg = tmp_path / "webhooks.yaml"
    cfg.write_text("sources:\n  a:\n    secret_env: X\n    template: '{}'\n    payload_schema: {type: strng}\n")
    with pytest.raises(ConfigError, match="sources.a.payload_schema.*not a valid JSON Schema"):
        load_webhook_config(cfg)


# ---- signing headers ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("header", [SIGNATURE_HEADER, TIMESTAMP_HEADER, "X-Mlops-Delivery"])
async def test_a_signing_header_sent_twice_is_400(app: Any, header: str) -> None:
    body = orjson.dumps(ARRIVED)
    h = signed_headers(SECRET, body, delivery_id=str(uuid.uuid4()))
    assert h[SIGNATURE_HEADER] == sign(SECRET, int(h[TIMESTAMP_HEADER]), body)  # the first copy is valid
    second = "sha256=" + "0" * 64 if header == SIGNATURE_HEADER else h[header]
    raw = [*h.items(), (header, second)]
    async with client_for(app) as c:
        resp = await c.post("/hooks/data-vendor", content=body, headers=raw)
    assert_refused(resp, 400, app, f"the {header.lower()} header was sent more than once")


@pytest.mark.anyio
async def test_whitespace_around_the_signature_is_tolerated_and_is_not_a_new_request(app: Any) -> None:
    body = orjson.dumps(ARRIVED)
    h = signed_headers(SECRET, body, delivery_id="ws-1")
    padded = {**h, SIGNATURE_HEADER: f"  {h[SIGNATURE_HEADER]} \t", TIMESTAMP_HEADER: f" {h[TIMESTAMP_HEADER]} "}
    async with client_for(app) as c:
        first = await c.post("/hooks/data-vendor", content=body, headers=padded)
        assert first.status_code == 202, first.text
        # the same signed request without the padding, under another delivery id: still the same request
        again = await c.post("/hooks/data-vendor", content=body, headers={**h, "X-Mlops-Delivery": "ws-2"})
    assert again.status_code == 409 and "already received under another delivery id" in again.text


# ---- delivery status ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_delivery_is_queued_then_forwarded_then_has_a_run(app: Any, runs: FakeRuns) -> None:
    bridge = app.state.bridge
    bridge.sink.fail_with = EmitError("the Prefect API is unreachable")
    resp = await post(app, payload=ARRIVED, delivery="d-1", forwarded=False)
    assert resp.status_code == 202
    event_id = resp.json()["event_id"]
    doc = (await status(app, "d-1")).json()
    assert doc["status"] == "queued" and doc["event_id"] == event_id and doc["forwarded_at"] is None
    assert doc["event"] == "mlops.data.arrived" and runs.asked == []

    bridge.sink.fail_with = None
    await bridge.forwarder.drain(10)
    doc = (await status(app, "d-1")).json()
    assert doc["status"] == "forwarded" and doc["forwarded_at"] and "no run has started" in doc["detail"]

    run = {"id": "r-1", "name": "brave-otter", "deployment_id": "dep", "state": "SCHEDULED",
           "state_name": "AwaitingConcurrencySlot", "message": None}
    runs.outcomes[event_id] = EventOutcome(runs=[run])
    doc = (await status(app, "d-1")).json()
    assert doc["status"] == "run" and doc["runs"] == [run]
    assert "brave-otter (r-1) is AwaitingConcurrencySlot" in doc["detail"]


@pytest.mark.anyio
async def test_status_says_why_no_run_started(app: Any, runs: FakeRuns) -> None:
    resp = await post(app, payload=ARRIVED, delivery="d-2")
    runs.outcomes[resp.json()["event_id"]] = EventOutcome(failures=["Unable to create flow run: bad parameters"])
    doc = (await status(app, "d-2")).json()
    assert doc["status"] == "not_started" and "bad parameters" in doc["detail"]


@pytest.mark.anyio
async def test_an_event_prefect_refuses_is_reported_refused(tmp_path: Path) -> None:
    sink = RecordingSink()
    sink.fail_with = EventRejected("Prefect refused the event: too large")
    app = create_app(CONFIG, state_dir=tmp_path / "s", sink=sink, environ=ENV, runs=FakeRuns())
    assert (await post(app, payload=ARRIVED, delivery="d-3")).status_code == 202
    doc = (await status(app, "d-3")).json()
    assert doc["status"] == "refused" and "too large" in doc["detail"]


@pytest.mark.anyio
async def test_status_is_signed_with_the_sources_secret(app: Any) -> None:
    assert (await post(app, payload=ARRIVED, delivery="d-4")).status_code == 202
    assert (await status(app, "d-4")).status_code == 200
    unsigned = await status(app, "d-4", headers={})
    assert unsigned.status_code == 401
    wrong = await status(app, "d-4", secret="not-the-secret")
    assert wrong.status_code == 401 and "does not match" in wrong.text
    # a signature for another delivery's path does not open this one
    other = status_headers(SECRET, "/hooks/data-vendor/deliveries/d-other")
    assert (await status(app, "d-4", headers=other)).status_code == 401
    # another source's secret does not read this source's deliveries
    assert (await status(app, "d-4", "labels", secret="labels-" + SECRET)).status_code == 404
    stale = status_headers(SECRET, "/hooks/data-vendor/deliveries/d-4", timestamp=1)
    assert (await status(app, "d-4", headers=stale)).status_code == 401


@pytest.mark.anyio
async def test_an_unknown_or_refused_delivery_has_no_status(app: Any) -> None:
    assert (await status(app, "never-sent")).status_code == 404
    assert (await post(app, payload={**ARRIVED, "path": ""}, delivery="d-5")).status_code == 422
    assert (await status(app, "d-5")).status_code == 404


def test_delivery_records_expire_with_their_delivery_id(tmp_path: Path) -> None:
    store = DeliveryStore(tmp_path / "d.sqlite3", purge_every=0)
    store.accept({"d:s:x": 100}, "e1", b"{}", now=1000, record=("s", "x", "mlops.data.arrived", 100))
    got = store.delivery("s", "x", now=1001)
    assert got is not None and got.queued and got.forwarded_at is None
    store.sent([1], now=1002)
    got = store.delivery("s", "x", now=1003)
    assert got is not None and not got.queued and got.forwarded_at == 1002
    assert store.delivery("s", "x", now=1101) is None


@pytest.mark.anyio
async def test_prefect_runs_reads_the_automation_events_and_the_runs() -> None:
    event_id = str(uuid.uuid4())
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        seen.append(body)
        if request.url.path.endswith("/events/filter"):
            related = [{"prefect.resource.id": "prefect.flow-run.r-9", "prefect.resource.role": "flow-run"},
                       {"prefect.resource.id": f"prefect.event.{event_id}", "prefect.resource.role": "triggering-event"}]
            return httpx.Response(200, json={"events": [
                {"event": "prefect.automation.action.executed", "related": related, "payload": {}},
                {"event": "prefect.automation.action.failed", "related": related[1:],
                 "payload": {"reason": "a second action failed"}}]})
        return httpx.Response(200, json=[{"id": "r-9", "name": "calm-fox", "deployment_id": "d",
                                          "state": {"type": "CANCELLED", "name": "Cancelled",
                                                    "message": "Deployment concurrency limit reached."}}])

    lookup = PrefectRuns("http://prefect/api", transport=httpx.MockTransport(handler))
    got = await lookup.outcome(event_id, 1_700_000_000.0)
    await lookup.aclose()
    assert seen[0]["filter"]["related"] == {"id": [f"prefect.event.{event_id}"]}
    assert seen[1] == {"flow_runs": {"id": {"any_": ["r-9"]}}}
    assert got.runs == [{"id": "r-9", "name": "calm-fox", "deployment_id": "d", "state": "CANCELLED",
                         "state_name": "Cancelled", "message": "Deployment concurrency limit reached."}]
    assert got.failures == ["a second action failed"] and got.error is None
    down = PrefectRuns("http://prefect/api", transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    assert "could not ask Prefect" in str((await down.outcome(event_id, 0.0)).error)


def test_the_sign_cli_signs_a_status_request(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from mlops.webhooks.sign import main as sign_main

    monkeypatch.setenv("T_STATUS_SECRET", "k")
    assert sign_main(["--secret-env", "T_STATUS_SECRET", "--status-path", "/hooks/a/deliveries/x",
                      "--timestamp", "5"]) == 0
    expected = status_headers("k", "/hooks/a/deliveries/x", timestamp=5)
    assert capsys.readouterr().out.split() == [
        "-H", f"X-Mlops-Timestamp:{expected[TIMESTAMP_HEADER]}", "-H", f"X-Mlops-Signature:{expected[SIGNATURE_HEADER]}"]
