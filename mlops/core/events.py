"""Prefect events the system emits, with a resource id and a payload that says why.

mlops.data.arrived, mlops.labels.arrived (from the webhook bridge), mlops.retrain.requested,
mlops.drift.detected, mlops.monitor.decision (monitoring), mlops.model.promoted, mlops.model.rolled_back, mlops.gate.rejected (training and
promotion flows). Alerts and deployment triggers match on these names.
"""

from __future__ import annotations

import json
from typing import Any

MODEL_PROMOTED = "mlops.model.promoted"
MODEL_ROLLED_BACK = "mlops.model.rolled_back"
GATE_REJECTED = "mlops.gate.rejected"
RETRAIN_REQUESTED = "mlops.retrain.requested"
DRIFT_DETECTED = "mlops.drift.detected"
MONITOR_DECISION = "mlops.monitor.decision"
DATA_ARRIVED = "mlops.data.arrived"
LABELS_ARRIVED = "mlops.labels.arrived"


def model_resource(model_name: str) -> dict[str, str]:
    return {"prefect.resource.id": f"mlops.model.{model_name}", "prefect.resource.name": model_name}


def version_resource(model_name: str, version: str) -> dict[str, str]:
    """A model version as a related resource of an event about its model."""
    return {"prefect.resource.id": f"mlops.model.{model_name}.version.{version}",
            "prefect.resource.role": "model-version", "prefect.resource.name": f"{model_name} v{version}"}


def emit(event: str, model_name: str, payload: dict[str, Any], version: str | None = None) -> str | None:
    """Emit an event about a model (and, given `version`, that version as a related resource); the payload
    is made JSON-safe (dates and paths as text). Returns the event id (None when events are off)."""
    from prefect.events import emit_event

    related = [version_resource(model_name, version)] if version is not None else None
    body = json.loads(json.dumps(payload, default=str))
    ev = emit_event(event=event, resource=model_resource(model_name), related=related, payload=body)
    return str(ev.id) if ev else None
