"""Drains the outbox into the sink (Prefect), in batches, in order, until every event is acknowledged.

One forwarder runs in each bridge process. A request that queues an event wakes it at once, so in
the normal case the event reaches Prefect a few milliseconds after the 202; whatever queued while a
batch was in flight goes in the next one (up to `batch` events per POST). When Prefect is down or
slow, the batch is retried with exponential backoff (0.5 s doubling to `max_backoff`); nothing is
dropped. When Prefect refuses a batch as invalid, its events are sent one by one so that one bad
event cannot hold back the others; the bad one moves to the dead-letter table and is logged. Rows
are leased, so forwarders of several worker processes never send one row at the same time; a lease
left by a crash expires after `lease_seconds` and the row is sent again (Prefect drops a repeated
event id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from mlops.webhooks.sinks import EmitError, EventRejected, EventSink
from mlops.webhooks.store import DeliveryStore

log = logging.getLogger("mlops.webhook_bridge")


class Forwarder:
    def __init__(
        self,
        store: DeliveryStore,
        sink: EventSink,
        *,
        batch: int = 500,
        lease_seconds: float = 60.0,
        idle_poll_seconds: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.store = store
        self.sink = sink
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.idle_poll_seconds = idle_poll_seconds
        self.max_backoff = max_backoff
        self.sent_total = 0
        self.failures_total = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()

    def notify(self) -> None:
        """An event was queued: send it now rather than at the next poll (starts the forwarder on
        first use when the server did not run the app's lifespan)."""
        self.start()
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook-forwarder")

    async def stop(self, drain_seconds: float = 2.0) -> None:
        """Give queued events a moment to go out, then stop; what is left stays queued for the next start."""
        if self._task is None:
            return
        try:
            await self.drain(drain_seconds)
        except TimeoutError:
            log.warning("stopping with %d event(s) still queued; they are sent after the next start",
                        self.store.outbox_stats()["queued"])
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def drain(self, timeout: float) -> None:
        """Wait until this process's forwarder found the outbox empty (TimeoutError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            self._idle.clear()
            self.notify()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the outbox did not empty in time")
            await asyncio.wait_for(self._idle.wait(), remaining)
            if self.store.outbox_stats()["queued"] == 0:
                return
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            self._wake.clear()
            try:
                rows = self.store.lease(self.batch, self.lease_seconds)
            except Exception:  # noqa: BLE001 - a locked or broken file must not kill the forwarder
                log.exception("reading the outbox failed")
                rows = []
            if not rows:
                self._idle.set()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.idle_poll_seconds)
                except TimeoutError:
                    pass
                continue
            if await self._send(rows, backoff):
                backoff = 0.5
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    async def _send(self, rows: list[tuple[int, bytes]], backoff: float) -> bool:
        """Send one leased batch; False when it must be retried later."""
        seqs = [seq for seq, _ in rows]
        events: list[dict[str, Any]] = [orjson.loads(body) for _, body in rows]
        try:
            await self.sink.send(events)
        except asyncio.CancelledError:  # stopping mid-send: the next start sends them at once
            self.store.retry_later(seqs, 0.0, "the bridge stopped while sending")
            raise
        except EventRejected as exc:
            if len(rows) == 1:
                self._dead(rows[0][0], events[0], exc)
                return True
            return await self._one_by_one(rows, events, backoff)
        except EmitError as exc:
            return self._failed(seqs, exc, backoff)
        except Exception as exc:  # noqa: BLE001 - a bug here must not lose or stall the queue
            log.exception("sending %d queued event(s) failed", len(rows))
            return self._failed(seqs, exc, backoff)
        self.store.sent(seqs)
        self.sent_total += len(seqs)
        return True

    async def _one_by_one(self, rows: list[tuple[int, bytes]], events: list[dict[str, Any]], backoff: float) -> bool:
        for (seq, _), event in zip(rows, events, strict=True):
            try:
                await self.sink.send([event])
            except EventRejected as exc:
                self._dead(seq, event, exc)
                continue
            except Exception as exc:  # noqa: BLE001
                self._failed([seq], exc, backoff)
                return False
            self.store.sent([seq])
            self.sent_total += 1
        return True

    def _failed(self, seqs: list[int], exc: BaseException, backoff: float) -> bool:
        self.failures_total += 1
        log.warning("could not forward %d queued event(s) to Prefect (%s); retrying in %.1f s",
                    len(seqs), exc, backoff)
        self.store.retry_later(seqs, backoff, str(exc))
        return False

    def _dead(self, seq: int, event: dict[str, Any], exc: BaseException) -> None:
        log.error("Prefect refused event %s (%s): moved to the dead-letter table", event.get("id"), exc)
        self.store.dead(seq, str(exc))
