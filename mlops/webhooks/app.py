"""The bridge's ASGI app: `POST /hooks/{source}` (signed JSON -> Prefect event) and `GET /health`.

Checks run cheapest-first and nothing is queued unless every one passes:
unknown source 404, body too large 413, not JSON content type 415, unsigned/stale/bad signature 401,
no delivery id 400, malformed JSON 400, template failure or invalid event 422, replay 409.

A delivery that passes is recorded as seen and its event queued in the outbox in one SQLite
transaction, and only then answered 202 with the event id: from that moment the event survives a
restart of the bridge and an outage of Prefect. The forwarder (forwarder.py) sends it to Prefect's
events API at once, in order, retrying until Prefect acknowledges it. A full outbox (Prefect down
for long) answers 503 with Retry-After, so senders hold their deliveries until it drains.
"""

from __future__ import annotations

import hashlib
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
from mlops.webhooks.signing import verify
from mlops.webhooks.sinks import EventSink, PrefectApiSink, prefect_auth_headers
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


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@dataclass(frozen=True)
class Source:
    name: str
    secret: bytes
    template: EventTemplate


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
    ) -> None:
        self.config = config
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

        signature = headers.get("x-mlops-signature")
        stamp = headers.get("x-mlops-timestamp")
        if not signature or not stamp:
            return self._reject(
                401,
                "missing X-Mlops-Signature or X-Mlops-Timestamp header; sign the request with the source's secret",
                name,
            )
        if not TIMESTAMP.fullmatch(stamp):
            return self._reject(401, "X-Mlops-Timestamp must be unix seconds (an integer)", name)
        now = self.clock()
        skew = int(now) - int(stamp)
        tolerance = self.config.timestamp_tolerance_seconds
        if abs(skew) > tolerance:
            return self._reject(
                401,
                f"X-Mlops-Timestamp is {abs(skew)} s {'behind' if skew > 0 else 'ahead of'} the bridge clock "
                f"(allowed {tolerance} s); check the sender's clock and sign each retry afresh",
                name,
            )
        if not verify(source.secret, stamp, bytes(body), signature):
            return self._reject(401, "X-Mlops-Signature does not match the body and timestamp for this source", name)

        delivery = headers.get("x-mlops-delivery", "")
        if not DELIVERY_ID.fullmatch(delivery):
            return self._reject(
                400, "X-Mlops-Delivery must be a unique id per delivery (1-200 printable characters, no spaces)", name
            )
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return self._reject(400, f"body is not valid JSON: {exc.msg} at char {exc.pos}", name)

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
        taken = self.store.accept(claims, str(event_id), orjson.dumps(event), now)
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


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail).lower() if exc.status_code in (404, 405) else str(exc.detail))


def default_prefect_sink(prefect_api_url: str | None, timeout: float) -> PrefectApiSink:
    """A sink for the Prefect API named explicitly, or by Prefect's own settings (PREFECT_API_URL,
    profile, PREFECT_API_AUTH_STRING / PREFECT_API_KEY)."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    url = prefect_api_url or api.url
    if not url:
        raise ConfigError("no Prefect API to send events to: pass --prefect-api-url or set PREFECT_API_URL")
    key = api.key.get_secret_value() if api.key else None
    auth = api.auth_string.get_secret_value() if api.auth_string else None
    return PrefectApiSink(url, headers=prefect_auth_headers(key, auth), timeout=timeout)


def create_app(
    config_path: str | Path,
    prefect_api_url: str | None = None,
    state_dir: str | Path | None = None,
    *,
    sink: EventSink | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """Build the bridge from webhooks.yaml.

    Secrets are read from `environ` (default: the process environment) by each source's
    `secret_env`; a source whose variable is unset is disabled with a warning. Seen deliveries are
    kept in `<state_dir>/deliveries.sqlite3` (default: `$MLOPS_HOME/webhooks`). `sink` replaces
    emission to Prefect (tests, benchmarks).
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
        sources[name] = Source(name=name, secret=secret.encode("utf-8"), template=template)

    if state_dir is None:
        state_dir = get_settings().state_dir / "webhooks"
    store = DeliveryStore(Path(state_dir) / "deliveries.sqlite3")
    if sink is None:
        sink = default_prefect_sink(prefect_api_url, config.emit_timeout_seconds)

    bridge = Bridge(config, sources, disabled, store, sink, clock, limits)
    app = Starlette(
        routes=[
            Route("/hooks/{source}", bridge.hook, methods=["POST"]),
            Route("/health", bridge.health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=bridge.lifespan,
    )
    app.state.bridge = bridge
    return app
