"""Drift stage: the fast sampled verdict, the Evidently HTML report on the same sample, and their Prefect artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NONE

from mlops.core.config import MonitoringConfig
from mlops.core.errors import DataError
from mlops.monitoring.drift import DriftResult, compute_drift, evidently_report
from mlops.monitoring.windows import slug


@task(name="detect_drift", cache_policy=NONE)
def detect_drift(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
                 cfg: MonitoringConfig, prediction_column: str | None) -> DriftResult:
    """Per-column drift of the window against the champion's reference sample, plus prediction drift."""
    result = compute_drift(reference, current, numeric, categorical, cfg, prediction_column)
    get_run_logger().info("Drift share %.2f (%d of %d columns): %s", result.drift_share, len(result.drifted_columns),
                          result.evaluated_columns, ", ".join(result.drifted_columns) or "none")
    return result


@task(name="build_drift_report", cache_policy=NONE)
def build_drift_report(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
                       cfg: MonitoringConfig, html_path: Path, prediction_column: str | None) -> dict[str, Any]:
    """Evidently's report on the same sample and methods; a report that cannot be built is noted, not fatal."""
    try:
        return evidently_report(reference, current, numeric, categorical, cfg, html_path, prediction_column)
    except DataError as exc:
        get_run_logger().warning("No Evidently report for this window: %s", exc)
        return {"error": str(exc), "html_path": None}
    except Exception as exc:  # noqa: BLE001 - the verdict stands without the HTML; say why it is missing
        get_run_logger().warning("The Evidently report failed (%s: %s); the drift verdict stands",
                                 type(exc).__name__, str(exc)[:300])
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "html_path": None}


@task(name="publish_drift", cache_policy=NONE)
def publish_drift(model_name: str, version: str, drift: DriftResult, report: dict[str, Any],
                  mlflow_url: str | None) -> None:
    """A markdown artifact with the drifted columns and scores; links to the HTML report and the MLflow run."""
    key = slug(model_name)
    html = report.get("html_path")
    where = f"Evidently report: `{html}`" if html else f"Evidently report: not built ({report.get('error')})"
    if html and "agreement" in report:
        where += f" (Evidently agrees with the fast engine on {report['agreement']:.0%} of columns)"
    md = f"# Drift: {model_name} v{version}\n\n{drift.to_markdown()}\n{where}\n"
    if mlflow_url:
        md += f"\nMLflow monitoring run: {mlflow_url}\n"
    create_markdown_artifact(md, key=f"{key}-drift-summary", description="Drifted columns with scores")
    if html:
        create_link_artifact(Path(html).resolve().as_uri(), link_text=f"Evidently drift report ({model_name} v{version})",
                             key=f"{key}-drift-report", description="The HTML report saved under the state folder")
    if mlflow_url:
        create_link_artifact(mlflow_url, link_text="MLflow monitoring run", key=f"{key}-monitoring-run")
