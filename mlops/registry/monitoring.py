"""The MLflow record of a monitor check: one run per checked window in `<experiment>-monitoring`, linked
both ways with the model version it checked (the run tagged and described with the version, the version
tagged with the run) and with the Prefect flow run that made it."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd

from mlops.registry.links import mlflow_routes, mlflow_urls, prefect_flow_run_url
from mlops.registry.versions import ensure_ml_experiment

REPORT_FOLDER = "report"  # the monitoring run's artifact folder holding the Evidently HTML report
PREFECT_RUN_TAG = "monitor.prefect_flow_run_id"  # set by mlops.monitoring.result.mlflow_record
TAG_LIMIT = 4900
# the version tags pointing at its latest monitoring run
LAST_RUN_TAGS = ("monitoring.last_run_id", "monitoring.last_experiment_id", "monitoring.last_run_url",
                 "monitoring.last_checked_at", "monitoring.last_verdict", "monitoring.last_drift_share")


def report_artifact(html_path: str | Path) -> str:
    """Where the monitoring run keeps a report file (its artifact path), for links to it."""
    return f"{REPORT_FOLDER}/{Path(html_path).name}"


def monitoring_run_name(model_name: str, version: str, window_id: str | None) -> str:
    """`monitor-<model>-v<version>[-<window>]`: what was checked, in the runs table."""
    return f"monitor-{model_name}-v{version}" + (f"-{window_id}" if window_id else "")


def monitoring_description(model_name: str, version: str, tags: dict[str, str], prefect_url: str | None) -> str:
    """The run's description (markdown): the version checked (a link to its page), the verdict, the flow run."""
    routes = mlflow_routes(model=model_name, version=version)
    lines = [f"Monitor check of [{model_name} version {version}]({routes['model_version']}) on window "
             f"`{tags.get('monitor.window_id') or '?'}` ({tags.get('monitor.window_rows', '?')} rows): "
             f"**{tags.get('monitor.verdict', '?')}**, retrain {tags.get('monitor.retrain', '?')}."]
    if tags.get("monitor.drift_share"):
        lines.append(f"Drift share {tags['monitor.drift_share']}; the drift report is under `{REPORT_FOLDER}/`.")
    run_id = tags.get(PREFECT_RUN_TAG) or ""
    if prefect_url:
        lines.append(f"Prefect flow run: [{run_id}]({prefect_url})")
    elif run_id:
        lines.append(f"Prefect flow run: `{run_id}`")
    return "\n\n".join(lines)


def log_monitoring_run(experiment: str, artifact_root: str, model_name: str, version: str, tags: dict[str, str],
                       metrics: dict[str, float], files: dict[str, Path], texts: dict[str, str]) -> tuple[str, str]:
    """One MLflow run per monitor check in `<experiment>-monitoring` with its metrics, files and texts; the
    run is tagged and described with the version it checked, the version tagged with the run (id, and URL
    with a tracking server). Returns (run id, experiment id)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    c = MlflowClient()
    exp_id = ensure_ml_experiment(f"{experiment}-monitoring", artifact_root)
    flow_run_id = tags.get(PREFECT_RUN_TAG) or None
    prefect_url = prefect_flow_run_url(flow_run_id)
    all_tags = {"mlops.stage": "monitoring", "model_name": model_name, "model_version": str(version),
                "mlflow.source.name": "prefect flow: monitor", "mlflow.source.type": "JOB", **tags,
                "mlflow.note.content": monitoring_description(model_name, str(version), tags, prefect_url)}
    if prefect_url:
        all_tags["prefect.flow_run_url"] = prefect_url
    run = c.create_run(exp_id, run_name=monitoring_run_name(model_name, str(version), tags.get("monitor.window_id")),
                       tags={k: str(v)[:TAG_LIMIT] for k, v in all_tags.items()})
    rid = run.info.run_id
    now = int(time.time() * 1000)
    finite = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and math.isfinite(float(v))]
    for i in range(0, len(finite), 900):
        c.log_batch(rid, metrics=finite[i:i + 900])
    for folder, path in files.items():
        c.log_artifact(rid, str(path), folder)
    for rel, text in texts.items():
        c.log_text(rid, text, rel)
    c.set_terminated(rid)
    urls = mlflow_urls(run_id=rid, experiment_id=exp_id) or {}
    values = (rid, exp_id, urls.get("run", ""), pd.Timestamp.now(tz="UTC").isoformat(), tags.get("monitor.verdict", ""),
              tags.get("monitor.drift_share", ""))
    for key, value in zip(LAST_RUN_TAGS, values, strict=True):
        c.set_model_version_tag(model_name, str(version), key, str(value))
    return rid, exp_id
