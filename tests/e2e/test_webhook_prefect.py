"""Webhook bridge against a real Prefect server on loopback: a signed delivery becomes exactly one
Prefect event and, through a deployment trigger, exactly one Scheduled flow run; unsigned, stale
and replayed deliveries produce neither."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
import orjson
import pytest

from mlops.webhooks.app import event_id_for
from mlops.webhooks.signing import signed_headers
from tests.support.webhooks import (
    bridge_process,
    create_triggered_deployment,
    events,
    flow_runs,
    prefect_server,
    tail,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SECRET = "e2e-" + uuid.uuid4().hex
SETTLE_SECONDS = 3.0  # a triggered run appears in ~0.1 s, or ~2.3 s when Prefect retries a SQLite write; wait past both


@dataclass
class Stack:
    api: str
    bridge: str
    deployment_id: UUID
    logs: list[Path]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("webhook-e2e")
    with prefect_server(work) as server:
        deployment_id = create_triggered_deployment(
            server.url,
            flow_name="webhook-e2e",
            deployment_name="on-data-arrived",
            expect="mlops.data.arrived",
            match={"prefect.resource.id": "mlops.dataset.*"},
            parameters={"source_path": "{{ event.payload.path }}", "reason": "{{ event.payload.reason }}"},
        )
        with bridge_process(work, server.url, {"MLOPS_WEBHOOK_DATA_VENDOR_SECRET": SECRET}) as bridge:
            yield Stack(server.url, bridge.url, deployment_id, [server.log, bridge.log])


def deliver(
    stack: Stack, payload: dict[str, object], *, delivery: str, timestamp: int | None = None, signed: bool = True
) -> httpx.Response:
    body = orjson.dumps(payload)
    headers = signed_headers(SECRET, body, delivery_id=delivery, timestamp=timestamp)
    if not signed:
        headers.pop("X-Mlops-Signature")
    return httpx.post(f"{stack.bridge}/hooks/data-vendor", content=body, headers=headers, timeout=30)


def dataset_events(stack: Stack, dataset: str) -> list[dict[str, object]]:
    return events(
        stack.api,
        {"event": {"name": ["mlops.data.arrived"]}, "resource": {"id": [f"mlops.dataset.{dataset}"]}},
    )


def test_signed_delivery_lands_once_and_starts_one_run(stack: Stack) -> None:
    dataset = f"e2e-{uuid.uuid4().hex[:8]}"
    path = f"/data/incoming/{dataset}/part-0001.parquet"
    delivery = f"vendor-{uuid.uuid4()}"
    runs_before = len(flow_runs(stack.api, stack.deployment_id))

    resp = deliver(stack, {"dataset": dataset, "path": path, "rows": 42}, delivery=delivery)
    assert resp.status_code == 202, resp.text
    event_id = resp.json()["event_id"]
    assert event_id == str(event_id_for("data-vendor", delivery))

    landed = wait_for(lambda: events(stack.api, {"id": {"id": [event_id]}}), timeout=20)
    assert len(landed) == 1, tail(stack.logs[0])
    assert landed[0]["event"] == "mlops.data.arrived"
    assert landed[0]["resource"]["prefect.resource.id"] == f"mlops.dataset.{dataset}"
    assert landed[0]["payload"]["path"] == path

    runs = wait_for(lambda: flow_runs(stack.api, stack.deployment_id)[runs_before:], timeout=20)
    assert len(runs) == 1, tail(stack.logs[0])
    assert runs[0]["state"]["type"] == "SCHEDULED"
    assert runs[0]["parameters"]["source_path"] == path

    # The sender retries the same delivery (freshly signed): refused, and nothing new anywhere.
    again = deliver(stack, {"dataset": dataset, "path": path, "rows": 42}, delivery=delivery)
    assert again.status_code == 409, again.text
    time.sleep(SETTLE_SECONDS)
    assert [e["id"] for e in dataset_events(stack, dataset)] == [event_id]
    assert len(flow_runs(stack.api, stack.deployment_id)) == runs_before + 1


def test_unsigned_stale_and_replayed_deliveries_start_nothing(stack: Stack) -> None:
    accepted_dataset = f"e2e-{uuid.uuid4().hex[:8]}"
    refused_dataset = f"e2e-refused-{uuid.uuid4().hex[:8]}"
    accepted = {"dataset": accepted_dataset, "path": f"/data/{accepted_dataset}.parquet"}
    refused = {"dataset": refused_dataset, "path": f"/data/{refused_dataset}.parquet"}

    def started(path: object) -> list[dict[str, object]]:
        return [r for r in flow_runs(stack.api, stack.deployment_id) if r["parameters"].get("source_path") == path]

    first = deliver(stack, accepted, delivery="replayed-delivery")
    assert first.status_code == 202, first.text
    assert len(wait_for(lambda: started(accepted["path"]), timeout=20)) == 1, tail(stack.logs[0])
    runs_before = len(flow_runs(stack.api, stack.deployment_id))

    assert deliver(stack, refused, delivery=str(uuid.uuid4()), signed=False).status_code == 401
    assert deliver(stack, refused, delivery=str(uuid.uuid4()), timestamp=int(time.time()) - 600).status_code == 401
    assert deliver(stack, accepted, delivery="replayed-delivery").status_code == 409
    assert deliver(stack, refused, delivery="replayed-delivery").status_code == 409

    time.sleep(SETTLE_SECONDS)
    assert dataset_events(stack, refused_dataset) == []
    assert len(dataset_events(stack, accepted_dataset)) == 1
    assert len(flow_runs(stack.api, stack.deployment_id)) == runs_before
    assert started(refused["path"]) == [] and len(started(accepted["path"])) == 1
