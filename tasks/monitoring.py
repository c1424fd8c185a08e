"""Monitoring stage: the window, data quality, rows seen in training, live quality, the retrain policy,
the record (MLflow, events; the decision artifact, made in the flow's body so it belongs to the flow run) and
the retraining file. Thin tasks over mlops.monitoring."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from mlops.core import events, rowkeys
from mlops.core.config import MonitoringConfig, PipelineConfig, RetrainPolicyConfig
from mlops.core.contract import DataContract
from mlops.core.errors import DataError
from mlops.core.names import artifact_key
from mlops.core.tabular import ReadOptions, read_options
from mlops.monitoring import live_quality as lq
from mlops.monitoring import payoff, retraining
from mlops.monitoring import windows as mon
from mlops.monitoring.policy import (
    Decision,
    PolicyStore,
    WindowSummary,
    decide_and_record,
    live_baseline,
    record_training_finished,
    with_live_metric,
)
from mlops.monitoring.result import (
    EventIds,
    MonitoringRecord,
    MonitorResult,
    RetrainOutcome,
    SeenInTraining,
    TrainingFile,
)
from mlops.monitoring.run import MonitorRun
from mlops.registry import versions as registry
from mlops.registry.monitoring import log_monitoring_run
from tasks.common import stage_task


@stage_task("load_window")
def load_window(run: MonitorRun, current_path: str | None, log_dir: Path, cfg: MonitoringConfig,
                read: ReadOptions | None = None) -> mon.Window:
    """A file or folder given by hand (read as training reads its data), or the prediction-log files nobody
    has checked yet (claimed)."""
    logger = get_run_logger()
    if current_path:
        window = mon.read_current(current_path, read)
    else:
        claim = run.windows.claim(run.model_name, log_dir, run.run_id, run.now, cfg.lookback_days, cfg.claim_minutes)
        try:
            frame, corrupt, others = mon.read_log_files(log_dir, claim.files, run.model_name)
        except Exception:
            run.windows.release(run.model_name, claim)
            raise
        window = mon.Window(frame, mon.LOG_SOURCE, claim.files, corrupt, others, claim)
    for f in window.corrupt_files:
        logger.warning("Skipped unreadable file %s; the rest of the window is checked", f)
    logger.info("Window: %d rows from %d file(s) (%s)", window.rows, len(window.files), window.source)
    return window


@stage_task("check_window_quality")
def check_window_quality(frame: pd.DataFrame, contract: DataContract, max_quarantine_fraction: float) -> mon.QualityReport:
    """Great Expectations contract check before any drift verdict; failures are reported, not raised."""
    report = mon.check_quality(frame, contract, max_quarantine_fraction)
    if not report.passed:
        get_run_logger().warning("Data-quality failure, no drift verdict: %s", report.reason[:500])
    return report


@dataclass
class TrainingFootprint:
    """What the champion stored about its training data; None where an older version stored nothing."""

    row_hashes: rowkeys.RowHashSet | None
    slice_metrics: dict[str, Any] | None


@stage_task("load_training_footprint", io=True)
def load_training_footprint(bundle: registry.ModelBundle) -> TrainingFootprint:
    """The champion's training row hashes and holdout slice metrics (artifacts kept since issue 9)."""
    logger = get_run_logger()
    hashes = slices = None
    path = registry.download_artifact(bundle.run_id, rowkeys.HASHES_ARTIFACT)
    if path is not None:
        try:
            hashes = rowkeys.RowHashSet.load(path)
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("Training row hashes of v%s unreadable (%s); overlap unknown", bundle.version, exc)
    path = registry.download_artifact(bundle.run_id, lq.SLICE_METRICS_ARTIFACT)
    if path is not None:
        try:
            slices = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("Holdout slice metrics of v%s unreadable (%s); live quality compared overall",
                           bundle.version, exc)
    return TrainingFootprint(hashes, slices)


@stage_task("measure_seen_in_training")
def measure_seen_in_training(frame: pd.DataFrame, known: rowkeys.RowHashSet | None, version: str) -> SeenInTraining:
    """The share of the window's rows the champion trained on (unknown for versions without row hashes)."""
    seen = SeenInTraining.of(rowkeys.seen_in_training(frame, known, version))
    get_run_logger().info("Seen in training: %s", seen.reason)
    return seen


@stage_task("assess_live_quality")
def assess_live_quality(frame: pd.DataFrame, labels_path: str | None, bundle: registry.ModelBundle,
                        cfg: PipelineConfig, holdout_slices: dict[str, Any] | None = None,
                        store: PolicyStore | None = None) -> lq.LiveQuality:
    """Join labels (by request id or the id column) and compare the champion's live metrics with its live
    baseline (its first labelled windows, kept in the policy `store`) or, until it has one, its holdout,
    slice by slice when gate.slices are configured and the champion stored its holdout slice metrics."""
    logger = get_run_logger()
    labels = None
    if labels_path:
        try:
            labels = lq.read_labels(labels_path, read_options(cfg))
        except DataError as exc:
            logger.warning("Labels not used: %s", exc)
            return lq.LiveQuality("labels_unusable", reason=str(exc), primary_metric=cfg.primary_metric)
    try:
        labelled, by = lq.labelled_rows(frame, labels, cfg.target, bundle.contract.id_column, cfg.na_values)
    except DataError as exc:
        logger.warning("Labels not used: %s", exc)
        return lq.LiveQuality("labels_unusable", reason=str(exc), primary_metric=cfg.primary_metric)
    baseline = (live_baseline(store.load(), bundle.version, cfg.monitoring.policy.live_baseline_windows)
                if store is not None else None)
    live = lq.live_quality(labelled, by, bundle.model, cfg, bundle.tags, bundle.contract.input_columns,
                           holdout_slices, baseline)
    if live.status == "ok":
        logger.info("Live quality on %d labelled rows: %s", live.labelled_rows, live.reason)
    return live


@stage_task("keep_labelled_rows")
def keep_labelled_rows(live: lq.LiveQuality, contract: DataContract, store: retraining.LabelledStore,
                       window_id: str) -> None:
    """Keep the window's labelled rows (as training rows) until a retrain uses them."""
    if live.labelled is not None and len(live.labelled):
        store.save(window_id, retraining.training_rows(live.labelled, contract))


@stage_task("apply_retrain_policy")
def apply_retrain_policy(store: PolicyStore, summary: WindowSummary, cfg: PipelineConfig, now: datetime,
                         version: str | None = None, live: lq.LiveQuality | None = None) -> Decision:
    """The retrain rules under the policy store's lock (so concurrent monitor runs see each other); the
    champion's live metric goes into its live baseline while that is being gathered."""
    with_live_metric(summary, version, live)
    decision = decide_and_record(store, summary, cfg.monitoring.policy, now)
    get_run_logger().info("Retrain policy: %s (%s)", decision.verdict, "; ".join(decision.reasons)[:600])
    return decision


@stage_task("weigh_fresh_model")
def weigh_fresh_model(cfg: PipelineConfig, bundle: registry.ModelBundle, live: lq.LiveQuality | None,
                      labelled_store: retraining.LabelledStore) -> dict[str, Any] | None:
    """Would a retrain pay? When the window's labels judged the champion, a fresh model (its configuration,
    fitted on the labelled history inside its training window) is scored beside it (mlops.monitoring.payoff).
    Call it before this window's labelled rows are kept, so the history holds only earlier windows."""
    if live is None or live.status != "ok" or live.labelled is None or not len(live.labelled):
        return None
    window = retraining.training_rows(live.labelled, bundle.contract)
    original = retraining.load_original(cfg, bundle.tags.get("lineage.data_source"))
    history, _ = retraining.build_training_frame("original_plus_new", original, labelled_store.load(), window,
                                                 bundle.contract, cfg.monitoring.policy.max_training_rows)
    history = payoff.history_in_window(history.drop(columns=[rowkeys.NEW_ROW_COLUMN], errors="ignore"),
                                       registry.training_window(bundle.run_id), cfg.timestamp_column)
    gain = payoff.fresh_gain(bundle.model, history, window, cfg)
    if gain is None:
        return None
    record = gain.record(cfg.primary_metric)
    get_run_logger().info("Fresh model: %s", record["sentence"])
    return record


@stage_task("prepare_training_file")
def prepare_training_file(cfg: PipelineConfig, bundle: registry.ModelBundle, labelled_store: retraining.LabelledStore,
                          window_id: str | None, folder: Path, stamp: str) -> TrainingFile:
    """Write the file the retrain trains on (policy.train_on); no file when there is nothing new to learn from."""
    policy = cfg.monitoring.policy
    new = labelled_store.load()
    window = labelled_store.load(window_id) if window_id else pd.DataFrame()
    used = [f.name for f in labelled_store.files()]
    nothing_new = not len(window) if policy.train_on == "window" else not len(new)
    if nothing_new:
        return TrainingFile(None, 0, policy.train_on,
                            f"no labelled rows to train on (train_on={policy.train_on}); send labels with the "
                            "window (labels file joined by request id or the id column)")
    original = (retraining.load_original(cfg, bundle.tags.get("lineage.data_source"))
                if policy.train_on in {"auto", "original_plus_new", "recent"} else None)
    frame, what = retraining.build_training_frame(policy.train_on, original, new, window, bundle.contract,
                                                  policy.max_training_rows, policy.recent_rows, policy.recent_days)
    path = retraining.write_training_file(frame, folder, stamp)
    get_run_logger().info("Retraining file %s: %d rows, %s", path, len(frame), what)
    new_rows = int(frame[rowkeys.NEW_ROW_COLUMN].sum()) if rowkeys.NEW_ROW_COLUMN in frame.columns else len(frame)
    return TrainingFile(str(path), len(frame), policy.train_on, what, new_rows, used)


@stage_task("record_monitoring_run", io=True)
def record_monitoring_run(cfg: PipelineConfig, artifact_root: str, bundle: registry.ModelBundle,
                          record: MonitoringRecord) -> tuple[str, str]:
    """The MLflow monitoring run, tagged with model name and version; the version points back at it.
    Returns (run id, experiment id)."""
    return log_monitoring_run(cfg.registry.experiment or cfg.name, artifact_root, bundle.name, bundle.version,
                              record.tags, record.metrics, record.files, record.texts)


def publish_decision(result: MonitorResult) -> None:
    """On the flow run (call it from the flow's body): the decision as a markdown artifact; called again after a
    retrain started here, with what became of it."""
    create_markdown_artifact(result.markdown(), key=artifact_key(result.model_name, "monitor-decision"),
                             description=f"Retrain policy decision: {result.state_message(120)}")


@stage_task("announce_decision", io=True)
def announce_decision(result: MonitorResult) -> EventIds:
    """`mlops.monitor.decision` always, `mlops.drift.detected` on dataset drift (what the drift alert listens
    for) and `mlops.retrain.requested` on a yes that can run (never when there was nothing to train on)."""
    name, version, payload = result.model_name, result.model_version, result.event_payload()
    ids = EventIds(decision_event_id=events.emit(events.MONITOR_DECISION, name, payload, version))
    if payload["dataset_drift"]:
        ids.drift_event_id = events.emit(events.DRIFT_DETECTED, name, payload, version)
    if result.retrain_requested:
        ids.retrain_event_id = events.emit(events.RETRAIN_REQUESTED, name, payload, version)
        get_run_logger().info("Emitted %s for %s: %s", events.RETRAIN_REQUESTED, name,
                              "; ".join(result.decision.triggers if result.decision else []))
    return ids


@stage_task("skip_retrain")
def skip_retrain(file: TrainingFile, store: PolicyStore, now: datetime) -> RetrainOutcome:
    """A yes with nothing to train on (no labelled rows): no retrain is requested, and the policy's training slot
    the yes took is released for the next window."""
    record_training_finished(store, now, succeeded=False, trained=False)
    get_run_logger().warning("Retrain not requested: %s", file.detail)
    return RetrainOutcome("skipped", file.detail)


@stage_task("hand_off_retrain")
def hand_off_retrain(policy: RetrainPolicyConfig) -> RetrainOutcome | None:
    """Who trains after a yes that can run: the training deployment (the event hands it over), or None: this
    flow, here and now."""
    if not policy.run_training_locally:
        return RetrainOutcome("requested", "the mlops.retrain.requested event hands the retrain to the training "
                              "deployment (policy.run_training_locally is off)")
    return None


@stage_task("release_window")
def release_window(run: MonitorRun, window: mon.Window) -> None:
    """Give a failed run's claimed log files back, so the next run checks them."""
    if window.claim is not None:
        run.windows.release(run.model_name, window.claim)


@stage_task("commit_window")
def commit_window(run: MonitorRun, window: mon.Window, status: str, lookback_days: float) -> None:
    """Mark the window's log files checked (corrupt ones as corrupt) so no later run reads them again."""
    if window.claim is not None:
        run.windows.commit(run.model_name, window.claim, run.now, rows=window.rows, newest=window.newest(),
                           corrupt=window.corrupt_files, status=status, lookback_days=lookback_days)
    else:
        run.windows.record(run.model_name, {"at": run.now.isoformat(), "source": window.source, "rows": window.rows,
                                            "corrupt_files": len(window.corrupt_files), "status": status})
