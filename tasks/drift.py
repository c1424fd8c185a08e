"""Drift stage: the window ready for comparison, the fast sampled verdict, the Evidently HTML report on the
same sample (reusing the verdict: drift is computed once per run), and their Prefect artifacts (made in the
flow's body, so they belong to the flow run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from mlops.core.config import MonitoringConfig
from mlops.core.errors import DataError
from mlops.core.names import artifact_key
from mlops.monitoring.drift import DriftResult, compute_drift
from mlops.monitoring.report import (
    drift_links,
    drift_markdown,
    drift_report_subtitle,
    evidently_report,
    report_fallback_markdown,
)
from mlops.monitoring.windows import DriftInputs, drift_inputs
from mlops.registry.versions import ModelBundle
from tasks.common import stage_task


@stage_task("prepare_drift_inputs")
def prepare_drift_inputs(bundle: ModelBundle, current: pd.DataFrame) -> DriftInputs:
    """The champion's reference sample and the window, rescored with the champion when the log's outputs
    are another version's; no reference sample means no drift verdict."""
    inputs = drift_inputs(current, bundle.reference, bundle.contract, bundle.model, bundle.version)
    if inputs.reference is None:
        get_run_logger().warning("Champion v%s carries no reference sample; no drift verdict", bundle.version)
    return inputs


@stage_task("detect_drift")
def detect_drift(inputs: DriftInputs, cfg: MonitoringConfig) -> DriftResult:
    """Per-column drift of the window against the champion's reference sample, plus prediction drift."""
    assert inputs.reference is not None, "drift needs the champion's reference sample"
    result = compute_drift(inputs.reference, inputs.current, inputs.numeric, inputs.categorical, cfg,
                           inputs.prediction_column)
    get_run_logger().info("Drift share %.2f (%d of %d columns): %s", result.drift_share, len(result.drifted_columns),
                          result.evaluated_columns, ", ".join(result.drifted_columns) or "none")
    return result


@stage_task("build_drift_report")
def build_drift_report(inputs: DriftInputs, drift: DriftResult, cfg: MonitoringConfig,
                       html_path: Path, title: str | None = None) -> dict[str, Any]:
    """Evidently's report on the same sample and methods as `drift` (not computed again), headed with `title`
    and which threshold decides the retrain; a report that cannot be built is noted, not fatal."""
    assert inputs.reference is not None, "the report needs the champion's reference sample"
    try:
        return evidently_report(inputs.reference, inputs.current, inputs.numeric, inputs.categorical, cfg, html_path,
                                inputs.prediction_column, drift=drift, title=title,
                                subtitle=drift_report_subtitle(cfg) if title else "")
    except DataError as exc:
        get_run_logger().warning("No Evidently report for this window: %s", exc)
        return {"error": str(exc), "html_path": None}
    except Exception as exc:  # noqa: BLE001 - the verdict stands without the HTML; say why it is missing
        get_run_logger().warning("The Evidently report failed (%s: %s); the drift verdict stands",
                                 type(exc).__name__, str(exc)[:300])
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "html_path": None}


def publish_drift(model_name: str, version: str, drift: DriftResult, report: dict[str, Any],
                  policy_threshold: float | None = None, *, tracking_uri: str | None = None,
                  run_id: str | None = None, experiment_id: str | None = None) -> None:
    """On the flow run (call it from the flow's body): the drift summary, a link to the Evidently report's page
    on the MLflow monitoring run `run_id` (without a server, a note on how to open it) and a link to that run."""
    html = report.get("html_path")
    urls = drift_links(tracking_uri, run_id, experiment_id, model_name, version, html)
    create_markdown_artifact(drift_markdown(model_name, version, drift, report, urls, policy_threshold,
                                            tracking_uri, run_id),
                             key=artifact_key(model_name, "drift-summary"),
                             description=f"Drift share {drift.drift_share:.2f}: drifted columns with scores, and "
                                         "which threshold decides the retrain")
    if html and urls and urls.get("artifact"):
        create_link_artifact(urls["artifact"], link_text=f"Evidently drift report ({model_name} v{version})",
                             key=artifact_key(model_name, "drift-report"),
                             description="The HTML report on the MLflow monitoring run, shown in MLflow's UI")
    elif html:
        create_markdown_artifact(report_fallback_markdown(model_name, version, html, tracking_uri, run_id),
                                 key=artifact_key(model_name, "drift-report"),
                                 description="Where the Evidently report is and how to open MLflow without a server")
    if urls and urls.get("run"):
        create_link_artifact(urls["run"], link_text=f"MLflow monitoring run ({model_name} v{version})",
                             key=artifact_key(model_name, "monitoring-run"),
                             description="The monitoring run in the MLflow UI: metrics, decision, report")
