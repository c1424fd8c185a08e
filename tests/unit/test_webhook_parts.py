"""The webhook bridge's parts outside its HTTP app: the event rules agree with Prefect's server model, the
shipped and bad configs, and the delivery store (seen ids, the outbox's leases)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlops.core.errors import ConfigError
from mlops.webhooks.app import create_app
from mlops.webhooks.config import load_webhook_config
from mlops.webhooks.sinks import RecordingSink
from mlops.webhooks.store import DeliveryStore

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "webhooks.yaml"

# ---- the bridge's event rules match Prefect's ------------------------------------------------

OK_RESOURCE = {"prefect.resource.id": "mlops.dataset.churn"}
PARITY_CASES = {
    "minimal": {"event": "mlops.data.arrived", "resource": OK_RESOURCE},
    "full": {
        "event": "mlops.data.arrived",
        "resource": {**OK_RESOURCE, "prefect.resource.name": "churn"},
        "payload": {"nested": {"rows": [1, 2]}, "ok": True},
        "related": [{"prefect.resource.id": "mlops.model.churn", "prefect.resource.role": "model"}],
    },
    "no resource id": {"event": "e.x", "resource": {"name": "x"}},
    "empty resource id": {"event": "e.x", "resource": {"prefect.resource.id": ""}},
    "label not a string": {"event": "e.x", "resource": {**OK_RESOURCE, "rows": 5}},
    "resource not an object": {"event": "e.x", "resource": "mlops.dataset.churn"},
    "related without role": {"event": "e.x", "resource": OK_RESOURCE, "related": [OK_RESOURCE]},
    "related not a list": {"event": "e.x", "resource": OK_RESOURCE, "related": OK_RESOURCE},
    "payload not an object": {"event": "e.x", "resource": OK_RESOURCE, "payload": [1]},
    "event not a string": {"event": 5, "resource": OK_RESOURCE},
    "event name too long": {"event": "e" * 1025, "resource": OK_RESOURCE},
    "too many labels": {"event": "e.x", "resource": {**OK_RESOURCE, **{f"l{i}": "v" for i in range(500)}}},
    "too many related": {
        "event": "e.x",
        "resource": OK_RESOURCE,
        "related": [{"prefect.resource.id": f"r{i}", "prefect.resource.role": "r"} for i in range(100)],
    },
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_event_rules_agree_with_prefects_server_model(case: str) -> None:
    from prefect.server.events.schemas.events import Event as ServerEvent
    from pydantic import ValidationError

    from mlops.webhooks.templating import TemplateFailure, build_event

    rendered = PARITY_CASES[case]
    event_id, occurred = uuid.uuid4(), datetime.now(UTC)
    try:
        built = build_event(rendered, event_id=event_id, occurred=occurred, source="s", delivery_id="d")
    except TemplateFailure:
        built = None
    # What Prefect's server would make of the same output (with the bridge's webhook resource added).
    related = rendered.get("related", [])
    candidate = {
        **rendered,
        "related": [*related, {"prefect.resource.id": "w", "prefect.resource.role": "webhook"}]
        if isinstance(related, list)
        else related,
        "id": str(event_id),
        "occurred": occurred.isoformat(),
    }
    try:
        ServerEvent.model_validate(candidate)
        prefect_accepts = True
    except ValidationError:
        prefect_accepts = False
    assert (built is not None) == prefect_accepts
    if built is not None:
        parsed = ServerEvent.model_validate(built)
        assert parsed.id == event_id and parsed.event == rendered["event"]


def test_events_over_prefects_size_limit_are_refused() -> None:
    from mlops.webhooks.templating import EventLimits, TemplateFailure, build_event

    rendered = {"event": "e.x", "resource": OK_RESOURCE, "payload": {"blob": "x" * 2000}}
    with pytest.raises(TemplateFailure, match="Prefect drops events over 1000 bytes"):
        build_event(
            rendered,
            event_id=uuid.uuid4(),
            occurred=datetime.now(UTC),
            source="s",
            delivery_id="d",
            limits=EventLimits(max_size_bytes=1000),
        )


# ---- config and store --------------------------------------------------------------------------


def test_shipped_config_maps_the_system_events() -> None:
    cfg = load_webhook_config(CONFIG)
    assert {"data-vendor", "labels"} <= set(cfg.sources)
    assert cfg.max_body_bytes == 1024 * 1024 and cfg.timestamp_tolerance_seconds == 300
    for source in cfg.sources.values():
        assert source.secret_env.startswith("MLOPS_WEBHOOK_")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("sources:\n  Bad Name:\n    secret_env: X\n    template: '{}'\n", "source name"),
        ("sources:\n  a:\n    template: '{}'\n", "sources.a.secret_env"),
        ("sources:\n  a:\n    secret_env: X\n    template: '{}'\n    secret: inline\n", "sources.a.secret"),
        ("- just a list\n", "top level"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, words: str) -> None:
    cfg = tmp_path / "webhooks.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_webhook_config(cfg)


def test_template_syntax_error_fails_at_start(tmp_path: Path) -> None:
    cfg = tmp_path / "webhooks.yaml"
    cfg.write_text("sources:\n  a:\n    secret_env: X\n    template: '{{ body.x '\n")
    with pytest.raises(ConfigError, match="source 'a': template syntax error"):
        create_app(cfg, state_dir=tmp_path, sink=RecordingSink(), environ={"X": "k"})


def test_store_accepts_atomically_remembers_and_expires(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite3"
    store = DeliveryStore(path)
    assert store.accept({"a": 100, "b": 100}, "e1", b"{}", now=1000) is None
    assert store.accept({"c": 100, "a": 100}, "e2", b"{}", now=1001) == "a"
    assert not store.seen("c", now=1001), "a refused delivery takes nothing"
    assert store.outbox_stats(now=1001)["queued"] == 1, "and queues nothing"
    store.close()

    reopened = DeliveryStore(path)
    assert reopened.accept({"a": 100}, "e3", b"{}", now=1050) == "a", "seen ids survive a restart"
    assert reopened.accept({"a": 100}, "e4", b"{}", now=1101) is None, "and expire after their retention"


def test_outbox_leases_rows_to_one_forwarder_at_a_time(tmp_path: Path) -> None:
    store = DeliveryStore(tmp_path / "d.sqlite3")
    for i in range(5):
        store.accept({f"k{i}": 100}, f"e{i}", b"{}", now=1000)
    first = store.lease(3, lease_seconds=30, now=1000)
    assert [seq for seq, _ in first] == [1, 2, 3]
    assert [seq for seq, _ in store.lease(10, lease_seconds=30, now=1001)] == [4, 5], "leased rows are skipped"
    store.sent([1, 2])
    store.retry_later([3], delay=5, error="boom", now=1002)
    assert store.lease(10, lease_seconds=30, now=1003) == []
    assert [seq for seq, _ in store.lease(10, lease_seconds=30, now=1008)] == [3], "after its retry delay"
    assert [seq for seq, _ in store.lease(10, lease_seconds=30, now=1032)] == [4, 5], "an expired lease returns"
