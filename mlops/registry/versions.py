"""MLflow model registry: registering versions with everything they carry, moving aliases with a
recorded history, and loading a version back with its contract and reference sample.

Conventions (every consumer relies on them):
- registered model `cfg.registry.model_name`; served alias `champion`, the one before it `previous`;
- the model is logged as `model` (sklearn flavour, skops with explicitly trusted types);
- run artifacts `contract/contract.json`, `reference/reference.parquet`, `card/model_card.md`,
  `evaluation/*.png`, `evaluation/holdout_metrics.json`, `evaluation/gate_verdict.json`;
- model version tags `gate.passed`, `gate.reasons`, `metric.<name>`, `lineage.*`, `task`;
- each alias move is a registered-model tag `alias_move.<epoch-ms>` holding JSON.
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

from mlops.core.contract import DataContract
from mlops.core.errors import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
PREVIOUS = "previous"
ALIAS_MOVE_PREFIX = "alias_move."


def client(tracking_uri: str | None = None) -> MlflowClient:
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient()


def ensure_experiment(name: str, artifact_root: str) -> str:
    """Create the experiment with artifacts under the state folder (once) and make it current."""
    import mlflow

    c = client()
    exp = c.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else c.create_experiment(name, artifact_location=f"{artifact_root.rstrip('/')}/{name}")
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


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
    from mlops import __version__

    return __version__


def get_version_by_alias(name: str, alias: str) -> Any | None:
    """The model version holding an alias, or None (also when the model is not registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def record_alias_move(name: str, alias: str, to_version: str | None, from_version: str | None, by: str,
                      reason: str) -> dict[str, Any]:
    c = client()
    now = time.time()
    entry = {
        "alias": alias,
        "from_version": from_version,
        "to_version": to_version,
        "by": by,
        "reason": reason[:1500],
        "at": pd.Timestamp(now, unit="s", tz="UTC").isoformat(),
    }
    key = f"{ALIAS_MOVE_PREFIX}{int(now * 1000):d}.{alias}"
    c.set_registered_model_tag(name, key, json.dumps(entry))
    return entry


def move_alias(name: str, alias: str, version: str | None, by: str, reason: str) -> dict[str, Any]:
    """Point an alias at a version (or remove it with version=None) and record who, when, from, why."""
    c = client()
    current = get_version_by_alias(name, alias)
    from_version = str(current.version) if current else None
    if version is None:
        if current:
            c.delete_registered_model_alias(name, alias)
    else:
        c.set_registered_model_alias(name, alias, str(version))
    return record_alias_move(name, alias, None if version is None else str(version), from_version, by, reason)


def alias_history(name: str) -> list[dict[str, Any]]:
    """Every recorded alias move, oldest first."""
    from mlflow.exceptions import MlflowException

    try:
        rm = client().get_registered_model(name)
    except MlflowException:
        return []
    moves = [(k, v) for k, v in rm.tags.items() if k.startswith(ALIAS_MOVE_PREFIX)]
    return [json.loads(v) for _, v in sorted(moves, key=lambda kv: int(kv[0].split(".")[1]))]


def promote(name: str, version: str, by: str, reason: str) -> dict[str, Any]:
    """Make `version` the champion; the champion it replaces keeps alias `previous`."""
    c = client()
    try:
        c.get_model_version(name, str(version))
    except Exception:
        raise RegistryError(f"model '{name}' has no version {version}") from None
    current = get_version_by_alias(name, CHAMPION)
    if current and str(current.version) == str(version):
        raise RegistryError(f"version {version} of '{name}' is already the champion")
    if current:
        move_alias(name, PREVIOUS, current.version, by, f"replaced as champion by version {version}")
    entry = move_alias(name, CHAMPION, str(version), by, reason)
    c.set_model_version_tag(name, str(version), "promoted_at", entry["at"])
    return entry


def rollback(name: str, by: str, reason: str = "rollback") -> dict[str, Any]:
    """Move champion back to the version holding `previous`; `previous` then moves one step further back."""
    current = get_version_by_alias(name, CHAMPION)
    prev = get_version_by_alias(name, PREVIOUS)
    if current is None:
        raise RegistryError(f"model '{name}' has no champion to roll back")
    if prev is None:
        raise RegistryError(f"model '{name}' has no previous champion to roll back to")
    entry = move_alias(name, CHAMPION, prev.version, by, reason)
    # the champion before `prev`, if the history knows one (and it is not the version rolled back)
    earlier = None
    for move in reversed(alias_history(name)):
        if (move["alias"] == CHAMPION and move["to_version"] == str(prev.version) and move["from_version"]
                and move["from_version"] != str(current.version)):
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

    @classmethod
    def of(cls, entry: dict[str, Any]) -> AliasMove:
        """The move from its recorded JSON entry (as `move_alias`, `promote` and `rollback` return it)."""
        return cls(entry["alias"], entry["from_version"], entry["to_version"], entry["by"], entry["reason"],
                   entry["at"])


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


def _download(run_id: str, path: str) -> Path | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))
    except (MlflowException, OSError):
        return None


def load_contract(run_id: str) -> DataContract:
    p = _download(run_id, "contract/contract.json")
    if p is None:
        raise RegistryError(f"run {run_id} holds no data contract")
    return DataContract.from_json(p.read_text())


def load_bundle(name: str, alias_or_version: str = CHAMPION, with_reference: bool = True) -> ModelBundle:
    """Load model, contract and reference sample of a version (by alias or number)."""
    from mlops.registry.trusted_types import load_sklearn_model

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
    model = load_sklearn_model(f"models:/{name}/{mv.version}")
    contract = load_contract(mv.run_id)
    reference = None
    if with_reference:
        p = _download(mv.run_id, "reference/reference.parquet")
        reference = pd.read_parquet(p) if p else None
    return ModelBundle(name, str(mv.version), mv.run_id, model, contract, reference, dict(mv.tags))


def load_champion(name: str, with_reference: bool = False) -> ModelBundle | None:
    """The version holding `champion` with its contract (and reference sample), or None before the first promotion."""
    mv = get_version_by_alias(name, CHAMPION)
    if mv is None:
        return None
    return load_bundle(name, str(mv.version), with_reference=with_reference)


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
        try:
            reasons = json.loads(tags.get("gate.reasons", "[]"))
        except json.JSONDecodeError:
            reasons = [tags.get("gate.reasons", "")]
        out.append({
            "version": str(mv.version),
            "trained_at": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC").isoformat(),
            "family": tags.get("family"),
            "gate_passed": tags.get("gate.passed"),
            "failures": [r.removeprefix("FAIL ") for r in reasons if str(r).startswith("FAIL")],
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
        }
    out["versions"] = len(c.search_model_versions(f"name='{name}'"))
    out["history"] = alias_history(name)[-10:]
    out["recent_versions"] = version_history(name, limit=10)
    return out
