"""The promotion guard in the registry (issue 12): a gate-failed version is not promoted or rolled back
to without force and a reason, which are recorded on the version and in the alias history; an alias
moved outside mlops (MLflow's API directly) is found and recorded as such, and never becomes the
`previous` a rollback returns to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlops.core.errors import RegistryError
from mlops.registry import verdict
from mlops.registry import versions as registry
from tests.support.model_server import stub_version

NAME = "guarded"
FAILED = {"gate.failures": "threshold roc_auc 0.71 < 0.99"}
PASSED: dict[str, str] = {}


@pytest.fixture
def model(state_dir: Path) -> dict[str, str]:
    """v1 passed its gate and is champion, v2 failed its gate, v3 passed, each verdict sealed as the training
    flow seals it (versions whose files are a small folder: the guard reads tags, aliases and file digests)."""
    for v, (tags, passed) in {"1": (PASSED, True), "2": (FAILED, False), "3": (PASSED, True)}.items():
        assert stub_version(NAME, state_dir, passed, tags) == v
    registry.promote(NAME, "1", by="test", reason="first")
    return {"passed": "1", "failed": "2", "next": "3"}


def champion() -> str | None:
    return registry.champion_version(NAME)


def alias(name: str) -> str | None:
    mv = registry.get_version_by_alias(NAME, name)
    return str(mv.version) if mv else None


def tags(version: str) -> dict[str, str]:
    return dict(registry.client().get_model_version(NAME, version).tags)


def sealed(version: str, passed: bool, digest: str = "sha256:" + "ab" * 32) -> dict[str, str]:
    return (PASSED if passed else FAILED) | verdict.seal_tags(NAME, version, "", passed, digest)


def test_serving_refusal_reads_the_verdict_and_the_override(state_dir: Path) -> None:
    assert registry.serving_refusal(NAME, "1", sealed("1", True)) is None
    assert "carries no gate verdict" in str(registry.serving_refusal(NAME, "1", {}))
    why = registry.serving_refusal(NAME, "2", sealed("2", False))
    assert why and "version 2 failed its promotion gate" in why and "0.71 < 0.99" in why
    override = verdict.sealed_override(NAME, "2", "", {"by": "me", "reason": "hotfix", "at": "now"}, "sha256:x")
    assert registry.serving_refusal(NAME, "2", sealed("2", False) | override) is None
    for bad in ("not json", json.dumps({"by": "me"}), json.dumps({"reason": "  "}), json.dumps(["x"])):
        resealed = {verdict.OVERRIDE_TAG: bad,
                    verdict.OVERRIDE_SIGNATURE_TAG: verdict.override_signature(verdict.gate_key() or b"", NAME, "2", bad)}
        assert registry.serving_refusal(NAME, "2", sealed("2", False) | resealed), bad


def test_a_verdict_or_override_written_without_the_key_is_refused(state_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """What a writer to MLflow without the gate key can do to tags, and what the guard answers."""
    failed, passed = sealed("2", False), sealed("1", True)
    unsigned = {"gate.passed": "true"} | PASSED
    assert "version 2's gate verdict is not signed" in str(registry.serving_refusal(NAME, "2", unsigned))
    flipped = failed | {"gate.passed": "true"}
    assert "signature is invalid" in str(registry.serving_refusal(NAME, "2", flipped))
    copied = failed | {k: passed[k] for k in ("gate.passed", "gate.digest", "gate.signature")}  # v1's seal on v2
    assert "signature is invalid" in str(registry.serving_refusal(NAME, "2", copied))
    other_files = passed | {"gate.digest": "sha256:" + "cd" * 32}
    assert "signature is invalid" in str(registry.serving_refusal(NAME, "1", other_files))
    forged = {verdict.OVERRIDE_TAG: json.dumps({"by": "me", "reason": "trust me", "at": "now", "digest": "sha256:x"})}
    why = str(registry.serving_refusal(NAME, "2", failed | forged))
    assert "failed its promotion gate" in why and "its override record is not signed" in why
    forged[verdict.OVERRIDE_SIGNATURE_TAG] = "v1:" + "0" * 64
    assert "override record is badly signed" in str(registry.serving_refusal(NAME, "2", failed | forged))
    key = verdict.key_path()
    assert key.stat().st_mode & 0o777 == 0o600
    key.rename(key.with_name("elsewhere"))  # a process without the key cannot tell, so it serves nothing
    assert "has no gate key" in str(registry.serving_refusal(NAME, "1", passed))
    monkeypatch.setenv(verdict.KEY_ENV, "another stack's key")
    assert "signature is invalid" in str(registry.serving_refusal(NAME, "1", passed))


def test_promote_refuses_a_gate_failed_version_without_force(model: dict[str, str]) -> None:
    before = registry.alias_history(NAME)
    with pytest.raises(RegistryError) as err:
        registry.promote(NAME, model["failed"], by="test", reason="manual promotion")
    msg = str(err.value)
    assert "version 2 failed its promotion gate" in msg and "--force --reason" in msg and "\n" not in msg
    assert champion() == "1" and registry.OVERRIDE_TAG not in tags("2")
    assert registry.alias_history(NAME) == before


def test_a_forced_promotion_needs_a_reason_and_is_recorded_on_the_version_and_in_the_history(
        model: dict[str, str]) -> None:
    with pytest.raises(RegistryError, match="needs a reason"):
        registry.promote(NAME, "2", by="test", reason="  ", force=True)
    assert champion() == "1"
    entry = registry.promote(NAME, "2", by="alice", reason="hotfix for the billing outage", force=True)
    assert champion() == "2" and alias("previous") == "1"
    override = json.loads(tags("2")[registry.OVERRIDE_TAG])
    assert override["by"] == "alice" and override["reason"] == "hotfix for the billing outage"
    assert override["gate_failures"] == ["threshold roc_auc 0.71 < 0.99"]
    last = registry.alias_history(NAME)[-1]
    assert last == entry and last["forced"] is True and last["to_version"] == "2" and last["by"] == "alice"
    assert registry.AliasMove.of(entry).forced
    # a version that passed is promoted as before, force or not, and never marked forced
    assert "forced" not in registry.promote(NAME, "3", by="test", reason="fine", force=True)


def test_an_alias_moved_outside_mlops_is_found_recorded_once_and_shown_by_status(model: dict[str, str]) -> None:
    registry.client().set_registered_model_alias(NAME, "champion", "2")  # as MLflow's REST API would
    st = registry.status(NAME)
    assert [(m["alias"], m["from_version"], m["to_version"], m["outside"]) for m in st["outside_moves"]] == [
        ("champion", "1", "2", True)]
    last = st["history"][-1]
    assert last["outside"] is True and last["by"] == registry.OUTSIDE_BY and "moved outside mlops" in last["reason"]
    assert st["champion"]["refused"] and "failed its promotion gate" in st["champion"]["refused"]
    again = registry.status(NAME)
    assert again["outside_moves"] == [] and len(again["history"]) == len(st["history"])


def test_a_move_in_flight_is_not_taken_for_an_outside_one(model: dict[str, str]) -> None:
    registry.record_alias_move(NAME, "champion", "3", "1", "test", "being promoted")  # alias not moved yet
    assert registry.reconcile_aliases(NAME, "test") == []


def test_after_an_outside_move_the_next_promotion_keeps_the_last_servable_champion_as_previous(
        model: dict[str, str]) -> None:
    registry.client().set_registered_model_alias(NAME, "champion", "2")  # the rejected model, outside mlops
    registry.promote(NAME, "3", by="test", reason="a good retrain")
    assert champion() == "3" and alias("previous") == "1"  # not the rejected v2
    history = registry.alias_history(NAME)
    assert any(m.get("outside") and m["to_version"] == "2" for m in history)
    registry.rollback(NAME, by="test", reason="back")
    assert champion() == "1"


def test_after_an_outside_move_previous_never_falls_back_to_a_force_promoted_version(
        model: dict[str, str], state_dir: Path) -> None:
    """v2 was force-promoted over its failed gate, then `champion` was moved outside mlops to a rejected v4: the
    next promotion's `previous` is the last champion whose gate passed (v1), not the forced v2."""
    assert stub_version(NAME, state_dir, False, FAILED) == "4"
    registry.promote(NAME, "2", by="alice", reason="hotfix", force=True)
    registry.client().set_registered_model_alias(NAME, "champion", "4")  # outside mlops
    registry.promote(NAME, "3", by="test", reason="a good retrain")
    assert champion() == "3" and alias("previous") == "1"


def test_a_forced_version_put_back_by_an_outside_move_is_not_the_next_previous(
        model: dict[str, str], state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Force-promoted v2, then v3 promoted (v2 is previous then: it was the champion); `champion` moved back to
    v2 outside mlops; promoting v4 makes v3, the last champion whose gate passed, the previous one."""
    monkeypatch.setattr(registry, "IN_FLIGHT_SECONDS", 0.0)  # the move back is seconds after v3's, not in flight
    registry.promote(NAME, "2", by="alice", reason="hotfix", force=True)
    registry.promote(NAME, "3", by="test", reason="fixed")
    assert alias("previous") == "2"
    registry.client().set_registered_model_alias(NAME, "champion", "2")  # outside mlops
    assert stub_version(NAME, state_dir, True, PASSED) == "4"
    registry.promote(NAME, "4", by="test", reason="newer")
    assert champion() == "4" and alias("previous") == "3"


def test_rollback_refuses_a_gate_failed_previous_without_force(model: dict[str, str]) -> None:
    registry.promote(NAME, "3", by="test", reason="good")
    registry.client().set_registered_model_alias(NAME, "previous", "2")  # outside mlops
    with pytest.raises(RegistryError) as err:
        registry.rollback(NAME, by="test", reason="manual rollback")
    assert "cannot roll back" in str(err.value) and "--force" in str(err.value) and "\n" not in str(err.value)
    assert champion() == "3"
    entry = registry.rollback(NAME, by="bob", reason="v3 is worse, v2 was tested by hand", force=True)
    assert champion() == "2" and entry["forced"] is True
    assert json.loads(tags("2")[registry.OVERRIDE_TAG])["by"] == "bob"


@pytest.mark.parametrize("command", [["promote", "--version", "2", "--force"], ["rollback", "--force"]])
def test_the_cli_wants_a_reason_with_force_before_any_work(command: list[str], config_path: Path) -> None:
    from mlops.cli.main import app

    res = CliRunner().invoke(app, [*command, "--config", str(config_path)])
    assert res.exit_code != 0
    assert "--force needs --reason" in res.output and res.output.count("\n") == 1
