"""Where forwarded events go. The forwarder only needs `await sink.send(events)`, which returns once
the receiver acknowledged the whole batch, and raises EmitError (try again later) or EventRejected
(the receiver says an event is invalid).

PrefectApiSink posts to the Prefect server's REST route `POST {api}/events` (a JSON list of events,
answered 204 once the server has published them to its event bus). The REST route is used rather
than the websocket PrefectEventsClient because it acknowledges each call, so an outbox row is
deleted only after Prefect took its event.
"""

from __future__ import annotations

import base64
import logging
from typing import Any, Protocol

import httpx
import orjson

log = logging.getLogger("mlops.webhook_bridge")


class EmitError(Exception):
    """Prefect did not take the event (unreachable, timing out, 5xx, auth): the sender gets 503."""


class EventRejected(Exception):
    """Prefect refused the event itself as invalid (4xx validation): the sender gets 422."""


class EventSink(Protocol):
    async def send(self, events: list[dict[str, Any]]) -> None: ...

    async def aclose(self) -> None: ...


class NullSink:
    """Accepts and drops every event (benchmarks of the bridge alone)."""

    async def send(self, events: list[dict[str, Any]]) -> None:
        return None

    async def aclose(self) -> None:
        return None


class RecordingSink:
    """Keeps every sent event in `events`; set `fail_with` to an exception to simulate outages."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail_with: Exception | None = None
        self.calls = 0

    async def send(self, events: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        self.events.extend(events)

    async def aclose(self) -> None:
        return None


def prefect_auth_headers(api_key: str | None = None, auth_string: str | None = None) -> dict[str, str]:
    """Authorization for a Prefect server: basic auth string (self-hosted) or API key (bearer)."""
    if auth_string:
        return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}
    if api_key:
        return {"Authorization": f"Bearer {api_key}"}
    return {}


class PrefectHttp:
    """A lazily built async client for the Prefect API (built on first use, inside the server's event loop)."""

    def __init__(self, api_url: str, *, headers: dict[str, str] | None = None, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.api = api_url.rstrip("/")
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout, headers=self._headers, transport=self._transport,
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class PrefectApiSink(PrefectHttp):
    """Acknowledged emission through the Prefect server's `POST /events` route."""

    @property
    def url(self) -> str:
        return self.api + "/events"

    async def send(self, events: list[dict[str, Any]]) -> None:
        try:
            resp = await self._http().post(self.url, content=orjson.dumps(events))
        except httpx.TimeoutException:
            raise EmitError("the Prefect API did not answer in time") from None
        except httpx.HTTPError as exc:
            raise EmitError(f"the Prefect API is unreachable ({type(exc).__name__})") from None
        if resp.status_code in (200, 201, 202, 204):
            return
        if resp.status_code in (400, 422):
            raise EventRejected(f"Prefect refused the event: {_detail(resp)}")
        raise EmitError(f"the Prefect API answered {resp.status_code}")


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail", resp.text)
    except (ValueError, AttributeError):
        detail = resp.text
    return str(detail)[:300]
