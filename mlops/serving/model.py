"""A registered model version loaded for serving: pipeline, contract validator, fast path, self-check.

`load_served_model` is the one code path that turns a registry version into something that answers
requests; the server, hot swap and infra validation (mlops.serving.infra_validation) all go through it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.contract import OPTIONAL_ROLES, DataContract
from mlops.core.errors import MLOpsError
from mlops.registry import versions as registry
from mlops.serving.fastpath import FastPath, Unsupported, compile_fast_path, frame_from_batch
from mlops.serving.records import Batch, RequestError, Validator, records_from_frame

log = logging.getLogger("mlops.model_server")

SELF_CHECK_ROWS = 500
SELF_CHECK_SINGLE_ROWS = 12
PROBA_TOLERANCE = 1e-9  # linear models: BLAS sums a batch and a single row in different orders (~1e-16)


class LoadError(Exception):
    """A version that cannot be served (missing artifacts, fails its self-check)."""


class Refused(LoadError):
    """A version the server will not serve: its gate failed and no override is recorded on it."""


@dataclass
class Scored:
    predictions: np.ndarray
    probabilities: np.ndarray | None


@dataclass
class ServedModel:
    name: str
    version: str
    run_id: str
    pipeline: Any
    contract: DataContract
    validator: Validator
    task: str
    classes: list[Any] | None
    fast: FastPath | None
    fast_reason: str
    tags: dict[str, str] = field(default_factory=dict)
    signature: dict[str, Any] | None = None
    loaded_at: float = field(default_factory=time.time)
    self_check: dict[str, Any] = field(default_factory=dict)

    @property
    def kinds(self) -> dict[str, int]:
        return {r.name: r.kind for r in self.validator.rules}

    @property
    def promoted_at(self) -> str | None:
        return self.tags.get("promoted_at")

    def score(self, batch: Batch, use_fast: bool = True) -> Scored:
        """Predictions (and class probabilities) for a validated batch."""
        if use_fast and self.fast is not None:
            pred, proba = self.fast.predict(batch)
            return Scored(pred, proba)
        return self.score_pipeline(batch)

    def score_pipeline(self, batch: Batch) -> Scored:
        frame = frame_from_batch(batch, self.kinds)
        pred = self.pipeline.predict(frame)
        proba = None
        if self.task == "classification" and hasattr(self.pipeline, "predict_proba"):
            proba = self.pipeline.predict_proba(frame)
        return Scored(np.asarray(pred), None if proba is None else np.asarray(proba))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "task": self.task,
            "classes": self.classes,
            "promoted_at": self.promoted_at,
            "loaded_at": pd.Timestamp(self.loaded_at, unit="s", tz="UTC").isoformat(),
            "fast_path": self.fast.describe if self.fast is not None else None,
            "fast_path_note": self.fast_reason,
            "signature": self.signature,
            "contract": [
                {"name": c.name, "kind": c.kind, "role": c.role, "required": c.role not in OPTIONAL_ROLES,
                 "nullable": c.max_null_fraction > 0, "min": c.min, "max": c.max, "allowed": c.allowed}
                for c in self.contract.columns if c.role != "target"
            ],
            "self_check": self.self_check,
        }


def build_served_model(name: str, version: str, run_id: str, pipeline: Any, contract: DataContract,
                       reference: pd.DataFrame | None, tags: dict[str, str] | None = None,
                       signature: dict[str, Any] | None = None, enforce_ranges: bool = True,
                       fast_path: bool = True) -> ServedModel:
    """Wrap a fitted pipeline with its contract, compile the fast path, and run the self-check."""
    validator = Validator(contract.without_target(), enforce_ranges=enforce_ranges, target=contract.target)
    task = contract.task
    classes = None
    est = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    if task == "classification" and hasattr(est, "classes_"):
        classes = np.asarray(est.classes_).tolist()
    fast, reason = None, "disabled"
    if fast_path:
        kinds = {r.name: r.kind for r in validator.rules}
        allowed = {c.name: list(c.allowed) for c in contract.columns if c.allowed}
        try:
            fast, reason = compile_fast_path(pipeline, kinds, allowed, task == "classification"), "compiled"
        except Unsupported as exc:
            reason = f"full pipeline: {exc}"
        except Exception as exc:  # noqa: BLE001 - any surprise here only costs speed
            reason = f"full pipeline: fast path failed to compile ({type(exc).__name__}: {exc})"
    served = ServedModel(name, str(version), run_id, pipeline, contract, validator, task, classes, fast, reason,
                         dict(tags or {}), signature)
    with _one_thread():
        served.self_check = self_check(served, reference)
    return served


def _one_thread() -> Any:
    """Single-row predictions with many OpenMP threads spend their time starting threads."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    except Exception:  # noqa: BLE001 - only a speed setting
        return contextlib.nullcontext()


def _same(a: np.ndarray, b: np.ndarray, exact: bool) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if exact or a.dtype.kind not in "fc" or b.dtype.kind not in "fc":
        return bool(np.array_equal(a, b))
    return bool(np.allclose(a.astype(float), b.astype(float), rtol=PROBA_TOLERANCE, atol=PROBA_TOLERANCE))


def self_check(m: ServedModel, reference: pd.DataFrame | None) -> dict[str, Any]:
    """Score the version's reference sample the way requests are scored, before it serves anything.

    The full pipeline must reproduce the predictions stored with the reference at training time
    (else LoadError: the artifact does not behave as trained). The fast path must match the full
    pipeline bit for bit, in a batch and row by row; if it does not, it is switched off.
    """
    if reference is None or reference.empty:
        return {"rows": 0, "note": "no reference sample with this version; nothing to check against"}
    inputs = [c for c in m.validator.names if c in reference.columns]
    sample = reference.head(SELF_CHECK_ROWS).reset_index(drop=True)
    records = records_from_frame(sample[inputs])
    try:
        # the null budget is for requests; the training rows are what the model learned from
        batch = m.validator.validate(records, max_rows=len(records) + 1, null_budget=False)
    except RequestError as exc:
        raise LoadError(f"version {m.version} rejects its own reference sample: {exc.message}") from None
    started = time.perf_counter()
    try:
        full = m.score_pipeline(batch)
    except Exception as exc:
        raise LoadError(f"version {m.version} cannot score its reference sample "
                        f"({type(exc).__name__}: {str(exc)[:200]})") from None
    out: dict[str, Any] = {"rows": batch.n}
    if "prediction" in sample.columns:
        stored = sample["prediction"].to_numpy()
        exact = m.task == "classification"
        if not _same(full.predictions, stored, exact):
            raise LoadError(f"version {m.version} does not reproduce the predictions stored with its reference sample")
        out["reproduces_training_predictions"] = True
    if full.probabilities is not None and "prediction_proba" in sample.columns and full.probabilities.shape[1] == 2:
        if not _same(full.probabilities[:, 1], sample["prediction_proba"].to_numpy(), exact=False):
            raise LoadError(f"version {m.version} does not reproduce the probabilities stored with its reference sample")
    if m.fast is not None:
        problem = _check_fast(m, batch, full)
        if problem:
            log.warning("model %s v%s: fast path switched off: %s", m.name, m.version, problem)
            m.fast, m.fast_reason = None, f"full pipeline: fast path switched off ({problem})"
    out["fast_path"] = m.fast is not None
    out["seconds"] = round(time.perf_counter() - started, 3)
    return out


def _check_fast(m: ServedModel, batch: Batch, full: Scored) -> str | None:
    assert m.fast is not None
    try:
        fast = m.score(batch)
    except Exception as exc:  # noqa: BLE001
        return f"batch scoring raised {type(exc).__name__}"
    if not _same(fast.predictions, full.predictions, exact=True) or not (
            (fast.probabilities is None) == (full.probabilities is None)
            and (fast.probabilities is None or _same(fast.probabilities, full.probabilities, exact=True))):
        return "batch predictions differ from the pipeline"
    for i in range(min(SELF_CHECK_SINGLE_ROWS, batch.n)):
        one = Batch({k: [v[i]] for k, v in batch.columns.items()}, 1)
        try:
            a, b = m.score(one), m.score_pipeline(one)
        except Exception as exc:  # noqa: BLE001
            return f"single-row scoring raised {type(exc).__name__}"
        if not _same(a.predictions, b.predictions, exact=True) or (
                a.probabilities is not None and not _same(a.probabilities, b.probabilities, exact=True)):
            return f"single-row prediction {i} differs from the pipeline"
    return None


def _signature(name: str, version: str) -> dict[str, Any] | None:
    try:
        from mlflow.models import get_model_info

        sig = get_model_info(f"models:/{name}/{version}").signature
        return sig.to_dict() if sig is not None else None
    except Exception:  # noqa: BLE001 - the signature is informational
        return None


def resolve_version(name: str, alias: str, tracking_uri: str | None) -> tuple[str, str]:
    """(version, run id) holding `alias`; raises LoadError when there is none or the registry fails."""
    try:
        c = registry.client(tracking_uri)
        mv = c.get_model_version_by_alias(name, alias)
    except Exception as exc:  # noqa: BLE001 - unreachable store, unknown model, missing alias
        raise LoadError(f"cannot resolve {name}@{alias}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    return str(mv.version), mv.run_id


def check_servable(name: str, version: str, tracking_uri: str | None = None) -> str | None:
    """The digest the version's files must have (its seal's); raises Refused when its gate failed, or its
    verdict is not sealed with the gate key, and nobody recorded a sealed override, LoadError when the
    registry cannot say."""
    try:
        mv = registry.client(tracking_uri).get_model_version(name, str(version))
    except Exception as exc:  # noqa: BLE001 - unreachable store, deleted version
        raise LoadError(f"cannot read the tags of {name} v{version}: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    try:
        refusal = registry.refusal_of(mv)  # the verdict's seal is checked too (mlops.registry.verdict)
    except MLOpsError as exc:  # an unreadable gate key
        raise LoadError(str(exc)) from None
    if refusal:
        raise Refused(refusal)
    return registry.served_digest(mv)


def load_served_model(name: str, version: str, tracking_uri: str | None = None, enforce_ranges: bool = True,
                      fast_path: bool = True, digest: str | None = None) -> ServedModel:
    """Load a registered version (model, contract, reference sample) and make it ready to serve; with `digest`,
    only if its files are the ones its sealed verdict names."""
    registry.client(tracking_uri)  # points MLflow at the store
    try:
        bundle = registry.load_bundle(name, str(version), with_reference=True, digest=digest)
    except MLOpsError as exc:
        raise LoadError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - MLflow and skops raise many types
        raise LoadError(f"cannot load {name} v{version}: {type(exc).__name__}: {str(exc)[:300]}") from None
    return build_served_model(bundle.name, bundle.version, bundle.run_id, bundle.model, bundle.contract,
                              bundle.reference, bundle.tags, _signature(name, bundle.version), enforce_ranges,
                              fast_path)
