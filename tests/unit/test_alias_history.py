"""Where the alias history lives (issue 13): on the versions, not on the registered model, whose tag list
stays the same however often `champion` moves; a move whose versions are gone is kept on the model and read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops.core.errors import RegistryError
from mlops.registry import versions as registry
from mlops.registry.history import ALIAS_MOVE_PREFIX, sorted_history
from tests.support.model_server import stub_version

NAME = "historied"
PASSED = {"gate.reasons": json.dumps(["PASS threshold"])}


@pytest.fixture
def model(state_dir: Path) -> None:
    """Versions 1..3, all passed their gate (sealed), no alias yet."""
    registry.client().create_registered_model(NAME, tags={"team": "risk"})
    for _ in range(3):
        stub_version(NAME, state_dir, True, PASSED)


def model_tags() -> dict[str, str]:
    return dict(registry.client().get_registered_model(NAME).tags)


def legacy(at_ms: int, alias: str, to: str | None, frm: str | None, reason: str) -> tuple[str, str]:
    """A move kept as a registered-model tag (its versions are gone)."""
    return (f"{ALIAS_MOVE_PREFIX}{at_ms}.{alias}",
            json.dumps({"alias": alias, "from_version": frm, "to_version": to, "by": "old mlops", "reason": reason,
                        "at": f"2025-01-01T00:00:0{at_ms % 10}+00:00"}))


def test_promotions_and_rollbacks_leave_the_model_tags_alone(model: None) -> None:
    before = model_tags()
    registry.promote(NAME, "1", by="t", reason="first")
    registry.promote(NAME, "2", by="t", reason="second")
    registry.promote(NAME, "3", by="t", reason="third")
    registry.rollback(NAME, by="t", reason="back")
    assert model_tags() == before == {"team": "risk"}
    moves = [(m["alias"], m["from_version"], m["to_version"]) for m in registry.alias_history(NAME)]
    assert moves == [("champion", None, "1"), ("previous", None, "1"), ("champion", "1", "2"), ("previous", "1", "2"),
                     ("champion", "2", "3"), ("champion", "3", "2"), ("previous", "2", "1")]
    v2_moves = [k for k in registry.client().get_model_version(NAME, "2").tags if k.startswith(ALIAS_MOVE_PREFIX)]
    assert len(v2_moves) == 3  # champion and previous moved to it, then champion back to it


def test_a_move_whose_versions_are_gone_stays_on_the_model(model: None) -> None:
    c = registry.client()
    key, value = legacy(1000, "champion", "9", "8", "long ago")
    c.set_registered_model_tag(NAME, key, value)
    registry.promote(NAME, "1", by="t", reason="now")
    assert key in model_tags() and registry.alias_history(NAME)[0]["reason"] == "long ago"


def test_a_failed_alias_move_leaves_no_entry(model: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    registry.promote(NAME, "1", by="t", reason="first")
    before = registry.alias_history(NAME)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("store down")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", broken)
    with pytest.raises(RuntimeError):
        registry.move_alias(NAME, "champion", "2", by="t", reason="fails")
    assert registry.alias_history(NAME) == before


def test_history_is_ordered_by_time_then_by_when_within_a_millisecond() -> None:
    a = {f"{ALIAS_MOVE_PREFIX}5.champion": json.dumps({"alias": "champion", "at": "2025-01-01T00:00:00.000500+00:00"})}
    b = {f"{ALIAS_MOVE_PREFIX}5.previous": json.dumps({"alias": "previous", "at": "2025-01-01T00:00:00.000100+00:00"}),
         f"{ALIAS_MOVE_PREFIX}4.champion": json.dumps({"alias": "champion", "at": "2025-01-01T00:00:00+00:00"}),
         f"{ALIAS_MOVE_PREFIX}x.champion": "not a move", "other": "{}"}
    assert [(m["alias"], m["at"][-11:-6]) for m in sorted_history([a, b])] == [
        ("champion", "00:00"), ("previous", "00100"), ("champion", "00500")]


def test_a_refused_promotion_records_nothing(model: None) -> None:
    registry.promote(NAME, "1", by="t", reason="first")
    with pytest.raises(RegistryError):
        registry.promote(NAME, "1", by="t", reason="again")
    assert len(registry.alias_history(NAME)) == 1 and model_tags() == {"team": "risk"}
