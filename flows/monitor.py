"""Monitoring flow: window -> data quality -> drift -> live quality -> fresh model -> retrain policy -> record
-> (retrain).

Also the `retrain` flow: what a `mlops.retrain.requested` event starts (a deployment trigger, or the
monitor itself when `monitoring.policy.run_training_locally` is on), guarded so that a storm of
requests starts one training.

Wiring only: the window's claim (committed when the check ends, given back when it fails) is
`MonitorRun.checking`, the training slot (claimed, then released either way) `policy.training_slot`, what
each status means `MonitorResult`; the text and links the UI shows are built in mlops.monitoring.report
and mlops.registry.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from prefect import get_run_logger, runtime
from prefect.states import Completed, State

from flows.forms import (
    DEFAULT_CONFIG,
    LEFT_OUT,
    ConfigPath,
    OptionalPath,
    OptionalTime,
    form_flow,
    given,
    given_path,
    name_part,
    reason_suffix,
    run_name,
)
from flows.train import train
from mlops.core.config import load_config
from mlops.core.settings import configure_environment
from mlops.core.tabular import read_options
from mlops.monitoring.policy import clock_at, training_slot
from mlops.monitoring.report import report_not_asked_for, report_title
from mlops.monitoring.result import MonitorResult, RetrainOutcome, WindowInfo, mlflow_record
from mlops.monitoring.run import MonitorRun
from tasks.drift import build_drift_report, detect_drift, prepare_drift_inputs, publish_drift
from tasks.monitoring import (
    announce_decision,
    apply_retrain_policy,
    assess_live_quality,
    check_window_quality,
    flow_run_alive,
    hand_off_retrain,
    keep_labelled_rows,
    load_training_footprint,
    load_window,
    measure_seen_in_training,
    no_champion,
    prepare_training_file,
    publish_decision,
    record_monitoring_run,
    skip_retrain,
    weigh_fresh_model,
)
from tasks.registry import load_champion
from tasks.reporting import outcome_tags, retrain_state, tag_flow_run


def window_suffix(params: dict[str, Any]) -> str:
    """`-<window>` of a monitor run's name: the file checked (`current_path`), else the window's time (`at`, or
    when the run was due) to the minute, e.g. `monitor-churn-classifier-20260315T1200`."""
    current = given(params.get("current_path"))
    if current:
        return name_part(Path(str(current)).name)
    at = given(params.get("at"))
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


@form_flow(name="monitor", log_prints=False, flow_run_name=run_name("monitor", suffix=window_suffix))
def monitor(config_path: ConfigPath = DEFAULT_CONFIG, current_path: OptionalPath = LEFT_OUT,
            labels_path: OptionalPath = LEFT_OUT, at: OptionalTime = LEFT_OUT,
            html_report: bool = True) -> MonitorResult | State:
    """Check the champion against new data and ask for a retrain when the policy says so.

    Args:
        config_path: The pipeline config (YAML) whose champion to check.
        current_path: A CSV/Parquet file or folder to check; leave it empty for the prediction-log window since
            the last check (each log file is checked by exactly one run).
        labels_path: A CSV/Parquet file with `request_id` [+ `request_row`] or the id column, and the target:
            the window's labels, for live quality; leave it empty when none arrived.
        at: The clock every guard reads; leave it empty for the wall clock (a replay passes data time).
        html_report: Also render Evidently's HTML report (the verdict never depends on it; off, the run skips
            Evidently's import and rendering, a few seconds).
    """
    cfg, settings = load_config(config_path), configure_environment()
    mlflow.set_tracking_uri(settings.tracking_uri)
    clock = clock_at(given(at))
    run = MonitorRun.start(cfg.registry.model_name, config_path, settings.state_dir, settings.reports_dir,
                           settings.monitor_state_path, runtime.flow_run.id, now=clock())
    bundle = load_champion(run.model_name, with_reference=True)
    if bundle is None:
        return _final_state(no_champion(run))
    window = load_window(run, given(current_path), settings.prediction_log_dir, cfg.monitoring, read_options(cfg))
    result = MonitorResult.of_window(bundle.name, bundle.version, WindowInfo.of(window), run.run_id, run.config_path)
    drift = report = None
    with run.checking(window, result, cfg.monitoring.lookback_days):  # given back if the check fails
        if result.has_rows:
            quality = check_window_quality(window.frame, bundle.contract, cfg.validation.max_quarantine_fraction)
            result.add_quality(quality)
        if result.quality_passed:
            current = quality.good if quality.good is not None else window.frame
            footprint = load_training_footprint(bundle)
            result.seen_in_training = measure_seen_in_training(current, footprint.row_hashes, bundle.version)
            inputs = prepare_drift_inputs(bundle, current)
            result.window.rescored_with_champion = inputs.rescored
            if inputs.reference is not None:
                drift = detect_drift(inputs, cfg.monitoring)
                report = (build_drift_report(inputs, drift, cfg.monitoring, run.report_path(bundle.version, window),
                                             title=report_title(bundle.name, bundle.version, run.window_id(window)))
                          if html_report else report_not_asked_for())
                result.add_drift(drift, report)
            live = assess_live_quality(inputs.current, given(labels_path), bundle, cfg, footprint.slice_metrics,
                                       run.policy)
            result.add_live_quality(live)
            result.payoff = weigh_fresh_model(cfg, bundle, live, run.labelled)
            keep_labelled_rows(live, bundle.contract, run.labelled, run.window_id(window))
        result.decision = apply_retrain_policy(run.policy, result.window_summary(), cfg, run.now, bundle.version,
                                               result.live_quality)
        if result.retrain:
            result.training_file = prepare_training_file(cfg, bundle, run.labelled, run.window_id(window),
                                                         run.paths.training, run.stamp)
            if result.training_path is None:  # nothing to train on: no retrain is requested
                result.training = skip_retrain(result.training_file, run.policy, clock())
        if result.has_rows:
            result.mlflow_run_id, experiment_id = record_monitoring_run(cfg, settings.artifact_root, bundle,
                                                                        mlflow_record(result, drift))
            if drift is not None and report is not None:
                publish_drift(bundle.name, bundle.version, drift, report, cfg.monitoring.policy.drift_share_threshold,
                              tracking_uri=settings.tracking_uri, run_id=result.mlflow_run_id,
                              experiment_id=experiment_id)
        result.conclude()
        publish_decision(result)
        result.events = announce_decision(result)
    if result.retrain_requested:
        result.training = hand_off_retrain(cfg.monitoring.policy)  # the training deployment, through the event
        if result.training is None:  # or training runs here: the retrain flow, as the event would start it
            ran = retrain(config_path=config_path, source_path=result.training_path, reason=result.retrain_reason(),
                          at=given(at), return_state=True)
            result.training = RetrainOutcome.of_run(ran.result(raise_on_failure=False), ran.message)
            publish_decision(result)
    return _final_state(result)


def _final_state(result: MonitorResult) -> State:
    """Completed, named and described by what the check found (`checked v1: drift 0.42, hold`), the run tagged
    with the model, version and outcome."""
    tag_flow_run(*outcome_tags(result.model_name, result.model_version, result.outcome()))
    return Completed(name=result.state_name(), message=result.state_message(), data=result)


@form_flow(name="retrain", log_prints=False, flow_run_name=run_name("retrain", suffix=reason_suffix))
def retrain(config_path: ConfigPath = DEFAULT_CONFIG, source_path: OptionalPath = LEFT_OUT,
            reason: str = "retrain requested", at: OptionalTime = LEFT_OUT) -> RetrainOutcome | State:
    """Train a challenger on new data, at most once per request burst.

    The target of `mlops.retrain.requested`. Guarded by the policy store: a run already training, or a start
    within `policy.dedupe_seconds`, makes this call return without training. The labelled rows it used are
    archived only when the new version is promoted; a call that finds nothing to train on frees the slot for
    the next request.

    Ends in the training's own state (`Promoted`, `Rejected`, ...), in `Skipped` (Completed, with the reason) when
    there was nothing to train on or another training covers the request, or Failed; tagged and summarised in an
    artifact either way.

    Args:
        config_path: The pipeline config (YAML) whose model to retrain.
        source_path: The file to train on (a deployment trigger passes the event's `training_file`); leave it
            empty to build it from the labelled rows the monitor kept (policy.train_on).
        reason: Why; recorded on the training run and the version, and part of the run's name.
        at: The guards' clock, as for `monitor`; leave it empty for the wall clock.
    """
    cfg, settings = load_config(config_path), configure_environment()
    source = given_path(source_path)  # an event without a training file renders as the text "None"
    run = MonitorRun.start(cfg.registry.model_name, config_path, settings.state_dir, settings.reports_dir,
                           settings.monitor_state_path, runtime.flow_run.id)
    used: list[str] = []
    with training_slot(run.policy, clock_at(given(at)), cfg.monitoring.policy, run.run_id, run.model_name,
                       is_alive=flow_run_alive) as slot:
        if not slot.granted:
            get_run_logger().info("Retrain not started: %s", slot.refusal)
            return retrain_state(run.model_name, RetrainOutcome("refused", slot.refusal), reason)
        if source is None:
            bundle = load_champion(run.model_name)
            if bundle is not None:
                file = prepare_training_file(cfg, bundle, run.labelled, None, run.paths.training, run.stamp)
                if file.path is None:
                    get_run_logger().warning("Retrain not started: %s", file.detail)
                    return retrain_state(run.model_name, RetrainOutcome("skipped", file.detail), reason,
                                         champion=bundle.version)
                source, used = file.path, file.used
        slot.trained = True
        state = train(config_path=config_path, source_path=source, reason=reason, return_state=True)
        slot.succeeded = state.is_completed()
        if not slot.succeeded:
            failed = RetrainOutcome("failed", state.message or "training failed", True, source)
            return retrain_state(run.model_name, failed, reason, state)
        outcome = RetrainOutcome.trained(source, state.result())
        if outcome.promoted:  # a rejected model's rows wait for the next retrain
            run.labelled.archive(used or run.labelled_used_by(source))
        return retrain_state(run.model_name, outcome, reason, state)


if __name__ == "__main__":
    configure_environment()
    print(json.dumps(monitor(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_CONFIG).to_dict(), indent=2,
                     default=str))
