"""Drift stage: the window ready for comparison, the fast sampled verdict, the Evidently HTML report on the
same sample (reusing the verdict: drift is computed once per run), and their Prefect artifacts."""

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
from mlops.monitoring.report import evidently_report
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
                       html_path: Path) -> dict[str, Any]:
    """Evidently's report on the same sample and methods as `drift` (not computed again); a report that
    cannot be built is noted, not fatal."""
    assert inputs.reference is not None, "the report needs the champion's reference sample"
    try:
        return evidently_report(inputs.reference, inputs.current, inputs.numeric, inputs.categorical, cfg, html_path,
                                inputs.prediction_column, drift=drift)
    except DataError as exc:
        get_run_logger().warning("No Evidently report for this window: %s", exc)
        return {"error": str(exc), "html_path": None}
    except Exception as exc:  # noqa: BLE001 - the verdict stands without the HTML; say why it is missing
        get_run_logger().warning("The Evidently report failed (%s: %s); the drift verdict stands",
                                 type(exc).__name__, str(exc)[:300])
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "html_path": None}


@stage_task("publish_drift", io=True)
def publish_drift(model_name: str, version: str, drift: DriftResult, report: dict[str, Any],
                  mlflow_url: str | None) -> None:
    """A markdown artifact with the drifted columns and scores; links to the HTML report and the MLflow run."""
    html = report.get("html_path")
    where = f"Evidently report: `{html}`" if html else f"Evidently report: not built ({report.get('error')})"
    if html and "agreement" in report:
        where += f" (Evidently agrees with the fast engine on {report['agreement']:.0%} of columns)"
    md = f"# Drift: {model_name} v{version}\n\n{drift.to_markdown()}\n{where}\n"
    if mlflow_url:
        md += f"\nMLflow monitoring run: {mlflow_url}\n"
    create_markdown_artifact(md, key=artifact_key(model_name, "drift-summary"), description="Drifted columns with scores")
    if html:
        create_link_artifact(Path(html).resolve().as_uri(), link_text=f"Evidently drift report ({model_name} v{version})",
                             key=artifact_key(model_name, "drift-report"),
                             description="The HTML report saved under the state folder")
    if mlflow_url:
        create_link_artifact(mlflow_url, link_text="MLflow monitoring run", key=artifact_key(model_name, "monitoring-run"))
