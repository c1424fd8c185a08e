"""The Evidently drift report: Evidently's DataDriftPreset on the same seeded sample and with the same
per-column methods and thresholds as the fast engine (mlops.monitoring.drift), saved as HTML, with
Evidently's own verdicts and how far they agree; and Evidently's automatic methods on full frames, the
named baseline of bench/bench_drift.py. Evidently is imported only when a report is built.

Also the drift summary a person reads in the Prefect UI: the verdict, which threshold decides, and where the
HTML report is (its page on the MLflow monitoring run, or how to open MLflow without a server).
"""

from __future__ import annotations

import html as html_lib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlops.core.config import MonitoringConfig
from mlops.core.errors import DataError
from mlops.monitoring.drift import DriftResult, Kind, compute_drift, sample_frames
from mlops.registry.links import mlflow_ui_command, mlflow_urls
from mlops.registry.monitoring import report_artifact

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

_HEAD = re.compile(r"<head(\s[^>]*)?>", re.IGNORECASE)
_BODY = re.compile(r"<body(\s[^>]*)?>", re.IGNORECASE)
_BANNER_STYLE = ("font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;padding:12px 24px;"
                 "background:#f4f6f8;border-bottom:1px solid #d0d7de;color:#1f2328")


def titled_html(html: str, title: str, subtitle: str = "") -> str:
    """Evidently's standalone HTML with a `<title>` and a small header banner naming what was checked (Evidently
    0.7 writes neither); the text is escaped. A page without <head> and <body> gets both in front."""
    t, sub = html_lib.escape(title), html_lib.escape(subtitle)
    banner = (f'<header id="mlops-report-title" style="{_BANNER_STYLE}"><h1 style="font-size:20px;margin:0">{t}</h1>'
              + (f'<p style="font-size:13px;margin:6px 0 0">{sub}</p>' if sub else "") + "</header>")
    head, body = _HEAD.search(html), _BODY.search(html)
    if head is None or body is None:  # not Evidently's page shape: title and banner in front
        return f"<title>{t}</title>\n{banner}\n{html}"
    return (f"{html[:head.end()]}\n<title>{t}</title>{html[head.end():body.end()]}\n{banner}"
            f"{html[body.end():]}")


def drift_report_subtitle(cfg: MonitoringConfig) -> str:
    """What the report's verdict means for a retrain: the policy's threshold decides, Evidently's is informational."""
    return (f"The retrain is decided by the retrain policy's drift_share_threshold "
            f"{cfg.policy.drift_share_threshold:g} (and, when labels judged the window, by live quality); "
            f"Evidently's dataset-drift verdict below, at monitoring.drift_share {cfg.drift_share:g}, is informational.")


def _evidently_verdicts(snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    """Per-column score, method, threshold and drift verdict from a run with include_tests=True."""
    raw = snapshot.dict()
    out: dict[str, dict[str, Any]] = {}
    for m in raw["metrics"]:
        conf = m["config"]
        if conf.get("type") == "evidently:metric_v2:ValueDrift":
            out[conf["column"]] = {
                "score": float(m["value"]),
                "method": conf.get("method"),
                "threshold": conf.get("threshold"),
                "drifted": None,
            }
    for t in raw["tests"]:
        params = t.get("metric_config", {}).get("params", {})
        if params.get("type") == "evidently:metric_v2:ValueDrift" and params.get("column") in out:
            out[params["column"]]["drifted"] = str(getattr(t["status"], "value", t["status"])) == "FAIL"
    return out


def _run_evidently(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    drift_share: float,
    per_column_method: dict[str, str] | None = None,
    per_column_threshold: dict[str, float] | None = None,
    prediction: tuple[str, Kind, str, float] | None = None,
) -> Snapshot:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    num, cat = list(numeric), list(categorical)
    metrics: list[Any] = [
        DataDriftPreset(
            columns=num + cat,
            drift_share=drift_share,
            per_column_method=per_column_method or None,
            per_column_threshold=per_column_threshold or None,
        )
    ]
    if prediction is not None:
        name, kind, method, threshold = prediction
        (num if kind == "numeric" else cat).append(name)
        metrics.append(ValueDrift(column=name, method=method, threshold=threshold))
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    report = Report(metrics, include_tests=True)
    return report.run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )


def evidently_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    cfg: MonitoringConfig,
    html_path: Path,
    prediction_column: str | None = None,
    drift: DriftResult | None = None,
    title: str | None = None,
    subtitle: str = "",
) -> dict[str, Any]:
    """Evidently's DataDriftPreset on the same sample and with the same per-column methods as
    `compute_drift`; saves the HTML report (titled with `title` and `subtitle` when a title is given, see
    `titled_html`) and returns Evidently's verdicts.

    Columns empty on one side are left out (Evidently refuses them) and listed under `skipped`.
    `agreement` is the share of columns where Evidently's verdict equals the fast engine's. Pass the
    engine's `drift` for these frames when it is already computed, so a monitor run computes it once.
    """
    ours = drift if drift is not None else compute_drift(reference, current, numeric, categorical, cfg,
                                                         prediction_column)
    wanted = [*numeric, *categorical] + ([prediction_column] if prediction_column else [])
    ref_s, cur_s = sample_frames(reference, current, wanted, cfg)

    report_num, report_cat, methods, thresholds = [], [], {}, {}
    for c in ours.columns:
        if not c.evaluated:
            continue
        as_category = c.kind == "categorical" or c.discrete
        (report_cat if as_category else report_num).append(c.column)
        methods[c.column], thresholds[c.column] = c.method, c.threshold
    pred = None
    p = ours.prediction
    if p is not None and p.evaluated:
        pred_kind: Kind = "categorical" if p.kind == "categorical" or p.discrete else "numeric"
        pred = (p.column, pred_kind, p.method, p.threshold)

    keep = [*report_num, *report_cat] + ([pred[0]] if pred else [])
    if not report_num and not report_cat:
        raise DataError("no listed column has values on both the reference and the current side; "
                        "no drift report can be built for this window")
    snapshot = _run_evidently(
        ref_s[keep], cur_s[keep], report_num, report_cat, cfg.drift_share,
        methods, thresholds, pred,
    )
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    if title:
        html_path.write_text(titled_html(snapshot.get_html_str(as_iframe=False), title, subtitle), encoding="utf-8")
    else:
        snapshot.save_html(str(html_path))

    verdicts = _evidently_verdicts(snapshot)
    feature_verdicts = {c: verdicts[c] for c in [*report_num, *report_cat] if c in verdicts}
    n_drifted = sum(bool(v["drifted"]) for v in feature_verdicts.values())
    share = n_drifted / len(feature_verdicts) if feature_verdicts else 0.0
    agree = [feature_verdicts[c.column]["drifted"] == c.drifted for c in ours.columns if c.column in feature_verdicts]
    return {
        "columns": feature_verdicts,
        "prediction": verdicts.get(p.column) if pred and p is not None else None,
        "drift_share": share,
        "dataset_drift": bool(feature_verdicts) and share >= cfg.drift_share,
        "drifted_columns": [c for c, v in feature_verdicts.items() if v["drifted"]],
        "skipped": ours.skipped_columns,
        "agreement": sum(agree) / len(agree) if agree else 1.0,
        "seed": cfg.seed,
        "reference_sampled_rows": len(ref_s),
        "current_sampled_rows": len(cur_s),
        "html_path": str(html_path),
    }


def evidently_full_baseline(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    drift_share: float = 0.5,
) -> dict[str, Any]:
    """Evidently's DataDriftPreset with its automatic methods on the full, unsampled frames.

    The named baseline for bench/bench_drift.py; no HTML is rendered.
    """
    snapshot = _run_evidently(reference, current, numeric, categorical, drift_share)
    verdicts = _evidently_verdicts(snapshot)
    n_drifted = sum(bool(v["drifted"]) for v in verdicts.values())
    share = n_drifted / len(verdicts) if verdicts else 0.0
    return {
        "columns": verdicts,
        "drift_share": share,
        "dataset_drift": bool(verdicts) and share >= drift_share,
        "drifted_columns": [c for c, v in verdicts.items() if v["drifted"]],
    }


# ---- the drift summary in the Prefect UI --------------------------------------------------------------------


def report_not_asked_for() -> dict[str, Any]:
    """What stands for the HTML report when a run did not ask for one (the verdict never depends on it)."""
    return {"error": "not asked for (html_report off; `mlops monitor --report` builds it)", "html_path": None}


def report_title(model_name: str, version: str, window_id: str) -> str:
    """The Evidently report's heading: which model version and window it checked."""
    return f"Drift report: {model_name} v{version}, window {window_id}"


def drift_links(tracking_uri: str | None, run_id: str | None, experiment_id: str | None, model_name: str,
                version: str, html_path: str | None) -> dict[str, str] | None:
    """The MLflow pages of a check (`mlflow_urls`: the monitoring run, the report on it, the version), None when
    MLflow runs without a server."""
    return mlflow_urls(run_id=run_id, experiment_id=experiment_id, model=model_name, version=version,
                       artifact=report_artifact(html_path) if html_path else None, tracking_uri=tracking_uri)


def drift_markdown(model_name: str, version: str, drift: DriftResult, report: dict[str, Any],
                   urls: dict[str, str] | None, policy_threshold: float | None = None,
                   tracking_uri: str | None = None, run_id: str | None = None) -> str:
    """The drift summary artifact: the verdict and which threshold decides, the drifted columns, and where the
    HTML report is (its MLflow page, or how to open it without a tracking server)."""
    html = report.get("html_path")
    if not html:
        where = f"Evidently report: not built ({report.get('error')})"
    elif urls and urls.get("artifact"):
        where = f"Evidently report: [open it in MLflow]({urls['artifact']})"
    else:
        where = f"Evidently report: on the MLflow monitoring run under `{report_artifact(html)}` (local copy `{html}`)"
    if html and "agreement" in report:
        where += f"; Evidently agrees with the fast engine on {report['agreement']:.0%} of columns"
    md = f"# Drift: {model_name} v{version}\n\n{drift.to_markdown(policy_threshold)}\n{where}\n"
    if urls and urls.get("run"):
        md += f"\n[MLflow monitoring run]({urls['run']})\n"
    elif run_id:
        md += (f"\nMLflow monitoring run `{run_id}`; MLflow runs without a server here, open it with "
               f"`{mlflow_ui_command(_uri(tracking_uri))}`\n")
    return md


def report_fallback_markdown(model_name: str, version: str, html_path: str, tracking_uri: str | None,
                             run_id: str | None) -> str:
    """Where the Evidently report is when MLflow runs without a server (no page a browser could open)."""
    uri = _uri(tracking_uri)
    run = f" `{run_id}`" if run_id else ""
    return (f"# Evidently drift report: {model_name} v{version}\n\nThe report is stored on the MLflow monitoring "
            f"run{run} under `{report_artifact(html_path)}`. MLflow runs without a server here (store `{uri}`), so "
            f"there is no page to link to. Open the MLflow UI with\n\n```\n{mlflow_ui_command(uri)}\n```\n\n"
            f"then browse to http://127.0.0.1:5000, open the run and its `{report_artifact(html_path)}` artifact.\n\n"
            f"Local copy (on the machine that ran the monitor): `{html_path}`\n")


def _uri(tracking_uri: str | None) -> str:
    if tracking_uri:
        return tracking_uri
    import mlflow

    return str(mlflow.get_tracking_uri())
