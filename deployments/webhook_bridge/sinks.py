"""Where accepted events go. The bridge only needs `await sink.emit(event)`.

PrefectApiSink posts to the Prefect server's REST route `POST {api}/events` (a JSON list of events,
answered 204 once the server has published them to its event bus). The REST route is used rather
than the websocket PrefectEventsClient because it acknowledges each call: the bridge answers 202
only after Prefect took the event, and 503 when it did not, so the sender can retry safely.
Concurrent requests are coalesced into one POST (natural batching: whatever queued while the
previous POST was in flight goes in the next), which keeps throughput up without adding a timer.
"""

from __future__ import annotations

import asyncio
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
    async def emit(self, event: dict[str, Any]) -> None: ...

    async def aclose(self) -> None: ...


class NullSink:
    """Accepts and drops every event (benchmarks of the bridge alone)."""

    async def emit(self, event: dict[str, Any]) -> None:
        return None

    async def aclose(self) -> None:
        return None


class RecordingSink:
    """Keeps every emitted event in `events`; set `fail_with` to an exception to simulate outages."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail_with: Exception | None = None

    async def emit(self, event: dict[str, Any]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.events.append(event)

    async def aclose(self) -> None:
        return None


def prefect_auth_headers(api_key: str | None = None, auth_string: str | None = None) -> dict[str, str]:
    """Authorization for a Prefect server: basic auth string (self-hosted) or API key (bearer)."""
    if auth_string:
        return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}
    if api_key:
        return {"Authorization": f"Bearer {api_key}"}
    return {}


class PrefectApiSink:
    """Batched, acknowledged emission through the Prefect server's `POST /events` route."""

    def __init__(
        self,
        api_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        max_batch: int = 200,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = api_url.rstrip("/") + "/events"
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._timeout = timeout
        self._max_batch = max_batch
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def _http(self) -> httpx.AsyncClient:
        # Built on first use, inside the server's event loop.
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                headers=self._headers,
                transport=self._transport,
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
            )
        return self._client

    async def emit(self, event: dict[str, Any]) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((event, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                await self._post([event for event, _ in batch])
            except EventRejected as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                # One bad event must not sink its neighbours: send them one by one.
                for event, fut in batch:
                    try:
                        await self._post([event])
                        _settle(fut, None)
                    except (EventRejected, EmitError) as one:
                        _settle(fut, one)
                continue
            except EmitError as exc:
                for _, fut in batch:
                    _settle(fut, exc)
                continue
            except Exception:  # a bug here must not leave requests waiting forever
                log.exception("emitting a batch of %d events failed", len(batch))
                for _, fut in batch:
                    _settle(fut, EmitError("the bridge failed to send the event to Prefect"))
                continue
            for _, fut in batch:
                _settle(fut, None)

    async def _post(self, events: list[dict[str, Any]]) -> None:
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

    async def aclose(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _settle(fut: asyncio.Future[None], exc: Exception | None) -> None:
    if fut.done():  # the waiting request was cancelled (client went away)
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail", resp.text)
    except (ValueError, AttributeError):
        detail = resp.text
    return str(detail)[:300]
