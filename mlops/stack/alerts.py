"""Alerts: Prefect automations that send a notification when something an operator must know happens.

    python -m mlops.stack.alerts --url http://127.0.0.1:9000/alerts      # on a running stack (PREFECT_API_URL)

Each alert is an automation with an event trigger and a `send-notification` action through one
notification block, by default the Custom Webhook block `mlops-alerts` (a generic webhook: a JSON POST
of {"subject", "body", "source"} to a URL you choose; no outside service needed). `--url` creates or
updates that block; without it an existing block of that name is used, so the block can also be made
(or pointed at Slack, Teams, e-mail...) in the Prefect UI under Blocks. Automations are replaced by
name, so running this twice gives each alert once.

| alert | event | emitted by |
| --- | --- | --- |
| drift detected | `mlops.drift.detected` | the monitoring flow |
| challenger rejected by the gate | `mlops.gate.rejected` | the training flow |
| model promoted | `mlops.model.promoted` | the training flow (gate passed) and the promote flow |
| model rolled back | `mlops.model.rolled_back` | the rollback flow |
| flow run failed or crashed | any `prefect.flow-run.*` whose state type is FAILED or CRASHED | Prefect |

`--crash-detection` also installs an automation that marks a flow run Crashed when its heartbeats
stop (a worker or machine died mid-run), as Prefect documents for self-hosted servers; flow runs send
heartbeats every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (`mlops up` sets 30 for its worker).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from mlops.core import events

BLOCK_NAME = "mlops-alerts"
PREFIX = "mlops alert: "
CRASH_DETECTION = "mlops: mark unresponsive flow runs Crashed"
# Longer than 3 heartbeats at Prefect's default frequency (180 s), so a run started outside the stack
# with default settings is never marked Crashed while it is alive.
CRASH_AFTER_SECONDS = 600


# Prefect names a flow run's state-change event after the state's *name* (`prefect.flow-run.Promoted`), so a
# run that ends in a named state (Promoted, Rejected, Checked ...) never emits `prefect.flow-run.Completed`;
# the state's *type* is on the event's resource as `prefect.state-type`. Automations about how runs end match
# every flow-run event and key on that type, so named states count as what they are.
FLOW_RUN_EVENTS = "prefect.flow-run.*"
STATE_TYPE = "prefect.state-type"
FAILED_TYPES = ["FAILED", "CRASHED"]


@dataclass(frozen=True)
class Alert:
    name: str
    expect: tuple[str, ...]
    match: dict[str, str | list[str]]
    subject: str
    body: str


_ID = "\n\nevent {{ event.event }} {{ event.id }} at {{ event.occurred }}"
ALERTS: tuple[Alert, ...] = (
    Alert(
        "drift detected",
        (events.DRIFT_DETECTED,),
        {"prefect.resource.id": "mlops.*"},
        "[mlops] drift detected: {{ event.resource.name or event.resource.id }}",
        "Monitoring found drift on {{ event.resource.id }}.\n{{ event.payload | tojson }}" + _ID,
    ),
    Alert(
        "challenger rejected",
        (events.GATE_REJECTED,),
        {"prefect.resource.id": "mlops.model.*"},
        "[mlops] gate rejected {{ event.resource.name }} v{{ event.payload.version }}",
        "The gate rejected version {{ event.payload.version }} of {{ event.resource.name }}; the champion is "
        "unchanged.\nReasons:\n{% for r in event.payload.reasons or [] %}- {{ r }}\n{% endfor %}"
        "By: {{ event.payload.by }}" + _ID,
    ),
    Alert(
        "model promoted",
        (events.MODEL_PROMOTED,),
        {"prefect.resource.id": "mlops.model.*"},
        "[mlops] {{ event.resource.name }}: champion v{{ event.payload.from_version or '-' }} -> "
        "v{{ event.payload.to_version }}",
        "Version {{ event.payload.to_version }} of {{ event.resource.name }} is now champion (was "
        "{{ event.payload.from_version or 'none' }}).\nReason: {{ event.payload.reason }}\nBy: "
        "{{ event.payload.by }}" + _ID,
    ),
    Alert(
        "model rolled back",
        (events.MODEL_ROLLED_BACK,),
        {"prefect.resource.id": "mlops.model.*"},
        "[mlops] {{ event.resource.name }} rolled back: champion v{{ event.payload.from_version }} -> "
        "v{{ event.payload.to_version }}",
        "{{ event.resource.name }} was rolled back from version {{ event.payload.from_version }} to "
        "{{ event.payload.to_version }}.\nReason: {{ event.payload.reason }}\nBy: {{ event.payload.by }}" + _ID,
    ),
    Alert(
        "flow run failed",
        (FLOW_RUN_EVENTS,),
        {"prefect.resource.id": "prefect.flow-run.*", STATE_TYPE: FAILED_TYPES},  # a named failed state too
        "[mlops] flow run {{ event.resource.name }} {{ event.resource['prefect.state-name'] }}",
        "Flow run {{ event.resource.name }} ended {{ event.resource['prefect.state-name'] }}: "
        "{{ event.resource['prefect.state-message'] }}" + _ID,
    ),
)


def _automation(alert: Alert, block_id: UUID) -> Any:
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=PREFIX + alert.name,
        description=f"Notify through block {BLOCK_NAME!r} on {', '.join(alert.expect)}"
                    + (f" with state type {' or '.join(alert.match[STATE_TYPE])}." if STATE_TYPE in alert.match else "."),
        enabled=True,
        trigger=EventTrigger(expect=set(alert.expect), match=alert.match, posture=Posture.Reactive, threshold=1,
                             within=timedelta(0)),
        actions=[SendNotification(block_document_id=block_id, subject=alert.subject, body=alert.body)],
    )


def crash_detection_automation() -> Any:
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=CRASH_DETECTION,
        description="A flow run that stops sending heartbeats (its worker or machine died) is marked Crashed, "
                    "which also frees its deployment's concurrency slot.",
        enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            # any later event of the run: a heartbeat, or a state change whatever the state's name (a run that
            # ends Promoted or Rejected emits `prefect.flow-run.Promoted`, never `...Completed`)
            expect={FLOW_RUN_EVENTS},
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=CRASH_AFTER_SECONDS),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {CRASH_AFTER_SECONDS} s: its process is gone")],
    )


async def _replace(client: Any, automation: Any) -> UUID:
    for old in await client.read_automations_by_name(automation.name):
        await client.delete_automation(old.id)
    return await client.create_automation(automation)


async def _block_id(url: str | None, block_name: str) -> UUID | None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    if url:
        block = CustomWebhookNotificationBlock(
            name="mlops",
            url=url,
            method="POST",
            json_data={"subject": "{{subject}}", "body": "{{body}}", "source": "{{name}}"},
            timeout=10,
        )
        return await block.save(block_name, overwrite=True)
    try:
        block = await CustomWebhookNotificationBlock.aload(block_name)
    except ValueError:
        return None
    return block._block_document_id


async def configure(url: str | None = None, block_name: str = BLOCK_NAME, crash_detection: bool = False,
                    remove: bool = False) -> list[str]:
    """Create or replace the alert automations (and crash detection); returns one line per change."""
    from prefect.client.orchestration import get_client

    notes: list[str] = []
    async with get_client() as client:
        if remove:
            for alert in ALERTS:
                for old in await client.read_automations_by_name(PREFIX + alert.name):
                    await client.delete_automation(old.id)
            return ["alerts removed"]
        if crash_detection:
            await _replace(client, crash_detection_automation())
            notes.append(f"crash detection: on (no heartbeat for {CRASH_AFTER_SECONDS} s -> Crashed)")
        block_id = await _block_id(url, block_name)
        if block_id is None:
            notes.append(f"alerts: off (no notification block {block_name!r}; set MLOPS_ALERT_WEBHOOK_URL or "
                         f"run `python -m mlops.stack.alerts --url URL`)")
            return notes
        for alert in ALERTS:
            await _replace(client, _automation(alert, block_id))
        target = _where(url) if url else f"block {block_name!r}"
        notes.append(f"alerts: {', '.join(a.name for a in ALERTS)} -> {target}")
    return notes


def _where(url: str) -> str:
    """Scheme, host and port of a webhook URL: its path and query often hold a token, never printed."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops.stack.alerts",
                                     description="Create or replace the mlops alert automations on the Prefect "
                                                 "server at PREFECT_API_URL.")
    parser.add_argument("--url", help="webhook URL to POST alerts to (creates/updates the notification block; "
                                      "default $MLOPS_ALERT_WEBHOOK_URL, which keeps it off the command line)")
    parser.add_argument("--block", default=BLOCK_NAME, help=f"notification block name (default {BLOCK_NAME})")
    parser.add_argument("--crash-detection", action="store_true",
                        help="also mark flow runs Crashed when their heartbeats stop")
    parser.add_argument("--remove", action="store_true", help="delete the alert automations")
    args = parser.parse_args(argv)
    from mlops.core.settings import get_settings, quiet_libraries

    quiet_libraries()
    stored = get_settings().alert_webhook_url
    url = args.url or (stored.get_secret_value() if stored else None)
    try:
        for line in asyncio.run(configure(url, args.block, args.crash_detection, args.remove)):
            print(line)
    except Exception as exc:  # noqa: BLE001 - one line for the operator; the server log has the rest
        print(f"error: could not configure alerts on the Prefect server: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
