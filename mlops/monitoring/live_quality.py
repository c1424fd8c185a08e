"""Live quality: the champion's metrics on a window's labelled rows against its own holdout, slice by slice
when `gate.slices` are configured (a window of one region is compared with that region's holdout
metric, not the overall one), and the holdout slice metrics a version stores at training for that.

What a window is judged against, first that applies: the champion's live baseline (its first labelled
windows, `policy.live_baseline_windows`), or while it forms one, the live baseline of the champion before
it; else the holdout slice by slice; else the overall holdout metric. Live against live is the
comparison that holds on seasonal data: a holdout is one period, windows are others.

Tolerance (`monitoring.policy.quality_tolerance`): in the metric's own points for scores bounded by 1
(roc_auc, f1, accuracy, r2; default 0.05), a share of the baseline for errors (rmse, mae, log_loss;
default 0.2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops.core.config import METRIC_DIRECTION, PipelineConfig
from mlops.core.data import read_table, unlabelled_rows
from mlops.core.errors import DataError
from mlops.core.tabular import ReadOptions
from mlops.serving.predictlog import join_labels
from mlops.training.evaluation import holdout_metrics, metric_value, predict, slice_metrics

if TYPE_CHECKING:
    from mlops.monitoring.policy import LiveBaseline

SLICE_METRICS_ARTIFACT = "evaluation/slice_metrics.json"
# metrics bounded in [0, 1] (r2 at most 1): tolerance is absolute; errors are compared relatively
ABSOLUTE_TOLERANCE_METRICS = frozenset({"roc_auc", "f1", "accuracy", "r2"})
WHAT_COMPARED = {"slices": "holdout slice by slice", "overall": "overall holdout",
                 "live_baseline": "live baseline (its first labelled windows)"}


@dataclass
class LiveQuality:
    """The champion's metrics on the window's labelled rows against its own holdout metrics."""

    status: str  # "ok", "no_labels", "too_few_labels", "labels_unusable"
    labelled_rows: int = 0
    joined_by: str | None = None
    primary_metric: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    tolerance: float = 0.0
    degraded: bool = False
    reason: str = ""
    labelled: pd.DataFrame | None = None
    compared_with: str = "overall"  # or "slices": each slice value against the same slice of the holdout
    tolerance_units: str = ""
    slices: list[dict[str, Any]] = field(default_factory=list)
    slice_gaps: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "labelled"}
        out["metrics"] = {k: (None if not math.isfinite(v) else v) for k, v in self.metrics.items()}
        return out

    def to_markdown(self) -> str:
        if self.status != "ok":
            return f"Live quality: no verdict ({self.reason}).\n"
        rows = "\n".join(
            f"| {m} | {v:.4f} | {self.baseline[m]:.4f} |" if m in self.baseline else f"| {m} | {v:.4f} | n/a |"
            for m, v in self.metrics.items() if math.isfinite(v))
        verdict = "**degraded**" if self.degraded else "within tolerance"
        text = (f"Live quality on {self.labelled_rows:,} labelled rows (joined by `{self.joined_by}`), compared with "
                f"the champion's {WHAT_COMPARED.get(self.compared_with, 'overall holdout')}: "
                f"{verdict}. {self.reason}\n\n| metric | live | champion holdout |\n| --- | --- | --- |\n{rows}\n")
        if self.slices:
            lines = [f"| {s['column']}={s['value']} | {s['rows']:,} | {s['live']:.4f} | {s['holdout']:.4f} | "
                     f"{'beyond the tolerance' if s['degraded'] else 'within'} |" for s in self.slices]
            text += (f"\n| slice | labelled rows | live {self.primary_metric} | holdout {self.primary_metric} | alone |\n"
                     "| --- | --- | --- | --- | --- |\n" + "\n".join(lines) + "\n\nThe verdict weighs each slice "
                     "column's values by their rows in this window.\n")
        return text


def read_labels(path: str | Path, read: ReadOptions | None = None) -> pd.DataFrame:
    """A labels file, read as training reads its data (`read`: the config's ReadOptions)."""
    read = read or ReadOptions()
    return read_table(path, "auto", read.delimiter, list(read.na_values))


def label_key(window: pd.DataFrame, labels: pd.DataFrame, id_column: str | None) -> str:
    """Join by request id when both sides carry it, else by the configured id column."""
    if "request_id" in labels.columns and "request_id" in window.columns:
        return "request_id"
    if id_column and id_column in labels.columns:
        return id_column
    raise DataError(f"the labels have neither 'request_id' nor the id column '{id_column}' to join on "
                    f"(columns: {list(labels.columns)[:10]})")


def labelled_rows(window: pd.DataFrame, labels: pd.DataFrame | None, target: str,
                  id_column: str | None, na_values: Sequence[str] = ()) -> tuple[pd.DataFrame, str | None]:
    """The window's rows that have a label: joined from a labels table, or carried in the window itself.

    A blank target (missing, empty, or one of `na_values`, the config's missing-value markers) is no label:
    the row is left out, as training leaves it out (mlops.core.data.unlabelled_rows)."""
    if labels is None:
        if target in window.columns:
            rows = window.loc[~unlabelled_rows(window[target], na_values)].reset_index(drop=True)
            return rows, "target column in the window"
        return window.iloc[0:0], None
    if target not in labels.columns:
        raise DataError(f"the labels have no target column '{target}'")
    by = label_key(window, labels, id_column)
    keep = [c for c in (by, "request_row", target) if c in labels.columns]
    left = window.drop(columns=[target]) if target in window.columns else window
    joined = join_labels(left, labels[keep], by=by)
    joined = joined.loc[~unlabelled_rows(joined[target], na_values)].reset_index(drop=True)
    return joined, by


DEFAULT_TOLERANCE = {"absolute": 0.05, "relative": 0.2}


def quality_tolerance(metric: str, configured: float | None) -> float:
    """The configured tolerance, else the default for the metric's kind (points for scores, a share for errors)."""
    if configured is not None:
        return configured
    return DEFAULT_TOLERANCE["absolute" if metric in ABSOLUTE_TOLERANCE_METRICS else "relative"]


def tolerance_units(metric: str, tolerance: float) -> str:
    """The tolerance with its units: metric points for bounded scores, a share of the holdout value for errors."""
    if metric in ABSOLUTE_TOLERANCE_METRICS:
        return f"{tolerance:g} {metric} points (absolute)"
    return f"{tolerance:.0%} of the holdout value (relative)"


def degradation(metric: str, live: float, baseline: float, tolerance: float,
                against: str = "holdout") -> tuple[bool, str]:
    """Worse than the holdout by more than the tolerance: absolute for bounded scores, relative for errors."""
    if not (math.isfinite(live) and math.isfinite(baseline)):
        return False, f"{metric} cannot be compared (live {live}, {against} {baseline})"
    higher_better = METRIC_DIRECTION[metric]
    change = live - baseline
    units = tolerance_units(metric, tolerance)
    if metric in ABSOLUTE_TOLERANCE_METRICS:
        worse = -change if higher_better else change
        shown = f"{change:+.4f}"
    else:
        rel = change / abs(baseline) if baseline else (math.inf if change > 0 else 0.0)
        worse = -rel if higher_better else rel
        shown = f"{rel:+.1%}"
    bad = worse > tolerance
    return bad, (f"{metric} {live:.4f} vs {against} {baseline:.4f} ({shown}): "
                 f"{'worse by more than' if bad else 'within'} the tolerance {units}")


# ---------------------------------------------------------------------------------------------
# slices


def holdout_slice_metrics(test: pd.DataFrame, predictions: Any, cfg: PipelineConfig) -> dict[str, Any]:
    """The primary metric on each configured slice of the holdout, stored with the version
    (`SLICE_METRICS_ARTIFACT`) so live quality compares a slice with the same slice."""
    metric = cfg.primary_metric
    y = test[cfg.target].to_numpy()
    out: dict[str, Any] = {"metric": metric, "overall": metric_value(metric, y, predictions), "rows": len(test),
                           "slices": {}}
    for sl in cfg.gate.slices:
        if sl.column in test.columns:
            found = slice_metrics(metric, test, sl.column, y, predictions, sl.min_rows)
            out["slices"][sl.column] = {v: {"metric": m, "rows": n} for v, (m, n) in found.items()}
    if not math.isfinite(out["overall"]):
        out["overall"] = None
    return out


def compare_slices(labelled: pd.DataFrame, y: np.ndarray, predictions: Any, cfg: PipelineConfig,
                   holdout: dict[str, Any], tolerance: float) -> list[dict[str, Any]]:
    """Each slice value with at least `min_rows` labelled rows here and a holdout metric, compared with it."""
    metric = cfg.primary_metric
    out: list[dict[str, Any]] = []
    for sl in cfg.gate.slices:
        stored = (holdout.get("slices") or {}).get(sl.column)
        if not stored or sl.column not in labelled.columns:
            continue
        live = slice_metrics(metric, labelled, sl.column, y, predictions, sl.min_rows)
        for value, (m, n) in live.items():
            if value not in stored or stored[value].get("metric") is None:
                continue
            base = float(stored[value]["metric"])
            bad, why = degradation(metric, m, base, tolerance, against=f"holdout {sl.column}={value}")
            out.append({"column": sl.column, "value": value, "rows": n, "live": m, "holdout": base,
                        "holdout_rows": int(stored[value].get("rows", 0)), "degraded": bad, "reason": why})
    return out


def worse_by(metric: str, live: float, holdout: float) -> float:
    """How much worse live is than holdout in the tolerance's units (negative: better)."""
    change = live - holdout
    if metric not in ABSOLUTE_TOLERANCE_METRICS:
        change /= abs(holdout) or 1.0
    return -change if METRIC_DIRECTION[metric] else change


def slice_gaps(metric: str, comparisons: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per slice column: how much worse the window is than the holdout on the same slices, each slice
    weighted by its rows in the window (a one-value window: that value's gap). Pooling the values
    keeps one small, noisy slice from deciding alone."""
    out: dict[str, dict[str, Any]] = {}
    for c in comparisons:
        entry = out.setdefault(c["column"], {"rows": 0, "values": 0, "gap": 0.0})
        entry["rows"] += c["rows"]
        entry["values"] += 1
        entry["gap"] += c["rows"] * worse_by(metric, c["live"], c["holdout"])
    for entry in out.values():
        entry["gap"] /= entry["rows"]
    return out


def live_quality(labelled: pd.DataFrame, joined_by: str | None, model: Any, cfg: PipelineConfig,
                 baseline_tags: dict[str, str], input_columns: list[str],
                 holdout_slices: dict[str, Any] | None = None,
                 live_baseline: LiveBaseline | None = None) -> LiveQuality:
    """The champion's metrics on labelled window rows, compared with its holdout metrics (version tags).

    With `gate.slices` and the version's holdout slice metrics, each slice value with enough rows is
    compared with the same slice of the holdout, and the window is degraded when, for a slice
    column, the gap weighted by the window's rows exceeds the tolerance; the overall comparison is
    reported but does not decide (a window's mix of slices is not the holdout's). Without them, the
    overall metric decides, against `live_baseline` (the mean of the champion's first labelled windows,
    policy.live_baseline_windows) when there is one, else against the holdout metric.
    """
    metric = cfg.primary_metric
    tol = quality_tolerance(metric, cfg.monitoring.policy.quality_tolerance)
    units = tolerance_units(metric, tol)
    baseline = {k.removeprefix("metric."): float(v) for k, v in baseline_tags.items() if k.startswith("metric.")}
    if joined_by is None:
        return LiveQuality("no_labels", reason="no labels for this window", primary_metric=metric, tolerance=tol,
                           tolerance_units=units)
    n = len(labelled)
    if n < cfg.monitoring.min_labelled_rows:
        return LiveQuality("too_few_labels", n, joined_by, metric, baseline=baseline, tolerance=tol,
                           reason=f"{n} labelled row(s) < min_labelled_rows {cfg.monitoring.min_labelled_rows}",
                           labelled=labelled, tolerance_units=units)
    X = labelled[[c for c in input_columns if c in labelled.columns]]
    y = labelled[cfg.target].to_numpy()
    try:
        predictions = predict(model, X, cfg.task, positive_class=cfg.positive_class)
        metrics = holdout_metrics(cfg.task, y, predictions)
    except (ValueError, TypeError) as exc:
        return LiveQuality("labels_unusable", n, joined_by, metric, baseline=baseline, tolerance=tol,
                           reason=f"the labels cannot be scored ({str(exc).splitlines()[0][:200]})",
                           tolerance_units=units)
    out = LiveQuality("ok", n, joined_by, metric, metrics, baseline, tol, labelled=labelled, tolerance_units=units)
    note, slice_text, comparisons = "", "", []
    if cfg.gate.slices:
        usable = holdout_slices is not None and holdout_slices.get("metric") == metric
        comparisons = compare_slices(labelled, y, predictions, cfg, holdout_slices, tol) if usable else []
        if comparisons:
            out.slices, out.slice_gaps = comparisons, slice_gaps(metric, comparisons)
            slice_text = _slice_text(metric, comparisons, out.slice_gaps, tol, units)
        else:
            note = (" (compared overall: no slice value had enough labelled rows here and a holdout metric)" if usable
                    else " (compared overall: this version stores no holdout slice metrics)")
    if live_baseline is not None:  # live against live: seasons and slice mixes are in both
        out.compared_with = "live_baseline"
        out.degraded, out.reason = degradation(metric, metrics.get(metric, float("nan")), live_baseline.value, tol,
                                               against=live_baseline.label)
        if slice_text:
            out.reason += f"; by slice against the holdout (reported, not deciding): {slice_text}"
        return out
    if comparisons:
        out.compared_with = "slices"
        out.degraded = any(g["gap"] > tol for g in out.slice_gaps.values())
        overall = (f"; overall {metric} {metrics.get(metric, float('nan')):.4f} vs holdout "
                   f"{baseline[metric]:.4f}, not used (this window's mix of slices is not the holdout's)"
                   if metric in baseline else "")
        out.reason = slice_text + overall
        return out
    if metric not in baseline:
        out.reason = f"the champion has no holdout '{metric}' to compare with"
        return out
    out.degraded, out.reason = degradation(metric, metrics.get(metric, float("nan")), baseline[metric], tol)
    out.reason += note
    return out


def _slice_text(metric: str, comparisons: list[dict[str, Any]], gaps: dict[str, dict[str, Any]], tol: float,
                units: str) -> str:
    unit = "" if metric in ABSOLUTE_TOLERANCE_METRICS else "%"
    parts = []
    for column, g in gaps.items():
        size = f"{abs(g['gap']):.4f}" if not unit else f"{abs(g['gap']):.1%}"
        where = (f"{column}={next(c['value'] for c in comparisons if c['column'] == column)}"
                 if g["values"] == 1 else f"{g['values']} values of {column}, weighted by their rows here")
        parts.append(f"{metric} {'worse' if g['gap'] > 0 else 'better'} than the holdout on the same slice "
                     f"({where}) by {size}: {'more than' if g['gap'] > tol else 'within'} the tolerance {units}")
    return "; ".join(parts)
