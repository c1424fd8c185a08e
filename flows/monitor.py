"""Monitoring flow: window -> data quality -> drift -> live quality -> fresh model -> retrain policy -> record
-> (retrain).

Also the `retrain` flow: what a `mlops.retrain.requested` event starts (a deployment trigger, or the
monitor itself when `monitoring.policy.run_training_locally` is on), guarded so that a storm of
requests starts one training.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, get_run_logger, runtime
from prefect.states import Completed, State

from flows.forms import name_part, reason_suffix, run_name
from flows.train import train
from mlops.core.config import load_config
from mlops.core.settings import configure_environment
from mlops.core.tabular import read_options
from mlops.monitoring.policy import clock_at, record_training_finished, should_start_training
from mlops.monitoring.result import DriftSummary, MonitorResult, RetrainOutcome, WindowInfo, mlflow_record
from mlops.monitoring.run import MonitorRun
from mlops.registry.links import mlflow_urls
from mlops.registry.monitoring import report_artifact
from tasks.drift import build_drift_report, detect_drift, prepare_drift_inputs, publish_drift, report_title
from tasks.monitoring import (
    announce_decision,
    apply_retrain_policy,
    assess_live_quality,
    check_window_quality,
    commit_window,
    hand_off_retrain,
    keep_labelled_rows,
    load_training_footprint,
    load_window,
    measure_seen_in_training,
    prepare_training_file,
    publish_decision,
    record_monitoring_run,
    release_window,
    skip_retrain,
    weigh_fresh_model,
)
from tasks.registry import load_champion
from tasks.reporting import outcome_tags, retrain_state, tag_flow_run

NO_REPORT = {"error": "not asked for (html_report off; `mlops monitor --report` builds it)", "html_path": None}


def window_suffix(params: dict[str, Any]) -> str:
    """`-<window>` of a monitor run's name: the file checked (`current_path`), else the window's time (`at`, or
    when the run was due) to the minute, e.g. `monitor-churn-classifier-20260315T1200`."""
    current = params.get("current_path")
    if current:
        return name_part(Path(str(current)).name)
    at = params.get("at")
    when: datetime | None = None
    if isinstance(at, datetime):
        when = at
    elif at:
        try:
            when = datetime.fromisoformat(str(at))
        except ValueError:
            when = None
    if when is None:
        when = runtime.flow_run.scheduled_start_time or datetime.now(UTC)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y%m%dT%H%M")


@flow(name="monitor", log_prints=False, flow_run_name=run_name("monitor", suffix=window_suffix))
def monitor(config_path: str = "configs/default.yaml", current_path: str | None = None,
            labels_path: str | None = None, at: datetime | None = None,
            html_report: bool = True) -> MonitorResult | State:
    """Check the champion against new data and ask for a retrain when the policy says so.

    Current data is the prediction-log window since the last check (each log file is checked by
    exactly one run), or `current_path` (a CSV/Parquet file or folder). `labels_path` (CSV/Parquet
    with `request_id` [+ `request_row`] or the id column, and the target) gives live quality.
    `at` sets the clock every guard reads (None: the wall clock; a replay passes data time).
    `html_report`: also render Evidently's HTML report (the verdict never depends on it; off, the run
    skips Evidently's import and rendering, a few seconds).
    """
    cfg, settings = load_config(config_path), configure_environment()
    mlflow.set_tracking_uri(settings.tracking_uri)
    clock = clock_at(at)
    run = MonitorRun.start(cfg.registry.model_name, config_path, settings.state_dir, settings.reports_dir,
                           settings.monitor_state_path, runtime.flow_run.id)
    run = replace(run, now=clock())
    bundle = load_champion(run.model_name, with_reference=True)
    if bundle is None:
        return _final_state(_no_champion(run))
    window = load_window(run, current_path, settings.prediction_log_dir, cfg.monitoring, read_options(cfg))
    result = MonitorResult("checked" if window.rows else "empty", bundle.name, bundle.version,
                           window=WindowInfo.of(window), monitor_flow_run_id=run.run_id, config_path=run.config_path)
    drift = None
    try:
        if window.rows:
            quality = check_window_quality(window.frame, bundle.contract, cfg.validation.max_quarantine_fraction)
            result.add_quality(quality)
        if result.status == "checked":
            current = quality.good if quality.good is not None else window.frame
            footprint = load_training_footprint(bundle)
            result.seen_in_training = measure_seen_in_training(current, footprint.row_hashes, bundle.version)
            inputs = prepare_drift_inputs(bundle, current)
            result.window.rescored_with_champion = inputs.rescored
            if inputs.reference is not None:
                drift = detect_drift(inputs, cfg.monitoring)
                report = (build_drift_report(inputs, drift, cfg.monitoring, run.report_path(bundle.version, window),
                                             title=report_title(bundle.name, bundle.version, run.window_id(window)))
                          if html_report else dict(NO_REPORT))
                result.drift, result.report_path = DriftSummary.of(drift, report), report.get("html_path")
            live = assess_live_quality(inputs.current, labels_path, bundle, cfg, footprint.slice_metrics, run.policy)
            result.add_live_quality(live)
            result.payoff = weigh_fresh_model(cfg, bundle, live, run.labelled)
            keep_labelled_rows(live, bundle.contract, run.labelled, run.window_id(window))
        result.decision = apply_retrain_policy(run.policy, result.window_summary(), cfg, run.now, bundle.version,
                                               result.live_quality)
        if result.retrain:
            result.training_file = prepare_training_file(cfg, bundle, run.labelled, run.window_id(window),
                                                         run.paths.training, run.stamp)
            if result.training_file.path is None:  # nothing to train on: no retrain is requested
                result.training = skip_retrain(result.training_file, run.policy, clock())
        if result.status != "empty":
            record = mlflow_record(result, drift)
            result.mlflow_run_id, experiment_id = record_monitoring_run(cfg, settings.artifact_root, bundle, record)
            if drift is not None:
                html = report.get("html_path")
                urls = mlflow_urls(run_id=result.mlflow_run_id, experiment_id=experiment_id, model=bundle.name,
                                   version=bundle.version, artifact=report_artifact(html) if html else None,
                                   tracking_uri=settings.tracking_uri)
                publish_drift(bundle.name, bundle.version, drift, report, urls,
                              cfg.monitoring.policy.drift_share_threshold, tracking_uri=settings.tracking_uri,
                              run_id=result.mlflow_run_id)
        result.conclude()
        publish_decision(result)
        result.events = announce_decision(result)
    except BaseException:
        release_window(run, window)
        raise
    commit_window(run, window, result.status, cfg.monitoring.lookback_days)
    if result.retrain_requested and result.training_file is not None:
        result.training = hand_off_retrain(cfg.monitoring.policy)
        if result.training is None:  # training runs here: the retrain flow, as the event would start it
            ran = retrain(config_path=config_path, source_path=result.training_file.path,
                          reason=result.retrain_reason(), at=at, return_state=True)
            outcome = ran.result(raise_on_failure=False)
            result.training = (outcome if isinstance(outcome, RetrainOutcome)
                               else RetrainOutcome("failed", ran.message or "training failed", True))
            publish_decision(result)
    return _final_state(result)


def _final_state(result: MonitorResult) -> State:
    """Completed, named and described by what the check found (`checked v1: drift 0.42, hold`), the run tagged
    with the model, version and outcome."""
    tag_flow_run(*outcome_tags(result.model_name, result.model_version, result.outcome()))
    return Completed(name=result.state_name(), message=result.state_message(), data=result)


def _no_champion(run: MonitorRun) -> MonitorResult:
    msg = (f"no champion for model '{run.model_name}' yet, so there is nothing to monitor; train one first "
           f"(`mlops train --config {run.config_path}`)")
    get_run_logger().warning("%s", msg)
    return MonitorResult("no_champion", run.model_name, message=msg, monitor_flow_run_id=run.run_id,
                         config_path=run.config_path)


@flow(name="retrain", log_prints=False, flow_run_name=run_name("retrain", suffix=reason_suffix))
def retrain(config_path: str = "configs/default.yaml", source_path: str | None = None,
            reason: str = "retrain requested", at: datetime | None = None) -> RetrainOutcome | State:
    """Train a challenger on new data, at most once per request burst.

    The target of `mlops.retrain.requested` (a deployment trigger passes `source_path` from the
    event's `training_file`). Without `source_path`, the file is built from the labelled rows the
    monitor kept (policy.train_on). Guarded by the policy store: a run already training, or a start
    within `policy.dedupe_seconds`, makes this call return without training. The labelled rows it used are
    archived only when the new version is promoted; a call that finds nothing
    to train on frees the slot for the next request. `at`: the guards' clock, as for `monitor`.

    Ends in the training's own state (`Promoted`, `Rejected`, ...), in `Skipped` (Completed, with the reason) when
    there was nothing to train on or another training covers the request, or Failed; tagged and summarised in an
    artifact either way.
    """
    cfg, settings = load_config(config_path), configure_environment()
    if source_path is not None and source_path.strip() in {"", "None", "null"}:
        source_path = None  # an event without a training file, rendered through a trigger's template
    policy, clock = cfg.monitoring.policy, clock_at(at)
    run = MonitorRun.start(cfg.registry.model_name, config_path, settings.state_dir, settings.reports_dir,
                           settings.monitor_state_path, runtime.flow_run.id)
    if not should_start_training(run.policy, clock(), policy.dedupe_seconds, policy.training_lock_minutes, run.run_id,
                                 is_alive=_flow_run_alive):
        holder = run.policy.load().in_flight
        which = f"flow run {holder.run_id}" if holder is not None and holder.run_id else "the training started"
        detail = (f"another training of '{run.model_name}' ({which}) is running or started less than "
                  f"{policy.dedupe_seconds:g} s ago; this request is folded into it")
        get_run_logger().info("Retrain not started: %s", detail)
        return retrain_state(run.model_name, RetrainOutcome("refused", detail), reason)
    succeeded, trained, used = False, False, []
    try:
        if source_path is None:
            bundle = load_champion(run.model_name)
            if bundle is not None:
                file = prepare_training_file(cfg, bundle, run.labelled, None, run.paths.training, run.stamp)
                if file.path is None:
                    get_run_logger().warning("Retrain not started: %s", file.detail)
                    return retrain_state(run.model_name, RetrainOutcome("skipped", file.detail), reason,
                                         champion=bundle.version)
                source_path, used = file.path, file.used
        trained = True
        state = train(config_path=config_path, source_path=source_path, reason=reason, return_state=True)
        succeeded = state.is_completed()
        if not succeeded:
            failed = RetrainOutcome("failed", state.message or "training failed", True, source_path)
            return retrain_state(run.model_name, failed, reason, state)
        outcome = RetrainOutcome.trained(source_path, state.result())
        if outcome.summary and outcome.summary.get("promoted"):  # a rejected model's rows wait for the next retrain
            run.labelled.archive(used or run.labelled_used_by(source_path))
        return retrain_state(run.model_name, outcome, reason, state)
    finally:
        record_training_finished(run.policy, clock(), succeeded, trained)


def _flow_run_alive(run_id: str) -> bool | None:
    """Whether the flow run holding the training slot is still going (None: Prefect cannot say)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(run_id)).state
    except Exception:  # a local run id, or the API away: keep the lock, it expires by itself
        return None
    return None if state is None else not state.is_final()


if __name__ == "__main__":
    configure_environment()
    print(json.dumps(monitor(sys.argv[1] if len(sys.argv) > 1 else "configs/default.yaml").to_dict(), indent=2,
                     default=str))
