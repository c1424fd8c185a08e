"""Holdout evaluation: metrics, a paired bootstrap against the champion, per-slice metrics, plots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.config import METRIC_DIRECTION


@dataclass
class Predictions:
    """What a model says on the holdout: labels (or values) and, for classifiers, class probabilities."""

    y_pred: np.ndarray
    proba: np.ndarray | None
    classes: list[Any] | None


def predict(model: Any, X: pd.DataFrame, task: str) -> Predictions:
    y_pred = np.asarray(model.predict(X))
    if task == "classification" and hasattr(model, "predict_proba"):
        return Predictions(y_pred, np.asarray(model.predict_proba(X)), list(model.classes_))
    return Predictions(y_pred, None, None)


# ---- metrics on index sets, vectorised so the bootstrap stays cheap ----------------------------


def _auc_binary(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, with ties averaged."""
    pos = y == 1
    n_pos = int(pos.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(score).rank(method="average").to_numpy()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def metric_value(metric: str, y_true: np.ndarray, p: Predictions) -> float:
    """One metric from true values and predictions (binary and multi-class classification, regression)."""
    from sklearn import metrics as M

    if metric == "rmse":
        return float(np.sqrt(np.mean((y_true.astype(float) - p.y_pred.astype(float)) ** 2)))
    if metric == "mae":
        return float(np.mean(np.abs(y_true.astype(float) - p.y_pred.astype(float))))
    if metric == "r2":
        return float(M.r2_score(y_true, p.y_pred))
    if metric == "accuracy":
        return float(np.mean(y_true == p.y_pred))
    assert p.classes is not None and p.proba is not None
    binary = len(p.classes) == 2
    if metric == "f1":
        if binary:
            return float(M.f1_score(y_true, p.y_pred, pos_label=p.classes[1], zero_division=0))
        return float(M.f1_score(y_true, p.y_pred, average="macro", zero_division=0))
    if metric == "log_loss":
        return float(M.log_loss(y_true, p.proba, labels=p.classes))
    if metric == "roc_auc":
        if binary:
            return _auc_binary((y_true == p.classes[1]).astype(int), p.proba[:, 1])
        present = np.unique(y_true)
        if len(present) < len(p.classes):
            return float("nan")
        return float(M.roc_auc_score(y_true, p.proba, multi_class="ovr", labels=p.classes))
    raise ValueError(f"unknown metric {metric!r}")


def holdout_metrics(task: str, y_true: np.ndarray, p: Predictions) -> dict[str, float]:
    names = ["roc_auc", "f1", "accuracy", "log_loss"] if task == "classification" else ["rmse", "mae", "r2"]
    return {m: metric_value(m, y_true, p) for m in names}


def _subset(p: Predictions, idx: np.ndarray) -> Predictions:
    return Predictions(p.y_pred[idx], None if p.proba is None else p.proba[idx], p.classes)


@dataclass
class BootstrapResult:
    metric: str
    challenger: float
    champion: float
    delta: float  # improvement: positive means the challenger is better, whatever the metric's direction
    ci_low: float
    ci_high: float
    p_worse: float  # bootstrap share of resamples where the challenger is worse
    samples: int


def paired_bootstrap(
    metric: str,
    y_true: np.ndarray,
    challenger: Predictions,
    champion: Predictions,
    samples: int,
    confidence: float,
    seed: int,
) -> BootstrapResult:
    """Resample holdout rows with replacement and score both models on the same rows each time."""
    sign = 1.0 if METRIC_DIRECTION[metric] else -1.0
    rng = np.random.default_rng(seed)
    n = len(y_true)
    deltas = np.empty(samples)
    for b in range(samples):
        idx = rng.integers(0, n, n)
        deltas[b] = sign * (
            metric_value(metric, y_true[idx], _subset(challenger, idx))
            - metric_value(metric, y_true[idx], _subset(champion, idx))
        )
    deltas = deltas[np.isfinite(deltas)]
    alpha = 1.0 - confidence
    c, h = metric_value(metric, y_true, challenger), metric_value(metric, y_true, champion)
    return BootstrapResult(
        metric=metric,
        challenger=c,
        champion=h,
        delta=sign * (c - h),
        ci_low=float(np.quantile(deltas, alpha)) if len(deltas) else float("nan"),
        ci_high=float(np.quantile(deltas, 1 - alpha)) if len(deltas) else float("nan"),
        p_worse=float(np.mean(deltas < 0)) if len(deltas) else float("nan"),
        samples=len(deltas),
    )


def slice_metrics(
    metric: str, frame: pd.DataFrame, column: str, y_true: np.ndarray, p: Predictions, min_rows: int
) -> dict[str, tuple[float, int]]:
    """The metric on each value of a column with at least min_rows rows: {value: (metric, rows)}."""
    out: dict[str, tuple[float, int]] = {}
    values = frame[column].astype(object).where(frame[column].notna(), "<null>").astype(str).to_numpy()
    for v in sorted(set(values)):
        idx = np.flatnonzero(values == v)
        if len(idx) < min_rows:
            continue
        m = metric_value(metric, y_true[idx], _subset(p, idx))
        if np.isfinite(m):
            out[v] = (m, len(idx))
    return out


# ---- plots --------------------------------------------------------------------------------------


def make_plots(task: str, y_true: np.ndarray, p: Predictions, model: Any, X: pd.DataFrame, folder: Path,
               seed: int) -> dict[str, Path]:
    """Confusion matrix or residuals, ROC and PR curves (binary), permutation feature importance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn import metrics as M
    from sklearn.inspection import permutation_importance

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def save(fig: Any, name: str) -> None:
        path = folder / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        out[name] = path

    if task == "classification":
        assert p.classes is not None and p.proba is not None
        fig, ax = plt.subplots(figsize=(4.5, 4))
        M.ConfusionMatrixDisplay.from_predictions(y_true, p.y_pred, labels=p.classes, ax=ax, colorbar=False)
        ax.set_title("Confusion matrix (holdout)")
        save(fig, "confusion_matrix")
        if len(p.classes) == 2:
            yb = (y_true == p.classes[1]).astype(int)
            fig, axes = plt.subplots(1, 2, figsize=(9, 4))
            M.RocCurveDisplay.from_predictions(yb, p.proba[:, 1], ax=axes[0])
            axes[0].set_title("ROC curve")
            M.PrecisionRecallDisplay.from_predictions(yb, p.proba[:, 1], ax=axes[1])
            axes[1].set_title("Precision-recall curve")
            save(fig, "roc_pr_curves")
        scoring = "roc_auc" if len(p.classes) == 2 else "accuracy"
    else:
        resid = y_true.astype(float) - p.y_pred.astype(float)
        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        axes[0].scatter(p.y_pred, resid, s=6, alpha=0.5)
        axes[0].axhline(0, color="k", lw=0.8)
        axes[0].set(xlabel="predicted", ylabel="residual", title="Residuals")
        axes[1].scatter(y_true, p.y_pred, s=6, alpha=0.5)
        lo, hi = float(np.min(y_true)), float(np.max(y_true))
        axes[1].plot([lo, hi], [lo, hi], "k--", lw=0.8)
        axes[1].set(xlabel="actual", ylabel="predicted", title="Predicted vs actual")
        save(fig, "residuals")
        scoring = "r2"

    n = min(len(X), 1500)
    rows = np.random.default_rng(seed).choice(len(X), n, replace=False)
    imp = permutation_importance(model, X.iloc[rows], y_true[rows], scoring=scoring, n_repeats=3,
                                 random_state=seed, n_jobs=1)
    order = np.argsort(imp.importances_mean)[::-1][:20]
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.3 * len(order) + 1)))
    ax.barh([str(X.columns[i]) for i in order][::-1], imp.importances_mean[order][::-1],
            xerr=imp.importances_std[order][::-1])
    ax.set_title(f"Permutation importance ({scoring} drop)")
    save(fig, "feature_importance")
    return out
