"""MLflow model registry: registering versions with everything they carry, moving aliases with a
recorded history, and loading a version back with its contract and reference sample.

Conventions (every consumer relies on them):
- registered model `cfg.registry.model_name`; served alias `champion`, the one before it `previous`;
- the model is logged as `model` (sklearn flavour, skops with explicitly trusted types);
- run artifacts `contract/contract.json`, `reference/reference.parquet`, `card/model_card.md`,
  `evaluation/*.png`, `evaluation/holdout_metrics.json`, `evaluation/gate_verdict.json`, `lineage.json`;
- model version tags `gate.passed`, `gate.failures`, `metric.<name>`, a few `lineage.*`, `family`, and
  `promotion.override` (JSON: by, reason, at) when someone chose to serve a gate-failed version;
- each alias move is a tag `alias_move.<epoch-ms>.<alias>` holding JSON on the version the alias moved to
  (mlops.registry.history; older stores kept them on the registered model and are migrated on the next
  move); a move made with `force` over a failed gate carries `"forced": true`, a move found but not made
  by this module (the alias set through MLflow directly) is recorded when detected, with `"outside": true`;
- the training experiments carry `mlflow.experimentKind=custom_model_development` (the classic view).

The guard: a version whose gate failed is not promoted, rolled back to or served (mlops.serving.swap)
unless an override is recorded on it, which only `promote`/`rollback` with `force=True` and a reason do.
Verdicts and overrides count only when sealed with the gate key (mlops.registry.verdict): a version whose
verdict is unsigned, badly signed or missing is refused like a failed one.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlops import __version__
from mlops.core.contract import DataContract
from mlops.core.errors import RegistryError
from mlops.core.rowkeys import HASHES_ARTIFACT, RowHashSet
from mlops.registry.history import delete_move as _delete_move
from mlops.registry.history import move_key, read_history, write_move
from mlops.registry.trusted_types import load_sklearn_model
from mlops.registry.verdict import (  # noqa: F401 - the verdict readers are part of this module's interface
    DIGEST_TAG,
    GATE_FAILURES_TAG,
    GATE_PASSED_TAG,
    OVERRIDE_TAG,
    SIGNED,
    check,
    gate_failed,
    gate_failures,
    load_checked,
    override_record,
    refusal_of,
    sealed_override,
    served_digest,
    serving_refusal,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
PREVIOUS = "previous"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
ML_EXPERIMENT_KIND = "custom_model_development"  # MLflow's "Machine learning" kind (not GenAI)
OUTSIDE_BY = "outside mlops"
# a recorded move younger than this whose alias still holds its from_version is in flight
IN_FLIGHT_SECONDS = 10.0


def client(tracking_uri: str | None = None) -> MlflowClient:
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient()


def ensure_experiment(name: str, artifact_root: str) -> str:
    """Create the experiment with artifacts under the state folder (once) and make it current."""
    import mlflow

    exp_id = ensure_ml_experiment(name, artifact_root)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def ensure_ml_experiment(name: str, artifact_root: str) -> str:
    """The experiment's id, created once with artifacts under the state folder and marked a machine-learning
    experiment (`mlflow.experimentKind`, the tag MLflow's UI reads for its kind) when it is not yet."""
    from mlflow.exceptions import MlflowException

    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is None:
        try:
            return c.create_experiment(name, artifact_location=f"{artifact_root.rstrip('/')}/{name}",
                                       tags={EXPERIMENT_KIND_TAG: ML_EXPERIMENT_KIND})
        except MlflowException:  # created meanwhile by a concurrent run
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
    if EXPERIMENT_KIND_TAG not in exp.tags:
        c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, ML_EXPERIMENT_KIND)
    return str(exp.experiment_id)


def code_version() -> str:
    """The git commit of the project when run from a checkout, else the package version."""
    env = os.environ.get("MLOPS_CODE_VERSION")
    if env:
        return env
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass

    return __version__


def get_version_by_alias(name: str, alias: str) -> Any | None:
    """The model version holding an alias, or None (also when the model is not registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _move_entry(alias: str, to_version: str | None, from_version: str | None, by: str, reason: str,
                **extra: Any) -> tuple[str, dict[str, Any]]:
    now = time.time()
    entry = {
        "alias": alias,
        "from_version": from_version,
        "to_version": to_version,
        "by": by,
        "reason": reason[:1500],
        "at": pd.Timestamp(now, unit="s", tz="UTC").isoformat(),
        **extra,
    }
    return move_key(int(now * 1000), alias), entry


def _write_move(name: str, key: str, entry: dict[str, Any]) -> str | None:
    """Record a move on its version (on the model when its versions are gone)."""
    return write_move(client(), name, key, entry)


def record_alias_move(name: str, alias: str, to_version: str | None, from_version: str | None, by: str,
                      reason: str, **extra: Any) -> dict[str, Any]:
    """Add one entry to the alias history (`extra` keys, e.g. forced or outside, are kept in the JSON)."""
    key, entry = _move_entry(alias, to_version, from_version, by, reason, **extra)
    _write_move(name, key, entry)
    return entry


def move_alias(name: str, alias: str, version: str | None, by: str, reason: str, **extra: Any) -> dict[str, Any]:
    """Point an alias at a version (or remove it with version=None) and record who, when, from, why.

    The history entry is written first, so a reader never sees the alias moved without it (a fresh
    entry whose alias has not moved yet counts as in flight, see `reconcile_aliases`)."""
    c = client()
    current = get_version_by_alias(name, alias)
    from_version = str(current.version) if current else None
    to_version = None if version is None else str(version)
    key, entry = _move_entry(alias, to_version, from_version, by, reason, **extra)
    held_by = _write_move(name, key, entry)
    try:
        if version is None:
            if current:
                c.delete_registered_model_alias(name, alias)
        else:
            c.set_registered_model_alias(name, alias, str(version))
    except Exception:
        try:
            _delete_move(c, name, key, held_by)
        except Exception:  # noqa: BLE001 - the move failed anyway; reconcile will see the difference
            pass
        raise
    return entry


def alias_history(name: str) -> list[dict[str, Any]]:
    """Every recorded alias move, oldest first (from the version tags, and an older store's model tags)."""
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        rm = c.get_registered_model(name)
    except MlflowException:
        return []
    return read_history(c, name, rm.tags)


def record_override(name: str, version: str, by: str, reason: str) -> dict[str, Any]:
    """Record on the version that `by` chose to serve it although its gate failed, and why."""
    if not reason.strip():
        raise RegistryError("serving a gate-failed version needs a reason; pass --reason")
    mv = client().get_model_version(name, str(version))
    tags = dict(mv.tags)
    rec = {"by": by, "reason": reason[:1500], "at": pd.Timestamp.now(tz="UTC").isoformat(),
           "gate_failures": [f[:300] for f in gate_failures(tags)][:5]}
    # the files the gate judged when its verdict is sealed, else the files the store holds now
    judged = tags.get(DIGEST_TAG) if check(name, str(version), tags).state == SIGNED else None
    sealed = sealed_override(name, str(version), mv.run_id or "", rec, judged)
    for k, v in sealed.items():  # the record, then its seal
        client().set_model_version_tag(name, str(version), k, v)
    return json.loads(sealed[OVERRIDE_TAG])


def _version(name: str, version: str) -> Any:
    try:
        return client().get_model_version(name, str(version))
    except Exception:
        raise RegistryError(f"model '{name}' has no version {version}") from None


def _refused(name: str, version: str | None) -> bool:
    if version is None:
        return False
    try:
        return refusal_of(client().get_model_version(name, str(version))) is not None
    except Exception:  # noqa: BLE001 - a deleted version cannot be served either
        return True


def reconcile_aliases(name: str, by: str) -> list[dict[str, Any]]:
    """Record alias moves made outside this module (e.g. through MLflow's REST API) as such.

    For `champion` and `previous`, when the alias holds another version than the last recorded move put
    there, an entry with `"outside": true` is added (its time is when it was found). Returns those entries.
    """
    c = client()
    try:
        rm = c.get_registered_model(name)
    except Exception:  # noqa: BLE001 - no model yet: nothing to reconcile
        return []
    actual = {a: str(v) for a, v in (rm.aliases or {}).items()}
    history = read_history(c, name, rm.tags)  # read after the aliases: a move's entry precedes its alias
    found = []
    for alias in (CHAMPION, PREVIOUS):
        last = next((h for h in reversed(history) if h["alias"] == alias), None)
        recorded = last["to_version"] if last else None
        now_at = actual.get(alias)
        if now_at == recorded:
            continue
        if (last is not None and now_at == last["from_version"]
                and time.time() - pd.Timestamp(last["at"]).timestamp() < IN_FLIGHT_SECONDS):
            continue  # a move being made right now: its alias follows its entry
        found.append(record_alias_move(
            name, alias, now_at, recorded, OUTSIDE_BY,
            f"{alias} held {_label(now_at)} but the last recorded move put it at {_label(recorded)}: moved outside "
            f"mlops (found by {by})", outside=True))
    return found


def _label(version: str | None) -> str:
    return f"v{version}" if version else "none"


def _fit_to_return_to(name: str, version: str) -> bool:
    """Whether `previous` may be moved to a version without anyone asking: it may be served and its own gate
    passed (a version served by override was someone's choice for its moment, not a place to fall back to)."""
    try:
        mv = client().get_model_version(name, str(version))
    except Exception:  # noqa: BLE001 - a deleted version is no place to return to
        return False
    return refusal_of(mv) is None and not gate_failed(dict(mv.tags))


def _last_servable_champion(name: str, exclude: str) -> str | None:
    """The newest version mlops itself put in `champion` whose gate passed and that may still be served (not
    `exclude`); moves made outside mlops or forced over a failed gate are passed over."""
    seen: set[str] = set()
    for move in reversed(alias_history(name)):
        v = move.get("to_version")
        if (move["alias"] != CHAMPION or not v or v == exclude or v in seen or move.get("outside")
                or move.get("forced")):
            continue
        seen.add(v)
        if _fit_to_return_to(name, v):
            return v
    return None


def _placed_outside(name: str, version: str) -> bool:
    """Whether `champion` holds `version` because of a move made outside mlops (the last recorded move says so)."""
    last = next((h for h in reversed(alias_history(name)) if h["alias"] == CHAMPION), None)
    return bool(last is not None and last.get("outside") and last.get("to_version") == str(version))


def promote(name: str, version: str, by: str, reason: str, force: bool = False) -> dict[str, Any]:
    """Make `version` the champion; the champion it replaces keeps alias `previous`.

    A version whose gate failed is refused unless `force` (then the override, with `reason`, is recorded on
    the version and the move is marked forced). When the champion itself is a gate-failed version nobody
    allowed, or a gate-failed one an outside move put there, `previous` goes to the last champion mlops made
    whose gate passed instead (or stays where it is when there is none)."""
    mv = _version(name, version)
    reconcile_aliases(name, by)
    refusal = refusal_of(mv)
    if refusal and not force:
        raise RegistryError(f"{refusal}; promote it with --force --reason '<why>' to serve it anyway")
    extra: dict[str, Any] = {}
    if refusal or (force and gate_failed(dict(mv.tags))):
        record_override(name, str(version), by, reason)
        extra = {"forced": True, "gate_failed": gate_failed(dict(mv.tags))}
    current = get_version_by_alias(name, CHAMPION)
    if current and str(current.version) == str(version):
        if not extra:
            raise RegistryError(f"version {version} of '{name}' is already the champion")
        # the alias already names it (set outside mlops): the override makes the server take it
        return record_alias_move(name, CHAMPION, str(version), str(version), by, reason, **extra)
    if current:
        prev: str | None = str(current.version)
        # never make a version nobody allowed the one a rollback returns to, nor a gate-failed one that an outside
        # move put back in `champion` (its override was for another moment)
        if _refused(name, prev) or (gate_failed(dict(current.tags)) and _placed_outside(name, prev)):
            prev = _last_servable_champion(name, str(version))
        if prev is not None:
            move_alias(name, PREVIOUS, prev, by, f"replaced as champion by version {version}")
    entry = move_alias(name, CHAMPION, str(version), by, reason, **extra)
    client().set_model_version_tag(name, str(version), "promoted_at", entry["at"])
    return entry


def rollback(name: str, by: str, reason: str = "rollback", force: bool = False) -> dict[str, Any]:
    """Move champion back to the version holding `previous`; `previous` then moves one step further back.

    A previous champion whose gate failed is refused unless `force` (the override is then recorded on it)."""
    reconcile_aliases(name, by)
    current = get_version_by_alias(name, CHAMPION)
    prev = get_version_by_alias(name, PREVIOUS)
    if current is None:
        raise RegistryError(f"model '{name}' has no champion to roll back")
    if prev is None:
        raise RegistryError(f"model '{name}' has no previous champion to roll back to")
    refusal = refusal_of(prev)
    if refusal and not force:
        raise RegistryError(f"cannot roll back: the previous champion, {refusal}; roll back with --force "
                            "--reason '<why>' to serve it anyway")
    extra: dict[str, Any] = {}
    if refusal:
        record_override(name, str(prev.version), by, reason)
        extra = {"forced": True, "gate_failed": gate_failed(dict(prev.tags))}
    entry = move_alias(name, CHAMPION, prev.version, by, reason, **extra)
    # the champion before `prev`, if the history knows one (and it is not the version rolled back)
    earlier = None
    for move in reversed(alias_history(name)):
        if (move["alias"] == CHAMPION and move["to_version"] == str(prev.version) and move["from_version"]
                and move["from_version"] != str(current.version) and not move.get("outside")):
            earlier = move["from_version"]
            break
    move_alias(name, PREVIOUS, earlier, by, f"rollback from version {current.version}")
    client().set_model_version_tag(name, str(current.version), "rolled_back_at", entry["at"])
    return entry


@dataclass(frozen=True)
class AliasMove:
    """One recorded move of an alias: from which version to which, by whom, why and when."""

    alias: str
    from_version: str | None
    to_version: str | None
    by: str
    reason: str
    at: str
    forced: bool = False  # made with force over a failed gate (an override is recorded on the version)
    outside: bool = False  # found, not made: the alias was moved outside mlops

    @classmethod
    def of(cls, entry: dict[str, Any]) -> AliasMove:
        """The move from its recorded JSON entry (as `move_alias`, `promote` and `rollback` return it)."""
        return cls(entry["alias"], entry["from_version"], entry["to_version"], entry["by"], entry["reason"],
                   entry["at"], bool(entry.get("forced")), bool(entry.get("outside")))


@dataclass(frozen=True)
class Promotion:
    """Where `champion` stands after a verdict: the recorded move (None when the version was not promoted)
    and the version holding `champion` now."""

    move: AliasMove | None
    champion_version: str | None

    @property
    def promoted(self) -> bool:
        return self.move is not None

    @property
    def previous_champion(self) -> str | None:
        return self.move.from_version if self.move else None


def champion_version(name: str) -> str | None:
    """The version number holding `champion`, or None."""
    mv = get_version_by_alias(name, CHAMPION)
    return str(mv.version) if mv is not None else None


@dataclass
class ModelBundle:
    """A registered version loaded with what it carries."""

    name: str
    version: str
    run_id: str
    model: Any
    contract: DataContract
    reference: pd.DataFrame | None
    tags: dict[str, str]

    @property
    def task(self) -> str:
        return self.contract.task


def download_artifact(run_id: str, path: str) -> Path | None:
    """A local copy of a run's artifact file, None when the run holds none at `path` (or it cannot be fetched)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))
    except (MlflowException, OSError):
        return None


def training_row_hashes(run_id: str) -> RowHashSet | None:
    """The hashes of the rows a version trained on (None for versions that keep none, or an unreadable file)."""
    path = download_artifact(run_id, HASHES_ARTIFACT)
    if path is None:
        return None
    try:
        return RowHashSet.load(path)
    except (OSError, ValueError, KeyError):
        return None


def training_window(run_id: str) -> dict[str, Any] | None:
    """How a version's training window was chosen (`evaluation/training_window.json`), None when not recorded."""
    path = download_artifact(run_id, "evaluation/training_window.json")
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_contract(run_id: str) -> DataContract:
    p = download_artifact(run_id, "contract/contract.json")
    if p is None:
        raise RegistryError(f"run {run_id} holds no data contract")
    return DataContract.from_json(p.read_text())


def load_bundle(name: str, alias_or_version: str = CHAMPION, with_reference: bool = True,
                digest: str | None = None) -> ModelBundle:
    """Load model, contract and reference sample of a version (by alias or number); with `digest` (the one its
    sealed verdict names, mlops.registry.verdict) the model and contract are loaded only if their files have it."""
    c = client()
    if str(alias_or_version).isdigit():
        try:
            mv = c.get_model_version(name, str(alias_or_version))
        except Exception:
            raise RegistryError(f"model '{name}' has no version {alias_or_version}") from None
    else:
        mv = get_version_by_alias(name, str(alias_or_version))
        if mv is None:
            raise RegistryError(f"model '{name}' has no version with alias '{alias_or_version}' (train one first)")
    if digest is None:
        model = load_sklearn_model(f"models:/{name}/{mv.version}")
        contract = load_contract(mv.run_id)
    else:
        model, contract = load_checked(name, str(mv.version), mv.run_id, digest)
    reference = None
    if with_reference:
        p = download_artifact(mv.run_id, "reference/reference.parquet")
        reference = pd.read_parquet(p) if p else None
    return ModelBundle(name, str(mv.version), mv.run_id, model, contract, reference, dict(mv.tags))


def load_champion(name: str, with_reference: bool = False, to_serve: bool = False) -> ModelBundle | None:
    """The version holding `champion` with its contract (and reference sample), or None before the first
    promotion. `to_serve` (batch scoring): refused as the model server refuses it (`serving_refusal`), and
    loaded only from files with its seal's digest."""
    mv = get_version_by_alias(name, CHAMPION)
    if mv is None:
        return None
    if not to_serve:
        return load_bundle(name, str(mv.version), with_reference=with_reference)
    refusal = refusal_of(mv)
    if refusal:
        raise RegistryError(f"the champion is not served: {refusal}")
    return load_bundle(name, str(mv.version), with_reference=with_reference, digest=served_digest(mv))


def version_history(name: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest registered versions with their gate result and, for rejected ones, why."""
    c = client()
    versions = sorted(c.search_model_versions(f"name='{name}'"), key=lambda mv: int(mv.version), reverse=True)
    aliases: dict[str, list[str]] = {}
    for alias, version in (c.get_registered_model(name).aliases or {}).items() if versions else []:
        aliases.setdefault(str(version), []).append(alias)
    out = []
    for mv in versions[:limit]:
        tags = dict(mv.tags)
        out.append({
            "version": str(mv.version),
            "trained_at": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC").isoformat(),
            "family": tags.get("family"),
            "gate_passed": tags.get("gate.passed"),
            "verdict": check(name, str(mv.version), tags).state,
            "failures": gate_failures(tags),
            "override": override_record(tags),
            "aliases": sorted(aliases.get(str(mv.version), [])),
            "reason": tags.get("lineage.reason"),
            "metrics": {k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")},
        })
    return out


def status(name: str) -> dict[str, Any]:
    """What is champion and previous, their metrics and when they were trained and promoted."""
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        c.get_registered_model(name)
    except MlflowException:
        raise RegistryError(f"no registered model named '{name}' in this store (run `mlops train` first)") from None
    out: dict[str, Any] = {"model": name}
    try:
        out["outside_moves"] = reconcile_aliases(name, "mlops status")
    except Exception as exc:  # noqa: BLE001 - a read-only store still shows the status
        out["outside_moves"] = []
        out["reconcile_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    for alias in (CHAMPION, PREVIOUS):
        mv = get_version_by_alias(name, alias)
        if mv is None:
            out[alias] = None
            continue
        out[alias] = {
            "version": mv.version,
            "run_id": mv.run_id,
            "trained_at": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC").isoformat(),
            "promoted_at": mv.tags.get("promoted_at"),
            "metrics": {k.removeprefix("metric."): float(v) for k, v in mv.tags.items() if k.startswith("metric.")},
            "gate_passed": mv.tags.get("gate.passed"),
            "verdict": check(name, str(mv.version), dict(mv.tags)).state,
            "override": override_record(dict(mv.tags)),
            "refused": refusal_of(mv),
        }
    out["versions"] = len(c.search_model_versions(f"name='{name}'"))
    out["history"] = alias_history(name)[-10:]
    out["recent_versions"] = version_history(name, limit=10)
    return out
