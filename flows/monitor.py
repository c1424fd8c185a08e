"""Monitoring flow: window -> data quality -> drift -> live quality -> retrain policy -> (retrain).

Also the `retrain` flow: what a `mlops.retrain.requested` event starts (a deployment trigger, or the
monitor itself when `monitoring.policy.run_training_locally` is on), guarded so that a storm of
requests starts one training.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, runtime

from mlops.core.config import load_config
from mlops.core.settings import Settings, configure_environment
from mlops.monitoring import windows as mon
from mlops.monitoring.policy import PolicyStore, WindowSummary, record_training_finished, should_start_training
from mlops.monitoring.retraining import LabelledStore, training_rows


@dataclass(frozen=True)
class MonitorPaths:
    """Where one model's monitoring state lives under the state folder."""

    root: Path
    reports: Path

    @property
    def policy(self) -> Path:
        return self.root / "policy.json"

    @property
    def labelled(self) -> Path:
        return self.root / "labelled"

    @property
    def training(self) -> Path:
        return self.root / "training"


def monitor_paths(settings: Settings, model_name: str) -> MonitorPaths:
    key = mon.slug(model_name)
    return MonitorPaths(settings.state_dir / "monitor" / key, settings.reports_dir / key)


@flow(name="monitor", log_prints=False)
def monitor(config_path: str = "configs/default.yaml", current_path: str | None = None,
            labels_path: str | None = None) -> dict[str, Any]:
    """Check the champion against new data and ask for a retrain when the policy says so.

    Current data is the prediction-log window since the last check (each log file is checked by
    exactly one run), or `current_path` (a CSV/Parquet file or folder). `labels_path` (CSV/Parquet
    with `request_id` [+ `request_row`] or the id column, and the target) gives live quality.
    """
    return run_monitor(config_path, current_path, labels_path)


def run_monitor(config_path: str, current_path: str | None, labels_path: str | None) -> dict[str, Any]:
    import mlflow

    from tasks.monitoring import commit_window, find_monitored_champion, load_window

    cfg = load_config(config_path)
    settings = configure_environment()
    mlflow.set_tracking_uri(settings.tracking_uri)
    logger = get_run_logger()
    name = cfg.registry.model_name
    run_id = str(runtime.flow_run.id or uuid.uuid4())
    now = mon.utc_now()

    bundle = find_monitored_champion(name)
    if bundle is None:
        msg = (f"no champion for model '{name}' yet, so there is nothing to monitor; train one first "
               f"(`mlops train --config {config_path}`)")
        logger.warning("%s", msg)
        return {"status": "no_champion", "message": msg, "model_name": name, "model_version": None,
                "decision": None, "retrain": False, "training": None}

    windows = mon.WindowStore(settings.monitor_state_path)
    mcfg = cfg.monitoring
    window = load_window(name, current_path, settings.prediction_log_dir, windows, run_id, now,
                         mcfg.lookback_days, mcfg.claim_minutes)
    try:
        result, status = _check_window(cfg, str(config_path), settings, bundle, window, labels_path, run_id, now)
    except BaseException:
        if window.claim is not None:
            windows.release(name, window.claim)
        raise
    commit_window(name, windows, window, status, now, mcfg.lookback_days)
    return _maybe_train(cfg, str(config_path), settings, result)


def _check_window(cfg: Any, config_path: str, settings: Settings, bundle: Any, window: mon.Window,
                  labels_path: str | None, run_id: str, now: Any) -> tuple[dict[str, Any], str]:
    from tasks.drift import build_drift_report, detect_drift, publish_drift
    from tasks.monitoring import (
        announce_decision,
        apply_retrain_policy,
        assess_live_quality,
        check_window_quality,
        load_training_footprint,
        measure_seen_in_training,
        prepare_training_file,
        record_monitoring_run,
    )
    from tasks.reporting import mlflow_run_url

    logger = get_run_logger()
    name, version = bundle.name, bundle.version
    paths = monitor_paths(settings, name)
    policy_store = PolicyStore(paths.policy)
    window_id = window.claim.window_id if window.claim else f"{now.strftime('%Y%m%dT%H%M%S')}-{run_id[:8]}"
    result: dict[str, Any] = {
        "status": "checked", "message": "", "model_name": name, "model_version": version,
        "window": window.describe(), "corrupt_files": list(window.corrupt_files), "quality": None, "drift": None,
        "report_path": None, "seen_in_training": None, "seen_in_training_share": None, "live_quality": None, "decision": None, "retrain": False, "events": {},
        "training_file": None, "training": None, "mlflow_run_id": None, "monitor_flow_run_id": run_id,
        "config_path": str(Path(config_path).resolve()),
    }

    # an empty window: no decision, but the policy records that the window was seen
    if window.rows == 0:
        decision = apply_retrain_policy(policy_store, WindowSummary(rows=0), cfg, now)
        result.update(status="empty", decision=decision.to_dict(),
                      message="the window holds no rows" + (f" ({len(window.corrupt_files)} unreadable file(s) skipped)"
                                                            if window.corrupt_files else ""))
        md = mon.decision_markdown(name, version, result["decision"], result["window"])
        result["events"] = announce_decision(name, version, decision, _payload(result), md)
        return result, "empty"

    # data quality first: a structural failure gets no drift verdict and no retrain
    quality = check_window_quality(window.frame, bundle.contract, cfg.validation.max_quarantine_fraction)
    result["quality"] = quality.to_dict()
    tags = {"monitor.source": window.source[:500], "monitor.window_rows": str(window.rows),
            "monitor.window_id": window_id, "monitor.prefect_flow_run_id": run_id,
            "monitor.quality_passed": str(quality.passed).lower()}
    metrics: dict[str, float] = {"window_rows": float(window.rows),
                                 "quarantine_fraction": quality.quarantine_fraction,
                                 "corrupt_files": float(len(window.corrupt_files))}
    texts = {"monitor/quality.json": json.dumps(quality.to_dict(), indent=2),
             "monitor/window.json": json.dumps(result["window"], indent=2, default=str)}
    if not quality.passed:
        summary = WindowSummary(rows=window.rows, quality_failed=True, quality_reason=quality.reason[:500])
        decision = apply_retrain_policy(policy_store, summary, cfg, now)
        result.update(status="quality_failed", decision=decision.to_dict(),
                      message=f"data-quality failure: {quality.reason}")
        tags |= _decision_tags(decision)
        texts["monitor/decision.json"] = json.dumps(result["decision"], indent=2)
        result["mlflow_run_id"], _ = record_monitoring_run(cfg, settings.artifact_root, bundle, tags, metrics, {},
                                                           texts)
        md = mon.decision_markdown(name, version, result["decision"], result["window"]) + "\n" + quality.to_markdown()
        result["events"] = announce_decision(name, version, decision, _payload(result), md)
        return result, "quality_failed"

    # drift on the rows that passed, against the champion's training reference sample
    current = quality.good if quality.good is not None else window.frame
    footprint = load_training_footprint(bundle)
    seen = measure_seen_in_training(current, footprint.row_hashes, version)
    result["seen_in_training"], result["seen_in_training_share"] = seen, seen["share"]
    tags["monitor.seen_in_training_share"] = "unknown" if seen["share"] is None else f"{seen['share']:.4f}"
    if seen["share"] is not None:
        metrics["seen_in_training_share"] = seen["share"]
    texts["monitor/seen_in_training.json"] = json.dumps(seen, indent=2)
    reference = bundle.reference
    drift = None
    report: dict[str, Any] = {"html_path": None, "error": "the champion carries no reference sample"}
    if reference is None:
        logger.warning("Champion v%s carries no reference sample; no drift verdict", version)
    else:
        numeric, categorical = mon.drift_columns(bundle.contract)
        numeric = [c for c in numeric if c in reference.columns]
        categorical = [c for c in categorical if c in reference.columns]
        pred_col = mon.prediction_column(reference)
        if mon.needs_rescoring(current, version, pred_col):
            current = mon.add_predictions(current, bundle.model, cfg.task, bundle.contract.input_columns)
            result["window"]["rescored_with_champion"] = True
        drift = detect_drift(reference, current, numeric, categorical, cfg.monitoring, pred_col)
        html = paths.reports / f"drift-{mon.slug(name)}-v{version}-{window_id}.html"
        report = build_drift_report(reference, current, numeric, categorical, cfg.monitoring, html, pred_col)
        result["drift"] = _drift_summary(drift, report)
        result["report_path"] = report.get("html_path")
        metrics |= {"drift_share": drift.drift_share, "drifted_columns": float(len(drift.drifted_columns)),
                    "dataset_drift": float(drift.dataset_drift)}
        metrics |= {f"drift_score.{c.column}": c.score for c in drift.columns if c.score is not None}
        if drift.prediction is not None and drift.prediction.score is not None:
            metrics[f"drift_score.{drift.prediction.column}"] = drift.prediction.score
        texts["monitor/drift.json"] = json.dumps(drift.to_dict(), indent=2)
        tags |= {"monitor.drift_share": f"{drift.drift_share:.4f}", "monitor.dataset_drift": str(drift.dataset_drift).lower(),
                 "monitor.drifted_columns": ",".join(drift.drifted_columns)[:4900]}

    # live quality when labels arrive; labelled rows are kept for retraining
    live = assess_live_quality(current, labels_path, bundle, cfg, footprint.slice_metrics)
    result["live_quality"] = live.to_dict()
    if live.labelled is not None and len(live.labelled):
        LabelledStore(paths.labelled).save(window_id, training_rows(live.labelled, bundle.contract))
    metrics |= {f"live_{k}": v for k, v in live.metrics.items()}
    metrics["labelled_rows"] = float(live.labelled_rows)
    texts["monitor/live_quality.json"] = json.dumps(live.to_dict(), indent=2)

    summary = WindowSummary(rows=window.rows, drift_share=None if drift is None else drift.drift_share,
                            dataset_drift=bool(drift and drift.dataset_drift), quality_degraded=live.degraded,
                            quality_reason=live.reason if live.degraded else "")
    decision = apply_retrain_policy(policy_store, summary, cfg, now)
    result["decision"] = decision.to_dict()
    result["retrain"] = decision.retrain
    if decision.retrain:
        stamp = f"{now.strftime('%Y%m%dT%H%M%S')}-{run_id[:8]}"
        result["training_file"] = prepare_training_file(cfg, bundle, LabelledStore(paths.labelled), window_id,
                                                        paths.training, stamp)
    tags |= _decision_tags(decision)
    texts["monitor/decision.json"] = json.dumps(result["decision"], indent=2)
    files = {"report": Path(report["html_path"])} if report.get("html_path") else {}
    run_mlflow, exp_id = record_monitoring_run(cfg, settings.artifact_root, bundle, tags, metrics, files, texts)
    result["mlflow_run_id"] = run_mlflow
    if drift is not None:
        publish_drift(name, version, drift, report, mlflow_run_url(settings.tracking_uri, exp_id, run_mlflow))
    md = mon.decision_markdown(name, version, result["decision"], result["window"], seen=seen)
    md += "\n" + quality.to_markdown() + "\n" + live.to_markdown()
    result["events"] = announce_decision(name, version, decision, _payload(result), md)
    result["message"] = ("retrain requested: " + "; ".join(decision.triggers) if decision.retrain
                         else "no retrain: " + decision.reasons[-1])
    return result, "checked"


def _maybe_train(cfg: Any, config_path: str, settings: Settings, result: dict[str, Any]) -> dict[str, Any]:
    """Start the retrain here when the policy said yes and training runs locally; otherwise the event hands off."""
    if not result["retrain"]:
        return result
    logger = get_run_logger()
    policy = cfg.monitoring.policy
    file_info = result["training_file"] or {}
    path = file_info.get("path")
    if not policy.run_training_locally:
        result["training"] = {"status": "requested", "detail": "the mlops.retrain.requested event hands the "
                              "retrain to the training deployment (policy.run_training_locally is off)"}
        return result
    if path is None:
        # nothing to train on: release the slot the decision took, so the next window may ask again
        record_training_finished(PolicyStore(monitor_paths(settings, result["model_name"]).policy), mon.utc_now(),
                                 succeeded=False)
        result["training"] = {"status": "skipped", "detail": file_info.get("detail", "no training file")}
        logger.warning("Retrain not started: %s", result["training"]["detail"])
        return result
    reason = "drift monitor: " + "; ".join(result["decision"]["triggers"])
    result["training"] = retrain(config_path=config_path, source_path=path, reason=reason[:500])
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        mon.decision_markdown(result["model_name"], result["model_version"], result["decision"], result["window"],
                              result["training"]),
        key=f"{mon.slug(result['model_name'])}-monitor-decision", description="Retrain policy decision and training")
    return result


@flow(name="retrain", log_prints=False)
def retrain(config_path: str = "configs/default.yaml", source_path: str | None = None,
            reason: str = "retrain requested") -> dict[str, Any]:
    """Train a challenger on new data, at most once per request burst.

    The target of `mlops.retrain.requested` (a deployment trigger passes `source_path` from the
    event's `training_file`). Without `source_path`, the file is built from the labelled rows the
    monitor kept (policy.train_on). Guarded by the policy store: a run already training, or a start
    within `policy.dedupe_seconds`, makes this call return without training.
    """
    from flows.train import train
    from tasks.monitoring import find_monitored_champion, prepare_training_file

    cfg = load_config(config_path)
    settings = configure_environment()
    logger = get_run_logger()
    if source_path is not None and source_path.strip() in {"", "None", "null"}:
        source_path = None  # an event without a training file, rendered through a trigger's template
    name = cfg.registry.model_name
    policy = cfg.monitoring.policy
    paths = monitor_paths(settings, name)
    store = PolicyStore(paths.policy)
    run_id = str(runtime.flow_run.id or uuid.uuid4())
    if not should_start_training(store, mon.utc_now(), policy.dedupe_seconds, policy.training_lock_minutes, run_id):
        detail = (f"another training of '{name}' is running or started less than {policy.dedupe_seconds:g} s ago; "
                  "this request is folded into it")
        logger.info("Retrain not started: %s", detail)
        return {"started": False, "status": "refused", "detail": detail}
    succeeded = False
    used: list[str] = []
    try:
        if source_path is None:
            bundle = find_monitored_champion(name)
            if bundle is None:
                info: dict[str, Any] = {"path": None, "detail": "no champion yet: training on the config's source"}
            else:
                stamp = f"{mon.utc_now().strftime('%Y%m%dT%H%M%S')}-{run_id[:8]}"
                info = prepare_training_file(cfg, bundle, LabelledStore(paths.labelled), None, paths.training,
                                             stamp)
                if info["path"] is None:
                    logger.warning("Retrain not started: %s", info["detail"])
                    return {"started": False, "status": "skipped", "detail": info["detail"]}
            source_path, used = info["path"], info.get("used", [])
        state = train(config_path=config_path, source_path=source_path, reason=reason, return_state=True)
        succeeded = state.is_completed()
        if not succeeded:
            return {"started": True, "status": "failed", "detail": state.message or "training failed",
                    "source_path": source_path}
        summary = state.result()
        if not used and source_path and Path(source_path).parent == paths.training:
            used = [f.name for f in LabelledStore(paths.labelled).files()]
        LabelledStore(paths.labelled).archive(used)
        return {"started": True, "status": "trained", "source_path": source_path,
                "detail": f"version {summary['version']} {'promoted' if summary['promoted'] else 'not promoted'}",
                "summary": {k: summary[k] for k in ("version", "family", "metrics", "gate_passed", "gate_reasons",
                                                    "promoted", "champion_version", "previous_champion")}}
    finally:
        record_training_finished(store, mon.utc_now(), succeeded)


def _decision_tags(decision: Any) -> dict[str, str]:
    return {"monitor.verdict": decision.verdict, "monitor.retrain": str(decision.retrain).lower(),
            "monitor.reasons": json.dumps(decision.reasons)[:4900]}


def _drift_summary(drift: Any, report: dict[str, Any]) -> dict[str, Any]:
    return {
        "drift_share": drift.drift_share,
        "dataset_drift": drift.dataset_drift,
        "drifted_columns": drift.drifted_columns,
        "scores": {c.column: c.score for c in drift.columns},
        "prediction": None if drift.prediction is None else {
            "column": drift.prediction.column, "score": drift.prediction.score, "drifted": drift.prediction.drifted},
        "sample": {"seed": drift.seed, "reference_rows": drift.reference_sampled_rows,
                   "current_rows": drift.current_sampled_rows},
        "evidently_agreement": report.get("agreement"),
        "report_error": report.get("error"),
    }


def _payload(result: dict[str, Any]) -> dict[str, Any]:
    """What the decision events carry: why, about which version and window, and what to train on."""
    decision = result.get("decision") or {}
    drift = result.get("drift") or {}
    live = result.get("live_quality") or {}
    return {
        "model_name": result["model_name"],
        "model_version": result["model_version"],
        "verdict": decision.get("verdict"),
        "retrain": decision.get("retrain", False),
        "reasons": decision.get("reasons", []),
        "triggers": decision.get("triggers", []),
        "blocks": decision.get("blocks", []),
        "status": result["status"],
        "window": result["window"],
        "drift_share": drift.get("drift_share"),
        "dataset_drift": bool(drift.get("dataset_drift", False)),
        "drifted_columns": drift.get("drifted_columns", []),
        "seen_in_training_share": result.get("seen_in_training_share"),
        "live_quality": {k: live.get(k) for k in ("status", "labelled_rows", "metrics", "degraded",
                                                          "compared_with", "reason")} if live else None,
        "quality_failures": (result.get("quality") or {}).get("failures", []),
        "training_file": (result.get("training_file") or {}).get("path"),
        "config_path": result.get("config_path"),
        "report_path": result.get("report_path"),
        "mlflow_run_id": result.get("mlflow_run_id"),
        "monitor_flow_run_id": result.get("monitor_flow_run_id"),
    }


if __name__ == "__main__":
    import sys

    configure_environment()
    print(json.dumps(monitor(sys.argv[1] if len(sys.argv) > 1 else "configs/default.yaml"), indent=2, default=str))
