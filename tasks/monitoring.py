"""Monitoring stage: the champion, the window, data quality, live quality, the retrain policy, the
record (MLflow, Prefect artifacts, events) and the retraining file. Thin tasks over mlops.monitoring."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from mlops.core import rowkeys
from mlops.core.config import PipelineConfig
from mlops.core.contract import DataContract
from mlops.core.errors import DataError
from mlops.monitoring import live_quality as lq
from mlops.monitoring import retraining
from mlops.monitoring import windows as mon
from mlops.monitoring.policy import Decision, PolicyStore, WindowSummary, decide_and_record
from mlops.registry import versions as registry

RETRAIN_EVENT = "mlops.retrain.requested"
DRIFT_DETECTED = "mlops.drift.detected"
DECISION_EVENT = "mlops.monitor.decision"


@task(name="find_monitored_champion", cache_policy=NONE)
def find_monitored_champion(model_name: str) -> registry.ModelBundle | None:
    """The champion with its contract and training reference sample, or None before the first promotion."""
    if registry.get_version_by_alias(model_name, registry.CHAMPION) is None:
        return None
    return registry.load_bundle(model_name, registry.CHAMPION, with_reference=True)


@task(name="load_window", cache_policy=NONE)
def load_window(model_name: str, current_path: str | None, log_dir: Path, store: mon.WindowStore, run_id: str,
                now: datetime, lookback_days: float, claim_minutes: float) -> mon.Window:
    """A file or folder given by hand, or the prediction-log files nobody has checked yet (claimed)."""
    logger = get_run_logger()
    if current_path:
        window = mon.read_current(current_path)
    else:
        claim = store.claim(model_name, log_dir, run_id, now, lookback_days, claim_minutes)
        try:
            frame, corrupt, others = mon.read_log_files(log_dir, claim.files, model_name)
        except Exception:
            store.release(model_name, claim)
            raise
        window = mon.Window(frame, mon.LOG_SOURCE, claim.files, corrupt, others, claim)
    for f in window.corrupt_files:
        logger.warning("Skipped unreadable file %s; the rest of the window is checked", f)
    logger.info("Window: %d rows from %d file(s) (%s)", window.rows, len(window.files), window.source)
    return window


@dataclass
class TrainingFootprint:
    """What the champion stored about its training data; None where an older version stored nothing."""

    row_hashes: rowkeys.RowHashSet | None
    slice_metrics: dict[str, Any] | None


@task(name="load_training_footprint", cache_policy=NONE)
def load_training_footprint(bundle: registry.ModelBundle) -> TrainingFootprint:
    """The champion's training row hashes and holdout slice metrics (artifacts kept since issue 9)."""
    logger = get_run_logger()
    hashes = slices = None
    path = registry._download(bundle.run_id, rowkeys.HASHES_ARTIFACT)
    if path is not None:
        try:
            hashes = rowkeys.RowHashSet.load(path)
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("Training row hashes of v%s unreadable (%s); overlap unknown", bundle.version, exc)
    path = registry._download(bundle.run_id, lq.SLICE_METRICS_ARTIFACT)
    if path is not None:
        try:
            slices = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("Holdout slice metrics of v%s unreadable (%s); live quality compared overall",
                           bundle.version, exc)
    return TrainingFootprint(hashes, slices)


@task(name="measure_seen_in_training", cache_policy=NONE)
def measure_seen_in_training(frame: pd.DataFrame, known: rowkeys.RowHashSet | None, version: str) -> dict[str, Any]:
    """The share of the window's rows the champion trained on (unknown for versions without row hashes)."""
    seen = rowkeys.seen_in_training(frame, known, version)
    get_run_logger().info("Seen in training: %s", seen["reason"])
    return seen


@task(name="check_window_quality", cache_policy=NONE)
def check_window_quality(frame: pd.DataFrame, contract: DataContract, max_quarantine_fraction: float) -> mon.QualityReport:
    """Great Expectations contract check before any drift verdict; failures are reported, not raised."""
    report = mon.check_quality(frame, contract, max_quarantine_fraction)
    if not report.passed:
        get_run_logger().warning("Data-quality failure, no drift verdict: %s", report.reason[:500])
    return report


@task(name="assess_live_quality", cache_policy=NONE)
def assess_live_quality(frame: pd.DataFrame, labels_path: str | None, bundle: registry.ModelBundle,
                        cfg: PipelineConfig, holdout_slices: dict[str, Any] | None = None) -> lq.LiveQuality:
    """Join labels (by request id or the id column) and compare the champion's live metrics with its holdout,
    slice by slice when gate.slices are configured and the champion stored its holdout slice metrics."""
    logger = get_run_logger()
    labels = None
    if labels_path:
        try:
            labels = lq.read_labels(labels_path)
        except DataError as exc:
            logger.warning("Labels not used: %s", exc)
            return lq.LiveQuality("labels_unusable", reason=str(exc), primary_metric=cfg.primary_metric)
    try:
        labelled, by = lq.labelled_rows(frame, labels, cfg.target, bundle.contract.id_column)
    except DataError as exc:
        logger.warning("Labels not used: %s", exc)
        return lq.LiveQuality("labels_unusable", reason=str(exc), primary_metric=cfg.primary_metric)
    live = lq.live_quality(labelled, by, bundle.model, cfg, bundle.tags, bundle.contract.input_columns,
                           holdout_slices)
    if live.status == "ok":
        logger.info("Live quality on %d labelled rows: %s", live.labelled_rows, live.reason)
    return live


@task(name="apply_retrain_policy", cache_policy=NONE)
def apply_retrain_policy(store: PolicyStore, summary: WindowSummary, cfg: PipelineConfig, now: datetime) -> Decision:
    """The retrain rules under the policy store's lock (so concurrent monitor runs see each other)."""
    decision = decide_and_record(store, summary, cfg.monitoring.policy, now)
    get_run_logger().info("Retrain policy: %s (%s)", decision.verdict, "; ".join(decision.reasons)[:600])
    return decision


@task(name="prepare_training_file", cache_policy=NONE)
def prepare_training_file(cfg: PipelineConfig, bundle: registry.ModelBundle, labelled_store: retraining.LabelledStore,
                          window_id: str | None, folder: Path, stamp: str) -> dict[str, Any]:
    """Write the file the retrain trains on (policy.train_on); no file when there is nothing new to learn from."""
    policy = cfg.monitoring.policy
    new = labelled_store.load()
    window = labelled_store.load(window_id) if window_id else pd.DataFrame()
    used = [f.name for f in labelled_store.files()]
    nothing_new = not len(window) if policy.train_on == "window" else not len(new)
    if nothing_new:
        return {"path": None, "rows": 0, "used": [], "train_on": policy.train_on,
                "detail": f"no labelled rows to train on (train_on={policy.train_on}); send labels with the "
                          "window (labels file joined by request id or the id column)"}
    original = (retraining.load_original(cfg, bundle.tags.get("lineage.data_source"))
                if policy.train_on == "original_plus_new" else None)
    frame, what = retraining.build_training_frame(policy.train_on, original, new, window, bundle.contract,
                                                  policy.max_training_rows)
    path = retraining.write_training_file(frame, folder, stamp)
    get_run_logger().info("Retraining file %s: %d rows, %s", path, len(frame), what)
    new_rows = int(frame[rowkeys.NEW_ROW_COLUMN].sum()) if rowkeys.NEW_ROW_COLUMN in frame.columns else len(frame)
    return {"path": str(path), "rows": len(frame), "new_rows": new_rows, "used": used, "train_on": policy.train_on,
            "detail": what}


@task(name="record_monitoring_run", cache_policy=NONE)
def record_monitoring_run(cfg: PipelineConfig, artifact_root: str, bundle: registry.ModelBundle,
                          tags: dict[str, str], metrics: dict[str, float], files: dict[str, Path],
                          texts: dict[str, str]) -> tuple[str, str]:
    """The MLflow monitoring run, tagged with model name and version; the version points back at it."""
    return mon.log_to_mlflow(cfg.registry.experiment or cfg.name, artifact_root, bundle.name, bundle.version,
                             tags, metrics, files, texts)


@task(name="announce_decision", cache_policy=NONE)
def announce_decision(model_name: str, version: str, decision: Decision, payload: dict[str, Any],
                      markdown: str) -> dict[str, str | None]:
    """A markdown artifact with the decision, `mlops.monitor.decision` always, `mlops.retrain.requested` on yes."""
    from prefect.events import emit_event

    create_markdown_artifact(markdown, key=f"{mon.slug(model_name)}-monitor-decision",
                             description="Retrain policy decision with its reasons")
    resource = {"prefect.resource.id": f"mlops.model.{model_name}", "prefect.resource.name": model_name}
    related = [{"prefect.resource.id": f"mlops.model.{model_name}.version.{version}",
                "prefect.resource.role": "model-version", "prefect.resource.name": f"{model_name} v{version}"}]
    body = json.loads(json.dumps(payload, default=str))
    out: dict[str, str | None] = {}
    ev = emit_event(DECISION_EVENT, resource=resource, related=related, payload=body)
    out["decision_event_id"] = str(ev.id) if ev else None
    if body.get("dataset_drift"):
        # what the drift alert listens for
        ev = emit_event(DRIFT_DETECTED, resource=resource, related=related, payload=body)
        out["drift_event_id"] = str(ev.id) if ev else None
    if decision.retrain:
        ev = emit_event(RETRAIN_EVENT, resource=resource, related=related, payload=body)
        out["retrain_event_id"] = str(ev.id) if ev else None
        get_run_logger().info("Emitted %s for %s: %s", RETRAIN_EVENT, model_name, "; ".join(decision.triggers))
    return out


@task(name="commit_window", cache_policy=NONE)
def commit_window(model_name: str, store: mon.WindowStore, window: mon.Window, status: str, now: datetime,
                  lookback_days: float) -> None:
    """Mark the window's log files checked (corrupt ones as corrupt) so no later run reads them again."""
    if window.claim is not None:
        store.commit(model_name, window.claim, now, rows=window.rows, newest=window.newest(),
                     corrupt=window.corrupt_files, status=status, lookback_days=lookback_days)
    else:
        store.record(model_name, {"at": now.isoformat(), "source": window.source, "rows": window.rows,
                                  "corrupt_files": len(window.corrupt_files), "status": status})
