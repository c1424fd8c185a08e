"""Webhook bridge, in process: every refusal queues and emits nothing; an accepted delivery is queued
in the outbox and forwarded as one event with a deterministic id, also across an outage of Prefect
and a restart of the bridge. Prefect is replaced by a recording sink (or a mock transport)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from mlops.core.startup import free_port
from mlops.webhooks.app import EVENT_NAMESPACE, create_app, event_id_for
from mlops.webhooks.forwarder import Forwarder
from mlops.webhooks.sign import main as sign_main
from mlops.webhooks.signing import sign, signed_headers, verify
from mlops.webhooks.sinks import EmitError, PrefectApiSink, RecordingSink
from mlops.webhooks.store import DeliveryStore

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "webhooks.yaml"
SECRET = "unit-test-secret-0123456789abcdef"
ENV = {
    "MLOPS_WEBHOOK_DATA_VENDOR_SECRET": SECRET,
    "MLOPS_WEBHOOK_LABELS_SECRET": "labels-" + SECRET,
}
ARRIVED = {"dataset": "churn", "path": "/data/incoming/churn/2024-06-01.parquet", "rows": 1200}

TEST_SOURCES = """
sources:
  no-resource-id:
    secret_env: T_SECRET
    template: '{"event": "mlops.data.arrived", "resource": {"name": {{ body.dataset | tojson }}}}'
  reserved:
    secret_env: T_SECRET
    template: '{"event": "prefect.flow-run.Completed", "resource": {"prefect.resource.id": "x"}}'
  not-json:
    secret_env: T_SECRET
    template: 'event={{ body.dataset }}'
  extra-key:
    secret_env: T_SECRET
    template: '{"event": "mlops.data.arrived", "resource": {"prefect.resource.id": "x"}, "id": "mine"}'
  bad-label:
    secret_env: T_SECRET
    template: '{"event": "mlops.data.arrived", "resource": {"prefect.resource.id": "x", "rows": {{ body.rows }}}}'
  sandbox:
    secret_env: T_SECRET
    template: '{"event": {{ body.__class__.__mro__ | tojson }}, "resource": {"prefect.resource.id": "x"}}'
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def app(tmp_path: Path, sink: RecordingSink) -> Any:
    return create_app(CONFIG, state_dir=tmp_path / "state", sink=sink, environ=ENV)


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge")


def body_of(payload: Any) -> bytes:
    return orjson.dumps(payload)


async def post(
    app: Any,
    source: str = "data-vendor",
    payload: Any = ARRIVED,
    *,
    secret: str = SECRET,
    delivery: str | None = None,
    timestamp: int | None = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
    forwarded: bool = True,
) -> httpx.Response:
    """Send one signed delivery; with `forwarded`, an accepted one is also waited for until the
    forwarder has handed it to the sink."""
    body = body_of(payload) if raw is None else raw
    h = signed_headers(secret, body, timestamp=timestamp, delivery_id=delivery or str(uuid.uuid4()))
    h.update(headers or {})
    for name in drop:
        h.pop(name, None)
    async with client_for(app) as c:
        resp = await c.post(f"/hooks/{source}", content=body, headers=h)
    if forwarded and resp.status_code == 202:
        await app.state.bridge.forwarder.drain(10)
    return resp


def assert_refused(resp: httpx.Response, status: int, app: Any, words: str) -> None:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert isinstance(error, str) and words.lower() in error.lower()
    bridge = app.state.bridge
    assert bridge.store.outbox_stats()["queued"] == 0, "a refused delivery must queue nothing"
    assert bridge.sink.events == [], "a refused delivery must emit nothing"


async def wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# ---- signing -----------------------------------------------------------------------------------


def test_sign_matches_the_documented_scheme() -> None:
    body = b'{"dataset": "churn"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", 1700000000, body) == f"sha256={expected}"
    assert verify("k", "1700000000", body, f"sha256={expected}")
    assert not verify("k", "1700000001", body, f"sha256={expected}")
    assert not verify("other", "1700000000", body, f"sha256={expected}")
    assert not verify("k", "1700000000", body, "sha256=ünicode")


def test_sign_cli_prints_curl_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    body_file = tmp_path / "payload.json"
    body_file.write_bytes(b'{"dataset": "churn", "path": "/x.parquet"}')
    monkeypatch.setenv("VENDOR_SECRET", "s3")
    code = sign_main(
        ["--secret-env", "VENDOR_SECRET", "--body", str(body_file), "--timestamp", "1700000000", "--delivery-id", "d-1"]
    )
    assert code == 0
    out = capsys.readouterr().out.split()
    assert out[::2] == ["-H"] * 4
    headers = dict(part.split(":", 1) for part in out[1::2])
    assert headers["X-Mlops-Timestamp"] == "1700000000"
    assert headers["X-Mlops-Delivery"] == "d-1"
    assert headers["X-Mlops-Signature"] == sign("s3", 1700000000, body_file.read_bytes())
    assert "s3" not in " ".join(out).replace("sha256=", "")

    monkeypatch.delenv("VENDOR_SECRET")
    assert sign_main(["--secret-env", "VENDOR_SECRET", "--body", str(body_file)]) == 2
    assert "VENDOR_SECRET is not set" in capsys.readouterr().err


# ---- the happy path ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_signed_delivery_emits_one_event_with_a_deterministic_id(app: Any, sink: RecordingSink) -> None:
    resp = await post(app, delivery="vendor-delivery-42")
    assert resp.status_code == 202, resp.text
    expected_id = str(uuid.uuid5(EVENT_NAMESPACE, "data-vendor/vendor-delivery-42"))
    assert resp.json() == {"event_id": expected_id}
    assert [e["id"] for e in sink.events] == [expected_id]
    event = sink.events[0]
    assert event["event"] == "mlops.data.arrived"
    assert event["resource"] == {"prefect.resource.id": "mlops.dataset.churn", "prefect.resource.name": "churn"}
    assert event["payload"] == {
        "dataset": "churn",
        "path": ARRIVED["path"],
        "rows": 1200,
        "reason": f"new file landed from the data vendor: {ARRIVED['path']}",
    }
    assert event["related"] == [
        {
            "prefect.resource.id": "mlops.webhook.data-vendor",
            "prefect.resource.role": "webhook",
            "prefect.resource.name": "data-vendor",
            "mlops.webhook.delivery": "vendor-delivery-42",
        }
    ]


@pytest.mark.anyio
async def test_event_id_depends_only_on_source_and_delivery(tmp_path: Path) -> None:
    first, second = RecordingSink(), RecordingSink()
    app1 = create_app(CONFIG, state_dir=tmp_path / "a", sink=first, environ=ENV)
    app2 = create_app(CONFIG, state_dir=tmp_path / "b", sink=second, environ=ENV)
    r1 = await post(app1, delivery="same", payload={**ARRIVED, "rows": 1})
    r2 = await post(app2, delivery="same", payload={**ARRIVED, "rows": 2})
    r3 = await post(app2, "labels", delivery="same", secret=ENV["MLOPS_WEBHOOK_LABELS_SECRET"])
    assert r1.json()["event_id"] == r2.json()["event_id"] == str(event_id_for("data-vendor", "same"))
    assert r3.json()["event_id"] != r1.json()["event_id"]
    assert second.events[1]["event"] == "mlops.labels.arrived"
    assert second.events[1]["resource"]["prefect.resource.id"] == "mlops.dataset.churn"


@pytest.mark.anyio
async def test_optional_fields_and_charset_are_accepted(app: Any, sink: RecordingSink) -> None:
    resp = await post(
        app, payload={"dataset": "churn", "path": "/p.csv"}, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert resp.status_code == 202, resp.text
    assert sink.events[0]["payload"]["rows"] is None


@pytest.mark.anyio
async def test_health_lists_enabled_and_disabled_sources(app: Any) -> None:
    async with client_for(app) as c:
        resp = await c.get("/health")
    assert resp.status_code == 200
    body = resp.json()
    assert {k: body[k] for k in ("status", "sources", "disabled_sources")} == {
        "status": "ok", "sources": ["data-vendor", "labels"], "disabled_sources": ["ops"]}
    assert body["outbox"] == {"queued": 0, "oldest_age_seconds": 0.0, "last_error": None, "dead_letters": 0}


# ---- refusals: nothing is emitted --------------------------------------------------------------


@pytest.mark.anyio
async def test_missing_signature_is_401(app: Any, sink: RecordingSink) -> None:
    assert_refused(await post(app, drop=("X-Mlops-Signature",)), 401, app, "missing X-Mlops-Signature")
    assert_refused(await post(app, drop=("X-Mlops-Timestamp",)), 401, app, "missing")


@pytest.mark.anyio
async def test_bad_signature_is_401(app: Any, sink: RecordingSink) -> None:
    assert_refused(await post(app, secret="not-the-secret"), 401, app, "does not match")
    tampered = await post(
        app, raw=body_of(ARRIVED), headers={"X-Mlops-Signature": sign(SECRET, int(time.time()), b"{}")}
    )
    assert_refused(tampered, 401, app, "does not match")
    assert_refused(await post(app, headers={"X-Mlops-Signature": "sha256=zz"}), 401, app, "does not match")
    assert_refused(await post(app, headers={"X-Mlops-Timestamp": "soon"}), 401, app, "unix seconds")


@pytest.mark.anyio
async def test_stale_or_future_timestamp_is_401(app: Any, sink: RecordingSink) -> None:
    now = int(time.time())
    assert_refused(await post(app, timestamp=now - 301), 401, app, "behind")
    assert_refused(await post(app, timestamp=now + 301), 401, app, "ahead of")
    assert (await post(app, timestamp=now - 250)).status_code == 202


@pytest.mark.anyio
async def test_replayed_delivery_is_409(app: Any, sink: RecordingSink) -> None:
    assert (await post(app, delivery="once")).status_code == 202
    assert len(sink.events) == 1
    sink.events.clear()
    # Re-signed with a fresh timestamp (as a sender's retry would be): still a replay.
    again = await post(app, delivery="once", timestamp=int(time.time()) - 5)
    assert_refused(again, 409, app, "already received")


@pytest.mark.anyio
async def test_reused_signature_under_a_new_delivery_id_is_409(app: Any, sink: RecordingSink) -> None:
    body = body_of(ARRIVED)
    h = signed_headers(SECRET, body, delivery_id="first")
    async with client_for(app) as c:
        assert (await c.post("/hooks/data-vendor", content=body, headers=h)).status_code == 202
        await app.state.bridge.forwarder.drain(10)
        sink.events.clear()
        h["X-Mlops-Delivery"] = "second"  # the delivery id is not signed; the signature is remembered
        resp = await c.post("/hooks/data-vendor", content=body, headers=h)
    assert_refused(resp, 409, app, "exact signed request")


@pytest.mark.anyio
async def test_unknown_or_disabled_source_is_404(app: Any, sink: RecordingSink) -> None:
    assert_refused(await post(app, "nobody"), 404, app, "no enabled webhook source named 'nobody'")
    assert_refused(await post(app, "ops", secret="anything"), 404, app, "'ops'")


@pytest.mark.anyio
async def test_oversized_body_is_413_by_header_and_by_stream(app: Any, sink: RecordingSink) -> None:
    big = body_of({"dataset": "churn", "path": "/p", "pad": "x" * (1024 * 1024)})
    assert_refused(await post(app, raw=big), 413, app, "limit")

    async def chunks() -> Any:  # no Content-Length: the bridge must count what streams in
        for _ in range(17):
            yield b" " * 65536

    h = signed_headers(SECRET, b"")
    async with client_for(app) as c:
        resp = await c.post("/hooks/data-vendor", content=chunks(), headers=h)
    assert_refused(resp, 413, app, "exceeds the limit")


@pytest.mark.anyio
async def test_non_json_content_type_is_415(app: Any, sink: RecordingSink) -> None:
    assert_refused(await post(app, headers={"Content-Type": "text/plain"}), 415, app, "application/json")
    assert_refused(
        await post(app, headers={"Content-Type": "application/x-www-form-urlencoded"}), 415, app, "Content-Type"
    )
    assert_refused(await post(app, drop=("Content-Type",)), 415, app, "got 'nothing'")


@pytest.mark.anyio
async def test_malformed_json_is_400(app: Any, sink: RecordingSink) -> None:
    assert_refused(await post(app, raw=b'{"dataset": "churn",'), 400, app, "not valid JSON")
    assert_refused(await post(app, raw=b""), 400, app, "not valid JSON")


@pytest.mark.anyio
async def test_duplicate_keys_in_the_body_are_400(app: Any, sink: RecordingSink) -> None:
    """Issue 21: `{"path": "a", "path": "b"}` was accepted, the last copy winning; parsers disagree on that."""
    twice = b'{"dataset": "churn", "path": "/in/a.csv", "path": "/in/b.csv"}'
    assert_refused(await post(app, raw=twice), 400, app, "repeats the key 'path'")
    nested = b'{"dataset": "churn", "path": "/in/a.csv", "meta": {"by": "x", "by": "y"}}'
    assert_refused(await post(app, raw=nested), 400, app, "repeats the key 'by'")
    same_key_apart = b'{"dataset": "churn", "path": "/in/a.csv", "a": {"k": 1}, "b": {"k": 2}}'
    assert (await post(app, raw=same_key_apart)).status_code == 202  # one key in two objects is fine


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/in/a\x00.csv", "/in/a.csv\n", "/in/\ta.csv", "  "])
async def test_a_control_character_in_a_path_is_refused_by_the_rule(app: Any, sink: RecordingSink,
                                                                     path: str) -> None:
    """Issue 21: a NUL byte in `path` passed the payload schema and crashed the training run."""
    for source, secret in (("data-vendor", SECRET), ("labels", "labels-" + SECRET)):
        resp = await post(app, source, {"dataset": "churn", "path": path}, secret=secret)
        assert_refused(resp, 422, app, "payload field 'path' must be a path that is not blank and holds no control")


@pytest.mark.anyio
async def test_missing_delivery_id_is_400(app: Any, sink: RecordingSink) -> None:
    assert_refused(await post(app, drop=("X-Mlops-Delivery",)), 400, app, "X-Mlops-Delivery")
    assert_refused(await post(app, headers={"X-Mlops-Delivery": "has space"}), 400, app, "X-Mlops-Delivery")


@pytest.mark.anyio
async def test_payload_missing_template_field_is_422(app: Any, sink: RecordingSink, tmp_path: Path) -> None:
    # the shipped sources name the field through their payload schema
    assert_refused(await post(app, payload={"path": "/p.csv"}), 422, app, "payload field 'dataset' is required")
    assert_refused(await post(app, payload=["not", "an", "object"]), 422, app, "the payload must be an object")
    # a source without a schema: the template names the missing field (inside |tojson too, not a TypeError)
    cfg = tmp_path / "webhooks.yaml"
    cfg.write_text("sources:\n  bare:\n    secret_env: T_SECRET\n    template: '{\"event\": \"mlops.data.arrived\", "
                   "\"resource\": {\"prefect.resource.id\": \"x\"}, \"payload\": {\"path\": {{ body.path | tojson }}}}'\n")
    bare = create_app(cfg, state_dir=tmp_path / "s", sink=RecordingSink(), environ={"T_SECRET": "t"})
    resp = await post(bare, "bare", {"dataset": "churn"}, secret="t")
    assert_refused(resp, 422, bare, "uses a value the payload lacks (no field 'path')")
    assert "StrictUndefined" not in resp.text and "TypeError" not in resp.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("no-resource-id", "prefect.resource.id"),
        ("reserved", "reserved for Prefect"),
        ("not-json", "did not render valid JSON"),
        ("extra-key", "unexpected keys ['id']"),
        ("bad-label", "resource"),
        ("sandbox", "template for source 'sandbox'"),
    ],
)
async def test_template_output_that_is_not_a_valid_event_is_422(tmp_path: Path, source: str, words: str) -> None:
    cfg = tmp_path / "webhooks.yaml"
    cfg.write_text(TEST_SOURCES)
    sink = RecordingSink()
    app = create_app(cfg, state_dir=tmp_path / "s", sink=sink, environ={"T_SECRET": "t"})
    resp = await post(app, source, secret="t")
    assert_refused(resp, 422, app, words)


@pytest.mark.anyio
async def test_prefect_down_keeps_the_event_queued_and_forwards_it_when_back(app: Any, sink: RecordingSink) -> None:
    sink.fail_with = EmitError("the Prefect API is unreachable (ConnectError)")
    resp = await post(app, delivery="while-down", forwarded=False)
    assert resp.status_code == 202, resp.text
    bridge = app.state.bridge
    await wait_for(lambda: sink.calls >= 1)
    stats = bridge.store.outbox_stats()
    assert stats["queued"] == 1 and "unreachable" in str(stats["last_error"])
    assert sink.events == []
    # the sender's retry of an accepted delivery starts nothing twice
    retry = await post(app, delivery="while-down", forwarded=False)
    assert retry.status_code == 409
    sink.fail_with = None
    await bridge.forwarder.drain(10)
    assert [e["id"] for e in sink.events] == [resp.json()["event_id"]]
    assert bridge.store.outbox_stats()["queued"] == 0


@pytest.mark.anyio
async def test_queued_events_survive_a_restart_of_the_bridge(tmp_path: Path) -> None:
    down = RecordingSink()
    down.fail_with = EmitError("the Prefect API is unreachable (ConnectError)")
    first = create_app(CONFIG, state_dir=tmp_path / "state", sink=down, environ=ENV)
    ids = [(await post(first, delivery=f"d{i}", payload={**ARRIVED, "rows": i}, forwarded=False)).json()["event_id"]
           for i in range(3)]
    await first.state.bridge.forwarder.stop(drain_seconds=0.1)
    first.state.bridge.store.close()

    up = RecordingSink()
    second = create_app(CONFIG, state_dir=tmp_path / "state", sink=up, environ=ENV)
    await second.state.bridge.forwarder.drain(10)  # starts it; the rows' retry delay is short
    assert [e["id"] for e in up.events] == ids, "forwarded once each, in the order accepted"
    assert (await post(second, delivery="d1")).status_code == 409, "seen ids survive the restart too"


@pytest.mark.anyio
async def test_real_prefect_sink_to_a_closed_port_queues_the_event(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    app = create_app(CONFIG, prefect_api_url=f"http://127.0.0.1:{port}/api", state_dir=tmp_path, environ=ENV)
    resp = await post(app, delivery="to-nowhere", forwarded=False)
    assert resp.status_code == 202, resp.text
    store = app.state.bridge.store
    await wait_for(lambda: store.outbox_stats()["last_error"] is not None)
    stats = store.outbox_stats()
    assert stats["queued"] == 1 and "unreachable" in str(stats["last_error"])
    assert store.seen("d:data-vendor:to-nowhere")
    await app.state.bridge.forwarder.stop(drain_seconds=0)
    await app.state.bridge.sink.aclose()


@pytest.mark.anyio
async def test_a_full_outbox_answers_503_and_records_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "webhooks.yaml"
    cfg.write_text(CONFIG.read_text().replace("max_queued_events: 100000", "max_queued_events: 2"))
    sink = RecordingSink()
    sink.fail_with = EmitError("the Prefect API answered 503")
    app = create_app(cfg, state_dir=tmp_path / "state", sink=sink, environ=ENV)
    for i in range(2):
        assert (await post(app, delivery=f"q{i}", payload={**ARRIVED, "rows": i}, forwarded=False)).status_code == 202
    full = await post(app, delivery="q2", forwarded=False)
    assert full.status_code == 503 and full.headers["Retry-After"] == "5"
    assert "retry later" in full.json()["error"]
    assert not app.state.bridge.store.seen("d:data-vendor:q2"), "a refused delivery may be sent again"
    sink.fail_with = None
    await app.state.bridge.forwarder.drain(10)
    assert (await post(app, delivery="q2")).status_code == 202
    assert len(sink.events) == 3


@pytest.mark.anyio
async def test_concurrent_copies_of_one_delivery_emit_once(app: Any, sink: RecordingSink) -> None:
    now = int(time.time())
    results = await asyncio.gather(*(post(app, delivery="dup", timestamp=now - i) for i in range(5)))
    assert sorted(r.status_code for r in results) == [202, 409, 409, 409, 409]
    await app.state.bridge.forwarder.drain(10)
    assert len(sink.events) == 1


@pytest.mark.anyio
async def test_logs_never_hold_secrets_or_signatures(app: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = body_of(ARRIVED)
    good = signed_headers(SECRET, body, delivery_id="logged")
    async with client_for(app) as c:
        await c.post("/hooks/data-vendor", content=body, headers=good)
        await c.post("/hooks/data-vendor", content=body, headers=good)  # replay
        bad = {**good, "X-Mlops-Signature": sign("wrong", good["X-Mlops-Timestamp"], body), "X-Mlops-Delivery": "x"}
        await c.post("/hooks/data-vendor", content=body, headers=bad)
    text = caplog.text
    assert "accepted webhook" in text and "status=409" in text and "status=401" in text
    for secret_thing in (SECRET, good["X-Mlops-Signature"], bad["X-Mlops-Signature"]):
        assert secret_thing not in text
        assert secret_thing.removeprefix("sha256=") not in text


# ---- the Prefect sink ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_forwarder_posts_batches_and_isolates_an_event_prefect_refuses(tmp_path: Path) -> None:
    calls: list[list[dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST" and request.url.path == "/api/events"
        events = json.loads(request.content)
        calls.append(events)
        if any(e.get("event") == "bad" for e in events):
            return httpx.Response(422, json={"detail": "invalid event"})
        return httpx.Response(204)

    store = DeliveryStore(tmp_path / "d.sqlite3")
    for i in range(10):
        event = {"id": f"e{i}", "event": "bad" if i == 3 else "ok"}
        assert store.accept({f"k{i}": 100}, f"e{i}", orjson.dumps(event)) is None
    sink = PrefectApiSink("http://prefect/api", transport=httpx.MockTransport(handler))
    forwarder = Forwarder(store, sink)
    await forwarder.drain(10)
    await forwarder.stop()
    await sink.aclose()
    # All ten went out as one batch; it was refused for one bad event, so each was re-sent alone.
    assert [len(c) for c in calls] == [10] + [1] * 10
    assert forwarder.sent_total == 9
    assert store.outbox_stats()["queued"] == 0 and store.outbox_stats()["dead_letters"] == 1


@pytest.mark.anyio
async def test_stopping_mid_send_leaves_the_event_ready_for_the_next_start(tmp_path: Path) -> None:
    never = asyncio.Event()

    class Hanging(RecordingSink):
        async def send(self, events: list[dict[str, Any]]) -> None:
            self.calls += 1
            await never.wait()

    store = DeliveryStore(tmp_path / "d.sqlite3")
    store.accept({"k": 100}, "e", b'{"id": "e"}')
    sink = Hanging()
    forwarder = Forwarder(store, sink)
    forwarder.start()
    await wait_for(lambda: sink.calls == 1)
    await forwarder.stop(drain_seconds=0)
    assert [seq for seq, _ in store.lease(10, lease_seconds=30)] == [1], "not held by a dead lease"


@pytest.mark.anyio
async def test_prefect_sink_maps_server_errors_to_emit_error() -> None:
    sink = PrefectApiSink("http://prefect/api", transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    with pytest.raises(EmitError, match="answered 500"):
        await sink.send([{"event": "x"}])
    await sink.aclose()
