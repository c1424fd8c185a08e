"""Signed gate verdicts: what the promotion gate decided about a version, sealed with the stack's key.

A version's gate verdict (`gate.passed`) and an override recorded on it (`promotion.override`) are plain
MLflow tags, which anyone who can write to MLflow can set. The training flow and `promote --force` seal
them with an HMAC-SHA256 under the gate key, over the model name, the version, the verdict (or the
override record's exact text) and a digest of the version's model files and data contract; the model
server and `mlops status` check the seal, and the server checks the files it loads against the digest.
Where the version lives is not sealed (its run id, the ids and location its `MLmodel` names), so a
registry moved to another store (mlops.stack.migration) keeps its seals.

Tags on the version:
- `gate.digest`: `sha256:<hex>` over the model artifact's files and `contract/contract.json`;
- `gate.signature`: `v1:<hex>`, the seal of `gate.passed` and `gate.digest`;
- `promotion.override.signature`: `v1:<hex>`, the seal of the override record (which holds the digest).

The key: MLOPS_GATE_KEY, else `$MLOPS_HOME/gate_key` (mode 600), made by the first process that seals.
This module also reads the verdict and override a version carries (`gate_failed`, `override_record`) and
says why a version may not serve (`serving_refusal`), for the registry, the model server and the CLI.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.core.contract import DataContract
from mlops.core.errors import RegistryError
from mlops.core.settings import get_settings, private_dir, private_opener
from mlops.registry.trusted_types import load_sklearn_model

GATE_PASSED_TAG = "gate.passed"
GATE_FAILURES_TAG = "gate.failures"  # the failed checks, one a line (only on a rejected version)
DIGEST_TAG = "gate.digest"
SIGNATURE_TAG = "gate.signature"
OVERRIDE_TAG = "promotion.override"
OVERRIDE_SIGNATURE_TAG = "promotion.override.signature"
KEY_ENV = "MLOPS_GATE_KEY"
KEY_FILE = "gate_key"
CONTRACT_PATH = "contract/contract.json"
SCHEME = "v1"
# what a copy of the model to another store rewrites in its MLmodel file (mlops.stack.migration)
LOCATION_KEYS = frozenset({"artifact_path", "model_id", "model_uuid", "run_id"})

# what `check` finds
SIGNED = "signed"
UNSIGNED = "not signed"
INVALID = "signature invalid"
NO_KEY = "no gate key"
NO_VERDICT = "no verdict"


def key_path() -> Path:
    """Where the local stack keeps its gate key."""
    return get_settings().state_dir / KEY_FILE


def gate_key(create: bool = False) -> bytes | None:
    """The gate key: MLOPS_GATE_KEY, else the state folder's key file; with `create`, a new random key is
    written there (mode 600) when there is none. None when there is no key and `create` is False."""
    given = get_settings().gate_key
    if given is not None:
        return given.get_secret_value().encode("utf-8")
    path = key_path()
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise RegistryError(f"cannot read the gate key {path} ({exc.strerror}); set {KEY_ENV} or fix its "
                            "permissions") from None
    if text:
        return text.encode("utf-8")
    if not create:
        return None
    return _new_key(path)


def _new_key(path: Path) -> bytes:
    """Write a random key to `path` unless another process just did (the first one wins), and return the key."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        with open(tmp, "w", encoding="utf-8", opener=private_opener) as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic and never over an existing key
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


# ---- digests ---------------------------------------------------------------------------------------


def files_digest(model_dir: Path, contract_file: Path | None) -> str:
    """`sha256:<hex>` over each model file (relative path and content digest, in path order) and the contract;
    `MLmodel` counts without the keys that say where the model lives (LOCATION_KEYS)."""
    outer = hashlib.sha256()
    entries = sorted((p.relative_to(model_dir).as_posix(), p) for p in model_dir.rglob("*") if p.is_file())
    for rel, path in entries:
        content = _mlmodel_sha256(path) if rel == "MLmodel" else _file_sha256(path)
        outer.update(f"model/{rel}\0{content}\n".encode())
    contract = _file_sha256(contract_file) if contract_file is not None and contract_file.is_file() else "absent"
    outer.update(f"{CONTRACT_PATH}\0{contract}\n".encode())
    return "sha256:" + outer.hexdigest()


def _mlmodel_sha256(path: Path) -> str:
    import yaml

    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return _file_sha256(path)
    if not isinstance(meta, dict):
        return _file_sha256(path)
    kept = {k: v for k, v in meta.items() if k not in LOCATION_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_version(name: str, version: str, run_id: str, into: Path) -> tuple[Path, Path | None]:
    """The version's model files and its contract file, downloaded under `into`: (model folder, contract or None)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                                         dst_path=str(into / "model")))
    contract: Path | None = None
    if run_id:
        try:
            contract = Path(mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=CONTRACT_PATH, dst_path=str(into / "contract")))
        except (MlflowException, OSError):
            contract = None
    return model_dir, contract


def version_digest(name: str, version: str, run_id: str) -> str:
    """The digest of the version's files as the store holds them now."""
    try:
        with tempfile.TemporaryDirectory(prefix="mlops-digest-") as tmp:
            return files_digest(*download_version(name, version, run_id, Path(tmp)))
    except RegistryError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types for a missing artifact
        raise RegistryError(f"cannot read the model files of {name} v{version} to seal its gate verdict "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None


def load_checked(name: str, version: str, run_id: str, digest: str) -> tuple[Any, DataContract]:
    """The model and contract from one download whose files are checked against `digest` before loading."""
    with tempfile.TemporaryDirectory(prefix="mlops-load-") as tmp:
        model_dir, contract_file = download_version(name, version, run_id, Path(tmp))
        if files_digest(model_dir, contract_file) != digest:
            raise RegistryError(f"the model files or data contract of {name} v{version} differ from the ones its "
                                "gate verdict sealed (changed in the store after the gate); not loaded")
        if contract_file is None:
            raise RegistryError(f"run {run_id} holds no data contract")
        return load_sklearn_model(str(model_dir)), DataContract.from_json(contract_file.read_text())


# ---- seals -----------------------------------------------------------------------------------------


def _mac(key: bytes, fields: Mapping[str, Any]) -> str:
    message = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    return f"{SCHEME}:" + hmac.new(key, message, hashlib.sha256).hexdigest()


def verdict_signature(key: bytes, name: str, version: str, passed: str, digest: str) -> str:
    """The seal of a verdict: `passed` is the `gate.passed` tag's text (`true` or `false`)."""
    return _mac(key, {"kind": "gate-verdict", "model": name, "version": str(version), "passed": passed,
                      "digest": digest})


def override_signature(key: bytes, name: str, version: str, record: str) -> str:
    """The seal of an override: `record` is the `promotion.override` tag's exact text."""
    return _mac(key, {"kind": "override", "model": name, "version": str(version), "record": record})


def seal_tags(name: str, version: str, run_id: str, passed: bool, digest: str | None = None) -> dict[str, str]:
    """The tags that record a verdict sealed: `gate.passed`, `gate.digest` and `gate.signature` (the digest
    read from the store unless given); the key is made when the state folder has none."""
    key = gate_key(create=True)
    assert key is not None
    digest = digest or version_digest(name, version, run_id)
    text = "true" if passed else "false"
    return {GATE_PASSED_TAG: text, DIGEST_TAG: digest,
            SIGNATURE_TAG: verdict_signature(key, name, version, text, digest)}


def seal_verdict(name: str, version: str, passed: bool) -> dict[str, str]:
    """Record a sealed verdict on a registered version (the training flow's last word on it); returns the tags."""
    from mlflow import MlflowClient

    c = MlflowClient()
    mv = c.get_model_version(name, str(version))
    tags = seal_tags(name, str(version), mv.run_id or "", passed)
    for k in (GATE_PASSED_TAG, DIGEST_TAG, SIGNATURE_TAG):  # the signature last: a reader never sees it first
        c.set_model_version_tag(name, str(version), k, tags[k])
    return tags


def sealed_override(name: str, version: str, run_id: str, record: dict[str, Any],
                    digest: str | None = None) -> dict[str, str]:
    """The override tags: the record (with the digest of the files it lets serve) and its seal."""
    key = gate_key(create=True)
    assert key is not None
    text = json.dumps(record | {"digest": digest or version_digest(name, version, run_id)})
    return {OVERRIDE_TAG: text, OVERRIDE_SIGNATURE_TAG: override_signature(key, name, version, text)}


# ---- checks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seal:
    """What the seals on a version say: the verdict's state (SIGNED, UNSIGNED, INVALID, NO_KEY, NO_VERDICT),
    the verdict when signed, whether a valid override is recorded, and the digest the served files must have."""

    state: str
    passed: bool | None
    override: bool
    override_state: str | None  # None without an override record, else SIGNED, UNSIGNED, INVALID or NO_KEY
    digest: str | None

    @property
    def servable(self) -> bool:
        return (self.state == SIGNED and bool(self.passed)) or self.override

    def problem(self, version: str) -> str | None:
        """Why the verdict cannot be trusted (one sentence), or None when it is signed."""
        if self.state == SIGNED:
            return None
        if self.state == NO_KEY:
            return (f"version {version}'s gate verdict cannot be checked: this process has no gate key (set "
                    f"{KEY_ENV} to the stack's key, or run where $MLOPS_HOME/{KEY_FILE} is)")
        if self.state == INVALID:
            return (f"version {version}'s gate verdict signature is invalid (the verdict or the model's digest "
                    "was changed after the gate sealed it, or another key sealed it)")
        if self.state == NO_VERDICT:
            return f"version {version} carries no gate verdict (it was not registered by the training flow)"
        return (f"version {version}'s gate verdict is not signed (written outside the training flow, or before "
                "verdicts were sealed)")


def check(name: str, version: str, tags: Mapping[str, str], key: bytes | None = None) -> Seal:
    """Check the seals of a version's verdict and override against the gate key (read when not given)."""
    key = key if key is not None else gate_key()
    passed, digest, signature = tags.get(GATE_PASSED_TAG), tags.get(DIGEST_TAG), tags.get(SIGNATURE_TAG)
    if passed is None and signature is None:
        state = NO_VERDICT
    elif not signature or not digest or passed not in ("true", "false"):
        state = UNSIGNED
    elif key is None:
        state = NO_KEY
    else:
        expected = verdict_signature(key, name, version, passed, digest)
        state = SIGNED if hmac.compare_digest(expected, signature) else INVALID
    record = tags.get(OVERRIDE_TAG)
    override_state, override_digest = None, None
    if record is not None:
        seal = tags.get(OVERRIDE_SIGNATURE_TAG)
        if not seal:
            override_state = UNSIGNED
        elif key is None:
            override_state = NO_KEY
        elif hmac.compare_digest(override_signature(key, name, version, record), seal):
            override_state = SIGNED
            override_digest = _record_digest(record)
        else:
            override_state = INVALID
    verdict = (passed == "true") if state == SIGNED else None
    override = override_state == SIGNED and override_digest is not None
    served_digest = digest if state == SIGNED and verdict else override_digest if override else None
    return Seal(state, verdict, override, override_state, served_digest)


def _record_digest(record: str) -> str | None:
    try:
        raw = json.loads(record)
    except (TypeError, ValueError):
        return None
    digest = raw.get("digest") if isinstance(raw, dict) else None
    return digest if isinstance(digest, str) and digest.startswith("sha256:") else None


def gate_label(entry: Mapping[str, Any]) -> str:
    """A version's gate in a word or three, from its `version_history` entry: `passed`, `REJECTED` (with an
    override noted), or why its verdict cannot be trusted (`verdict not signed`, `verdict signature INVALID`)."""
    state = entry.get("verdict")
    if state == SIGNED:
        gate = "passed" if str(entry.get("gate_passed")).lower() == "true" else "REJECTED"
        return gate + (" (override recorded)" if gate == "REJECTED" and entry.get("override") else "")
    return {UNSIGNED: "verdict not signed", INVALID: "verdict signature INVALID",
            NO_KEY: "verdict unchecked (no gate key)"}.get(str(state), "no verdict")


# ---- the verdict and override a version carries ------------------------------------------------------


def gate_failed(tags: Mapping[str, str]) -> bool:
    """True when the version's recorded gate verdict is a failure (no verdict is not a failure)."""
    return str(tags.get(GATE_PASSED_TAG, "")).strip().lower() == "false"


def gate_failures(tags: Mapping[str, str]) -> list[str]:
    """The failed checks of the version's gate verdict (`gate.failures`, one a line); every reason, passed ones
    too, is in the run's `evaluation/gate_verdict.json`."""
    return [line.strip() for line in str(tags.get(GATE_FAILURES_TAG, "")).splitlines() if line.strip()]


def override_record(tags: Mapping[str, str]) -> dict[str, Any] | None:
    """The recorded decision to serve a gate-failed version anyway (who, why, when), or None."""
    raw = tags.get(OVERRIDE_TAG)
    if not raw:
        return None
    try:
        rec = json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) and str(rec.get("reason") or "").strip() else None


def serving_refusal(name: str, version: str, tags: Mapping[str, str]) -> str | None:
    """Why a version must not be served, promoted or rolled back to (one sentence), or None when it may: its
    gate failed, or its verdict is not sealed with the gate key, and no sealed override is recorded on it."""
    seal = check(name, str(version), tags)
    if seal.servable and (seal.state == SIGNED and seal.passed or override_record(tags) is not None):
        return None
    note = ""
    if seal.override_state is not None and seal.override_state != SIGNED:
        said = {UNSIGNED: "not signed", INVALID: "badly signed"}.get(seal.override_state, "unchecked (no gate key)")
        note = f"; its override record is {said}"
    problem = seal.problem(str(version))
    if problem:
        return problem + note
    failures = gate_failures(tags)
    why = f" ({failures[0][:200]})" if failures else ""
    return f"version {version} failed its promotion gate{why} and no override is recorded on it" + note


def refusal_of(mv: Any) -> str | None:
    """`serving_refusal` of a model version as MLflow returns it."""
    return serving_refusal(str(mv.name), str(mv.version), dict(mv.tags))


def served_digest(mv: Any) -> str | None:
    """The digest of the files a servable version's seal (verdict or override) admits, None when none does."""
    return check(str(mv.name), str(mv.version), dict(mv.tags)).digest
