"""What became of an accepted delivery: the answer of `GET /hooks/<source>/deliveries/<delivery id>`.

The bridge knows whether the event is still queued, was forwarded, or was refused by Prefect. Past
that, Prefect knows: a deployment trigger that fires emits `prefect.automation.action.executed` (with
the flow run it created as a related resource) or `prefect.automation.action.failed` (with the
reason), both related to the triggering event (`prefect.event.<event id>`). The flow run's state
then says whether it is waiting for its turn, running, done, or why it did not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import orjson

from mlops.webhooks.sinks import PrefectHttp
from mlops.webhooks.store import Delivery

ACTION_EVENTS = ["prefect.automation.action.executed", "prefect.automation.action.failed"]
FLOW_RUN_PREFIX = "prefect.flow-run."


@dataclass
class EventOutcome:
    """What Prefect did with one event: the flow runs it started, the reasons actions failed, or why
    Prefect could not be asked."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    error: str | None = None


class RunLookup(Protocol):
    async def outcome(self, event_id: str, since: float) -> EventOutcome: ...

    async def aclose(self) -> None: ...


class PrefectRuns(PrefectHttp):
    """Reads automation events and flow runs from the Prefect API (the same URL and auth as the sink)."""

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        resp = await self._http().post(self.api + path, content=orjson.dumps(body))
        if resp.status_code != 200:
            raise httpx.HTTPStatusError(f"{path} answered {resp.status_code}", request=resp.request, response=resp)
        return resp.json()

    async def outcome(self, event_id: str, since: float) -> EventOutcome:
        start = datetime.fromtimestamp(since - 60, UTC).isoformat()
        flt = {"filter": {"occurred": {"since": start}, "event": {"name": ACTION_EVENTS},
                          "related": {"id": [f"prefect.event.{event_id}"]}}, "limit": 50}
        try:
            found = (await self._post("/events/filter", flt))["events"]
            failures = [str(e.get("payload", {}).get("reason", "the automation's action failed"))
                        for e in found if e["event"].endswith(".failed")]
            run_ids = sorted({r["prefect.resource.id"].removeprefix(FLOW_RUN_PREFIX)
                              for e in found if e["event"].endswith(".executed")
                              for r in e.get("related", []) if r["prefect.resource.id"].startswith(FLOW_RUN_PREFIX)})
            runs = await self._post("/flow_runs/filter", {"flow_runs": {"id": {"any_": run_ids}}}) if run_ids else []
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            return EventOutcome(error=f"could not ask Prefect what became of the event ({type(exc).__name__})")
        return EventOutcome([_run(r) for r in runs], failures)


def _run(raw: dict[str, Any]) -> dict[str, Any]:
    state = raw.get("state") or {}
    return {"id": raw["id"], "name": raw.get("name"), "deployment_id": raw.get("deployment_id"),
            "state": state.get("type"), "state_name": state.get("name"), "message": state.get("message") or None}


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def delivery_status(d: Delivery, outcome: EventOutcome | None) -> dict[str, Any]:
    """The status document of one delivery.

    `status` is one of: `queued` (accepted, not yet taken by Prefect), `refused` (Prefect refused the
    event; `detail` says why), `forwarded` (Prefect has it; no run started for it yet), `run` (`runs`
    holds each run started for it, with its state), `not_started` (the trigger's action failed;
    `detail` says why).
    """
    doc: dict[str, Any] = {"source": d.source, "delivery_id": d.delivery, "event_id": d.event_id, "event": d.event,
                           "accepted_at": _iso(d.accepted_at), "forwarded_at": _iso(d.forwarded_at), "runs": []}
    if d.error:
        return {**doc, "status": "refused", "detail": f"Prefect refused the event: {d.error}"}
    if d.forwarded_at is None:
        retry = f"; the last attempt failed: {d.last_error}" if d.last_error else ""
        return {**doc, "status": "queued", "detail": f"accepted and queued; not yet taken by Prefect{retry}"}
    if outcome is None or outcome.error:
        why = outcome.error if outcome is not None and outcome.error else "no Prefect API to ask"
        return {**doc, "status": "forwarded", "detail": f"Prefect took the event; {why}"}
    if outcome.runs:
        parts = [f"flow run {r['name']} ({r['id']}) is {r['state_name'] or r['state']}"
                 + (f": {r['message']}" if r["message"] else "") for r in outcome.runs]
        return {**doc, "status": "run", "runs": outcome.runs, "detail": "; ".join(parts)}
    if outcome.failures:
        return {**doc, "status": "not_started", "detail": "; ".join(outcome.failures)}
    return {**doc, "status": "forwarded",
            "detail": "Prefect took the event and no run has started for it yet (a trigger acts within seconds; "
                      "an event no deployment trigger matches starts nothing)"}
