"""Prefect events the system emits, with a resource id and a payload that says why.

mlops.data.arrived, mlops.labels.arrived (from the webhook bridge), mlops.retrain.requested
(monitoring), mlops.model.promoted, mlops.model.rolled_back, mlops.gate.rejected (training and
promotion flows). Alerts and deployment triggers match on these names.
"""

from __future__ import annotations

from typing import Any

MODEL_PROMOTED = "mlops.model.promoted"
MODEL_ROLLED_BACK = "mlops.model.rolled_back"
GATE_REJECTED = "mlops.gate.rejected"
RETRAIN_REQUESTED = "mlops.retrain.requested"
DRIFT_DETECTED = "mlops.drift.detected"
DATA_ARRIVED = "mlops.data.arrived"
LABELS_ARRIVED = "mlops.labels.arrived"


def model_resource(model_name: str) -> dict[str, str]:
    return {"prefect.resource.id": f"mlops.model.{model_name}", "prefect.resource.name": model_name}


def emit(event: str, model_name: str, payload: dict[str, Any]) -> str | None:
    """Emit an event about a model; returns the event id (None when events are off)."""
    from prefect.events import emit_event

    ev = emit_event(event=event, resource=model_resource(model_name), payload=payload)
    return str(ev.id) if ev else None
