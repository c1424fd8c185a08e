"""The stack's automations judge how a flow run ended by the state's type, not its name (issue 21): a run that
ends in a named terminal state (Promoted, Rejected, Checked ...) emits `prefect.flow-run.<name>`, never
`prefect.flow-run.Completed`, so crash detection must count it and the failure alert must see named failures.

Checked with the Prefect server's own trigger logic on the events its server emits (their shape is
`prefect.server.models.events.flow_run_state_change_event`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from mlops.stack import alerts

RUN = f"prefect.flow-run.{uuid4()}"


def server_trigger(automation: Any) -> Any:
    """The automation as the Prefect server reads it (what `create_automation` sends)."""
    from prefect.server.events.schemas.automations import AutomationCore

    return AutomationCore.model_validate(automation.model_dump(mode="json")).trigger


def state_event(name: str, state_type: str) -> Any:
    from prefect.server.events.schemas.events import ReceivedEvent

    return ReceivedEvent(occurred=datetime.now(UTC), event=f"prefect.flow-run.{name}", id=uuid4(),
                         resource={"prefect.resource.id": RUN, "prefect.resource.name": "train-churn-cli",
                                   "prefect.state-name": name, "prefect.state-type": state_type,
                                   "prefect.state-message": ""})


def heartbeat() -> Any:
    from prefect.server.events.schemas.events import ReceivedEvent

    return ReceivedEvent(occurred=datetime.now(UTC), event="prefect.flow-run.heartbeat", id=uuid4(),
                         resource={"prefect.resource.id": RUN, "prefect.resource.name": "train-churn-cli"})


def counts(trigger: Any, event: Any) -> bool:
    """Whether the trigger counts `event` toward its threshold (what Prefect's reactive and proactive
    evaluation both ask)."""
    return trigger.covers(event) and trigger.expects(event.event)


@pytest.mark.parametrize(("name", "state_type"), [
    ("Completed", "COMPLETED"), ("Promoted", "COMPLETED"), ("Rejected", "COMPLETED"), ("Checked", "COMPLETED"),
    ("Rolled back", "COMPLETED"), ("Failed", "FAILED"), ("Refused", "FAILED"), ("Cancelled", "CANCELLED"),
    ("Crashed", "CRASHED"),
])
def test_crash_detection_counts_every_final_state_whatever_its_name(name: str, state_type: str) -> None:
    """A heartbeat opens the window; the run's final state, whatever its name, closes it, so the automation never
    tries to mark a finished run Crashed ("already in terminal state COMPLETED")."""
    trigger = server_trigger(alerts.crash_detection_automation())
    assert trigger.posture == "Proactive" and trigger.threshold == 1
    assert trigger.starts_after(heartbeat().event) and counts(trigger, heartbeat())
    assert counts(trigger, state_event(name, state_type))
    assert not trigger.starts_after(state_event(name, state_type).event)  # a finished run opens no new window


def test_the_failure_alert_keys_on_the_state_type() -> None:
    alert = next(a for a in alerts.ALERTS if a.name == "flow run failed")
    trigger = server_trigger(alerts._automation(alert, uuid4()))
    assert counts(trigger, state_event("Failed", "FAILED")) and counts(trigger, state_event("Crashed", "CRASHED"))
    assert counts(trigger, state_event("Refused", "FAILED"))  # a named failed state alerts too
    for name in ("Completed", "Promoted", "Rejected", "Checked", "Running", "Cancelled"):
        state_type = {"Running": "RUNNING", "Cancelled": "CANCELLED"}.get(name, "COMPLETED")
        assert not counts(trigger, state_event(name, state_type)), name
    assert not counts(trigger, heartbeat())
