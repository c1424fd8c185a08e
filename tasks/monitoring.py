"""Monitoring stage: the window, data quality, rows seen in training, live quality, the retrain policy,
the record (MLflow, events; the decision artifact, made in the flow's body so it belongs to the flow run) and
the retraining file. Thin tasks over mlops.monitoring."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client

from mlops.core import events, rowkeys
from mlops.core.config import MonitoringConfig, PipelineConfig, RetrainPolicyConfig
from mlops.core.contract import DataContract
from mlops.core.errors import DataError
from mlops.core.names import artifact_key
from mlops.core.tabular import ReadOptions, read_options
from mlops.monitoring import live_quality as lq
from mlops.monitoring import retraining
from mlops.monitoring import windows as mon
from mlops.monitoring.footprint import TrainingFootprint, training_footprint
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
from mlops.registry.monitoring import log_monitoring_run
from mlops.registry.versions import ModelBundle
from tasks.common import stage_task


def no_champion(run: MonitorRun) -> MonitorResult:
    """A run that found no champion: said in the log, and the result saying how to get one."""
    result = MonitorResult.without_champion(run.model_name, run.run_id, run.config_path)
    get_run_logger().warning("%s", result.message)
    return result


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


@stage_task("load_training_footprint", io=True)
def load_training_footprint(bundle: ModelBundle) -> TrainingFootprint:
    """The champion's training row hashes and holdout slice metrics (what it stored about its training data)."""
    footprint = training_footprint(bundle.run_id, bundle.version)
    for problem in footprint.unreadable:
        get_run_logger().warning("%s", problem)
    return footprint


@stage_task("measure_seen_in_training")
def measure_seen_in_training(frame: pd.DataFrame, known: rowkeys.RowHashSet | None, version: str) -> SeenInTraining:
    """The share of the window's rows the champion trained on (unknown for versions without row hashes)."""
    seen = SeenInTraining.of(rowkeys.seen_in_training(frame, known, version))
    get_run_logger().info("Seen in training: %s", seen.reason)
    return seen


@stage_task("assess_live_quality")
def assess_live_quality(frame: pd.DataFrame, labels_path: str | None, bundle: ModelBundle,
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
def weigh_fresh_model(cfg: PipelineConfig, bundle: ModelBundle, live: lq.LiveQuality | None,
                      labelled_store: retraining.LabelledStore) -> dict[str, Any] | None:
    """Would a retrain pay? A fresh model scored beside the champion on the window's labels
    (mlops.monitoring.retraining.fresh_model_payoff); call it before this window's labelled rows are kept."""
    record = retraining.fresh_model_payoff(cfg, bundle, live, labelled_store)
    if record is not None:
        get_run_logger().info("Fresh model: %s", record["sentence"])
    return record


@stage_task("prepare_training_file")
def prepare_training_file(cfg: PipelineConfig, bundle: ModelBundle, labelled_store: retraining.LabelledStore,
                          window_id: str | None, folder: Path, stamp: str) -> TrainingFile:
    """Write the file the retrain trains on (policy.train_on); no file when there is nothing new to learn from."""
    file = retraining.training_file(cfg, bundle, labelled_store, window_id, folder, stamp)
    if file.path is not None:
        get_run_logger().info("Retraining file %s: %d rows, %s", file.path, file.rows, file.detail)
    return file


@stage_task("record_monitoring_run", io=True)
def record_monitoring_run(cfg: PipelineConfig, artifact_root: str, bundle: ModelBundle,
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
    return retraining.hand_off(policy)


def flow_run_alive(run_id: str) -> bool | None:
    """Whether the flow run holding the training slot is still going (None: Prefect cannot say)."""
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(run_id)).state
    except Exception:  # a local run id, or the API away: keep the lock, it expires by itself
        return None
    return None if state is None else not state.is_final()
