"""The bridge's ASGI app: `POST /hooks/{source}` (signed JSON -> Prefect event),
`GET /hooks/{source}/deliveries/{delivery_id}` (signed: what became of a delivery) and `GET /health`.

Checks run cheapest-first and nothing is queued unless every one passes:
unknown source 404, body too large 413, not JSON content type 415, a signing header sent twice 400,
unsigned/stale/bad signature 401, no delivery id 400, malformed JSON 400, a body that fails the
source's payload schema 422, template failure or invalid event 422, replay 409.

A delivery that passes is recorded as seen and its event queued in the outbox in one SQLite
transaction, and only then answered 202 with the event id: from that moment the event survives a
restart of the bridge and an outage of Prefect. The forwarder (forwarder.py) sends it to Prefect's
events API at once, in order, retrying until Prefect acknowledges it. A full outbox (Prefect down
for long) answers 503 with Retry-After, so senders hold their deliveries until it drains.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlops.core.errors import ConfigError
from mlops.core.settings import get_settings, read_secret
from mlops.webhooks.config import BridgeConfig, load_webhook_config
from mlops.webhooks.forwarder import Forwarder
from mlops.webhooks.payloads import PayloadInvalid, PayloadSchema
from mlops.webhooks.signing import status_message, verify
from mlops.webhooks.sinks import EventSink, PrefectApiSink, prefect_auth_headers
from mlops.webhooks.status import PrefectRuns, RunLookup, delivery_status
from mlops.webhooks.store import DeliveryStore
from mlops.webhooks.templating import (
    EventLimits,
    EventTemplate,
    TemplateFailure,
    build_event,
    make_environment,
    template_context,
)

log = logging.getLogger("mlops.webhook_bridge")

# Fixed namespace: event id = uuid5(NAMESPACE, "<source>/<delivery id>"), so every copy of one
# delivery maps to one event id, and Prefect (which dedupes events by id) sees it once.
EVENT_NAMESPACE = uuid.UUID("6f1c7c1e-3b7a-5d2e-9a41-0c2f3e7b8d55")
DELIVERY_ID = re.compile(r"[\x21-\x7e]{1,200}")
TIMESTAMP = re.compile(r"[0-9]{1,12}")
JSON_TYPE = re.compile(r"application/(?:[a-z0-9.+-]+\+)?json")
RETRY_AFTER_SECONDS = "5"


def event_id_for(source: str, delivery_id: str) -> uuid.UUID:
    """The deterministic Prefect event id of one delivery."""
    return uuid.uuid5(EVENT_NAMESPACE, f"{source}/{delivery_id}")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def repeated_key(body: bytes) -> str | None:
    """The first key a JSON object of `body` (already valid JSON) holds twice, None when there is none."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen and not found:
                found.append(key)
            seen.add(key)
        return {}  # the values are not needed, only the check

    try:
        json.loads(body, object_pairs_hook=pairs)
    except RecursionError:  # nested deeper than this parser goes: the payload schema judges the body
        return None
    return found[0] if found else None


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@dataclass(frozen=True)
class Source:
    name: str
    secret: bytes
    template: EventTemplate
    schema: PayloadSchema | None = None


SIGNING_HEADERS = ("x-mlops-signature", "x-mlops-timestamp", "x-mlops-delivery")


class Bridge:
    """Request handling with its collaborators (config, secrets, store, sink, clock) injected."""

    def __init__(
        self,
        config: BridgeConfig,
        sources: dict[str, Source],
        disabled: list[str],
        store: DeliveryStore,
        sink: EventSink,
        clock: Callable[[], float] = time.time,
        limits: EventLimits | None = None,
        runs: RunLookup | None = None,
    ) -> None:
        self.config = config
        self.runs = runs
        self.limits = limits or EventLimits()
        self.sources = sources
        self.disabled = disabled
        self.store = store
        self.sink = sink
        self.forwarder = Forwarder(store, sink, lease_seconds=3 * config.emit_timeout_seconds + 5)
        self.clock = clock
        self._queued = 0
        self._queued_checked = 0.0
        self.retention_seconds = config.delivery_retention_hours * 3600
        # A signature is only usable inside the timestamp window, so remembering it that long suffices.
        self.signature_ttl = 2 * config.timestamp_tolerance_seconds + 60

    def _reject(self, status: int, message: str, source: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
        # Never log headers: they hold the signature. The source comes from the URL, so cap it.
        log.warning("rejected webhook source=%r status=%d: %s", source[:64], status, message)
        return _error(status, message, headers)

    async def hook(self, request: Request) -> Response:
        name: str = request.path_params["source"]
        source = self.sources.get(name)
        if source is None:
            return self._reject(404, f"no enabled webhook source named '{name[:64]}'", name)

        limit = self.config.max_body_bytes
        headers = request.headers
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return self._reject(400, "Content-Length must be a non-negative integer", name)
            if int(length) > limit:
                return self._reject(413, f"body is {length} bytes; the limit is {limit} bytes", name)
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not JSON_TYPE.fullmatch(media_type):
            return self._reject(
                415, f"Content-Type must be application/json, got '{media_type[:80] or 'nothing'}'", name
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return self._reject(413, f"body exceeds the limit of {limit} bytes", name)

        now = self.clock()
        refused = self._authenticate(request, source, bytes(body), now, "the body and timestamp")
        if isinstance(refused, Response):
            return refused
        signature = refused

        delivery = headers.get("x-mlops-delivery", "").strip()
        if not DELIVERY_ID.fullmatch(delivery):
            return self._reject(
                400, "X-Mlops-Delivery must be a unique id per delivery (1-200 printable characters, no spaces)", name
            )
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return self._reject(400, f"body is not valid JSON: {exc.msg} at char {exc.pos}", name)
        repeated = repeated_key(bytes(body))
        if repeated is not None:  # JSON parsers disagree on which copy wins: what the sender meant is unclear
            return self._reject(400, f"body repeats the key '{repeated[:64]}' in one object; send each key once",
                                name)

        if source.schema is not None:
            try:
                source.schema.check(payload)
            except PayloadInvalid as exc:
                return self._reject(422, str(exc), name)

        received = datetime.fromtimestamp(now, UTC)
        event_id = event_id_for(name, delivery)
        try:
            context = template_context(payload, request.scope["headers"], name, delivery, received)
            event = build_event(
                source.template.render(context),
                event_id=event_id,
                occurred=received,
                source=name,
                delivery_id=delivery,
                limits=self.limits,
            )
        except TemplateFailure as exc:
            return self._reject(422, str(exc), name)

        if self._outbox_full(now):
            return self._reject(
                503, f"the bridge holds {self._queued} events Prefect has not taken yet; retry later", name,
                {"Retry-After": RETRY_AFTER_SECONDS},
            )
        delivery_key = f"d:{name}:{delivery}"
        signature_key = "s:" + hashlib.sha256(signature.encode()).hexdigest()
        claims = {delivery_key: self.retention_seconds, signature_key: self.signature_ttl}
        record = (name, delivery, str(event["event"]), float(self.retention_seconds))
        taken = self.store.accept(claims, str(event_id), orjson.dumps(event), now, record)
        if taken == delivery_key:
            return self._reject(409, f"delivery '{delivery}' was already received; it starts nothing twice", name)
        if taken is not None:
            return self._reject(
                409,
                "this exact signed request (timestamp, body, signature) was already received under another delivery id",
                name,
            )
        self._queued += 1
        self.forwarder.notify()
        log.info("accepted webhook source=%s delivery=%s event=%s id=%s", name, delivery, event["event"], event_id)
        return JSONResponse({"event_id": str(event_id)}, status_code=202)

    def _authenticate(self, request: Request, source: Source, signed: bytes, now: float,
                      what: str) -> Response | str:
        """The request's signature when it is valid for `signed` at its timestamp, else the refusal.

        Each signing header must come once (400 otherwise: which copy counts would be ambiguous);
        whitespace around a value is ignored."""
        name = source.name
        raw = request.headers
        for header in SIGNING_HEADERS:
            if len(raw.getlist(header)) > 1:
                return self._reject(400, f"the {header} header was sent more than once; send it once", name)
        signature = raw.get("x-mlops-signature", "").strip()
        stamp = raw.get("x-mlops-timestamp", "").strip()
        if not signature or not stamp:
            return self._reject(
                401,
                "missing X-Mlops-Signature or X-Mlops-Timestamp header; sign the request with the source's secret",
                name,
            )
        if not TIMESTAMP.fullmatch(stamp):
            return self._reject(401, "X-Mlops-Timestamp must be unix seconds (an integer)", name)
        skew = int(now) - int(stamp)
        tolerance = self.config.timestamp_tolerance_seconds
        if abs(skew) > tolerance:
            return self._reject(
                401,
                f"X-Mlops-Timestamp is {abs(skew)} s {'behind' if skew > 0 else 'ahead of'} the bridge clock "
                f"(allowed {tolerance} s); check the sender's clock and sign each retry afresh",
                name,
            )
        if not verify(source.secret, stamp, signed, signature):
            return self._reject(401, f"X-Mlops-Signature does not match {what} for this source", name)
        return signature

    async def status(self, request: Request) -> Response:
        """`GET /hooks/{source}/deliveries/{delivery_id}`: what became of one accepted delivery.

        Signed like a delivery with the source's secret, over "GET <path>" instead of a body
        (mlops.webhooks.signing.status_headers)."""
        name: str = request.path_params["source"]
        delivery: str = request.path_params["delivery_id"]
        source = self.sources.get(name)
        if source is None:
            return self._reject(404, f"no enabled webhook source named '{name[:64]}'", name)
        path = request.scope.get("raw_path") or request.url.path.encode()
        refused = self._authenticate(request, source, status_message(path), self.clock(), "'GET <path>' and timestamp")
        if isinstance(refused, Response):
            return refused
        found = self.store.delivery(name, delivery)
        if found is None:
            return _error(404, f"no delivery '{delivery[:200]}' from source '{name}' is known (deliveries are kept "
                               f"{self.config.delivery_retention_hours:g} h)")
        outcome = None
        if self.runs is not None and found.forwarded_at is not None and not found.error:
            outcome = await self.runs.outcome(found.event_id, found.accepted_at)
        return JSONResponse(delivery_status(found, outcome))

    def _outbox_full(self, now: float) -> bool:
        """Whether the outbox is at its limit (counted at most once a second)."""
        if now - self._queued_checked >= 1.0 or self._queued >= self.config.max_queued_events:
            self._queued = int(self.store.outbox_stats(now)["queued"])
            self._queued_checked = now
        return self._queued >= self.config.max_queued_events

    async def health(self, request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "sources": sorted(self.sources), "disabled_sources": sorted(self.disabled),
             "outbox": self.store.outbox_stats(), "forwarded": self.forwarder.sent_total}
        )

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.forwarder.start()  # also sends what an earlier run left queued
        try:
            yield
        finally:
            await self.forwarder.stop()
            await self.sink.aclose()
            if self.runs is not None:
                await self.runs.aclose()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail).lower() if exc.status_code in (404, 405) else str(exc.detail))


def _prefect_api(prefect_api_url: str | None) -> tuple[str, dict[str, str]]:
    """The Prefect API named explicitly, or by Prefect's own settings (PREFECT_API_URL, profile,
    PREFECT_API_AUTH_STRING / PREFECT_API_KEY), and its auth headers."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    url = prefect_api_url or api.url
    if not url:
        raise ConfigError("no Prefect API to send events to: pass --prefect-api-url or set PREFECT_API_URL")
    key = api.key.get_secret_value() if api.key else None
    auth = api.auth_string.get_secret_value() if api.auth_string else None
    return url, prefect_auth_headers(key, auth)


def default_prefect_sink(prefect_api_url: str | None, timeout: float) -> PrefectApiSink:
    """A sink for the Prefect API (see _prefect_api)."""
    url, headers = _prefect_api(prefect_api_url)
    return PrefectApiSink(url, headers=headers, timeout=timeout)


def default_run_lookup(prefect_api_url: str | None, timeout: float) -> PrefectRuns:
    """Where the status route asks what became of an event: the same Prefect API as the sink."""
    url, headers = _prefect_api(prefect_api_url)
    return PrefectRuns(url, headers=headers, timeout=timeout)


def create_app(
    config_path: str | Path,
    prefect_api_url: str | None = None,
    state_dir: str | Path | None = None,
    *,
    sink: EventSink | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    runs: RunLookup | None = None,
) -> Starlette:
    """Build the bridge from webhooks.yaml.

    Secrets are read from `environ` (default: the process environment) by each source's
    `secret_env`; a source whose variable is unset is disabled with a warning. Seen deliveries are
    kept in `<state_dir>/deliveries.sqlite3` (default: `$MLOPS_HOME/webhooks`). `sink` replaces
    emission to Prefect (tests, benchmarks), and then `runs` is where the status route looks runs up
    (none: it reports what the bridge knows).
    """
    config = load_webhook_config(config_path)
    limits = EventLimits.from_prefect_settings()
    jinja = make_environment()
    sources: dict[str, Source] = {}
    disabled: list[str] = []
    for name, spec in config.sources.items():
        template = EventTemplate(name, spec.template, jinja)
        secret = read_secret(spec.secret_env, environ)
        if not secret:
            log.warning("webhook source '%s' is disabled: its secret variable %s is not set", name, spec.secret_env)
            disabled.append(name)
            continue
        schema = PayloadSchema(name, spec.payload_schema) if spec.payload_schema is not None else None
        sources[name] = Source(name=name, secret=secret.encode("utf-8"), template=template, schema=schema)

    if state_dir is None:
        state_dir = get_settings().state_dir / "webhooks"
    store = DeliveryStore(Path(state_dir) / "deliveries.sqlite3")
    if sink is None:
        sink = default_prefect_sink(prefect_api_url, config.emit_timeout_seconds)
        runs = runs or default_run_lookup(prefect_api_url, config.emit_timeout_seconds)

    bridge = Bridge(config, sources, disabled, store, sink, clock, limits, runs)
    app = Starlette(
        routes=[
            Route("/hooks/{source}", bridge.hook, methods=["POST"]),
            Route("/hooks/{source}/deliveries/{delivery_id:path}", bridge.status, methods=["GET"]),
            Route("/health", bridge.health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=bridge.lifespan,
    )
    app.state.bridge = bridge
    return app
