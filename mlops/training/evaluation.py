"""Holdout evaluation: metrics, a paired bootstrap against the champion, per-slice metrics, plots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.config import METRIC_DIRECTION
from mlops.core.errors import DataError


@dataclass
class Predictions:
    """What a model says on the holdout: labels (or values) and, for classifiers, class probabilities.

    `positive` is the class binary f1 and roc_auc score as positive; None means the larger label.
    """

    y_pred: np.ndarray
    proba: np.ndarray | None
    classes: list[Any] | None
    positive: Any = None

    def subset(self, rows: np.ndarray | slice) -> Predictions:
        """The predictions for the rows `rows` selects (a mask, indices or a slice)."""
        return Predictions(self.y_pred[rows], None if self.proba is None else self.proba[rows], self.classes,
                           self.positive)

    @property
    def positive_index(self) -> int:
        """Column of `proba` holding the positive class (binary classification)."""
        assert self.classes is not None
        return 1 if self.positive is None else self.classes.index(self.positive)


def positive_label(classes: Sequence[Any], configured: Any = None) -> Any:
    """The positive class of a binary target: the configured label, else 1 / True for 0/1 or boolean
    labels, else the larger label; a configured value that is not a label is a DataError."""
    labels = list(classes)
    if configured is None:
        return labels[-1]  # sorted labels: 1 for 0/1, True for booleans, else the larger label
    for label in labels:  # exact match first (1 == True in Python, so 1 and True match each other)
        if type(label) is type(configured) and label == configured:
            return label
    for label in labels:
        if label == configured or str(label) == str(configured):
            return label
    raise DataError(f"positive_class {configured!r} is not one of the target's labels "
                    f"{[_plain(v) for v in labels]}; set positive_class to one of them")


def describe_positive(classes: Sequence[Any], configured: Any = None) -> str:
    """One sentence saying which class binary metrics treat as positive, and why."""
    pos = positive_label(classes, configured)
    if configured is not None:
        why = "set by positive_class"
    elif {_plain(v) for v in classes} <= {0, 1}:
        why = "the default for 0/1 or boolean labels; set positive_class to change it"
    else:
        why = "the default: the larger label; set positive_class to change it"
    return f"binary f1 and roc_auc score {_plain(pos)!r} as the positive class ({why})"


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def predict(model: Any, X: pd.DataFrame, task: str, positive_class: Any = None) -> Predictions:
    """The model's predictions; for a binary classifier `positive_class` (None: the larger label)
    picks the class binary metrics score as positive."""
    y_pred = np.asarray(model.predict(X))
    if task == "classification" and hasattr(model, "predict_proba"):
        classes = list(model.classes_)
        positive = positive_label(classes, positive_class) if len(classes) == 2 else None
        return Predictions(y_pred, np.asarray(model.predict_proba(X)), classes, positive)
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
            return float(M.f1_score(y_true, p.y_pred, pos_label=p.classes[p.positive_index], zero_division=0))
        return float(M.f1_score(y_true, p.y_pred, average="macro", zero_division=0))
    if metric == "log_loss":
        return float(M.log_loss(y_true, p.proba, labels=p.classes))
    if metric == "roc_auc":
        if binary:
            k = p.positive_index
            return _auc_binary((y_true == p.classes[k]).astype(int), p.proba[:, k])
        present = np.unique(y_true)
        if len(present) < len(p.classes):
            return float("nan")
        return float(M.roc_auc_score(y_true, p.proba, multi_class="ovr", labels=p.classes))
    raise ValueError(f"unknown metric {metric!r}")


def holdout_metrics(task: str, y_true: np.ndarray, p: Predictions, positive_class: Any = None) -> dict[str, float]:
    """Every metric of the task; `positive_class` (None: the one `p` carries) is the binary positive class."""
    if positive_class is not None and p.classes is not None and len(p.classes) == 2:
        p = replace(p, positive=positive_label(p.classes, positive_class))
    names = ["roc_auc", "f1", "accuracy", "log_loss"] if task == "classification" else ["rmse", "mae", "r2"]
    return {m: metric_value(m, y_true, p) for m in names}


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
            metric_value(metric, y_true[idx], challenger.subset(idx))
            - metric_value(metric, y_true[idx], champion.subset(idx))
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


def slice_label(value: Any) -> str:
    """How a slice value is named: integer-valued numbers without a trailing `.0`, missing as `<null>`."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)) or value is pd.NA:
        return "<null>"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(_plain(value))


def slice_labels(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The slice label of every row of a column (see slice_label)."""
    codes, uniques = pd.factorize(frame[column], use_na_sentinel=False)
    names = np.array([slice_label(u) for u in uniques] or [""], dtype=object)
    return names[codes]


def _slices(frame: pd.DataFrame, column: str, min_rows: int) -> list[tuple[str, np.ndarray]]:
    values = slice_labels(frame, column)
    out = []
    for v in sorted(set(values)):
        idx = np.flatnonzero(values == v)
        if len(idx) >= min_rows:
            out.append((v, idx))
    return out


def slice_metrics(
    metric: str, frame: pd.DataFrame, column: str, y_true: np.ndarray, p: Predictions, min_rows: int
) -> dict[str, tuple[float, int]]:
    """The metric on each value of a column with at least min_rows rows: {value: (metric, rows)}."""
    out: dict[str, tuple[float, int]] = {}
    for v, idx in _slices(frame, column, min_rows):
        m = metric_value(metric, y_true[idx], p.subset(idx))
        if np.isfinite(m):
            out[v] = (m, len(idx))
    return out


def trivial_metric(metric: str, y_true: np.ndarray, classes: Sequence[Any] | None = None,
                   positive: Any = None) -> float:
    """The metric of the best constant prediction made knowing these rows' labels: what a model must beat
    to be of any use on them (roc_auc 0.5, the majority rate, r2 0, the rows' own spread for rmse/mae)."""
    if metric == "roc_auc":
        return 0.5
    if metric in {"r2", "rmse", "mae"}:
        y = y_true.astype(float)
        if metric == "r2":
            return 0.0
        if metric == "rmse":
            return float(np.std(y))
        return float(np.mean(np.abs(y - np.median(y))))
    labels, counts = np.unique(y_true, return_counts=True)
    share = counts / counts.sum()
    if metric == "accuracy":
        return float(share.max())
    if metric == "log_loss":
        return float(-(share * np.log(share)).sum())
    if metric == "f1":  # predict one class for every row: f1 of that class is 2p/(1+p)
        f1 = dict(zip(labels.tolist(), (2 * share / (1 + share)).tolist(), strict=True))
        all_classes = list(classes) if classes is not None else labels.tolist()
        if len(all_classes) == 2:
            pos = all_classes[-1] if positive is None else positive
            return float(f1.get(pos, 0.0))
        return float(max(f1.values()) / len(all_classes))
    raise ValueError(f"unknown metric {metric!r}")


def slice_baselines(
    metric: str, frame: pd.DataFrame, column: str, y_true: np.ndarray, min_rows: int,
    classes: Sequence[Any] | None = None, positive: Any = None,
) -> dict[str, float]:
    """The trivial within-slice baseline (see trivial_metric) on each slice slice_metrics reports."""
    return {v: trivial_metric(metric, y_true[idx], classes, positive) for v, idx in _slices(frame, column, min_rows)}


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
            k = p.positive_index
            yb = (y_true == p.classes[k]).astype(int)
            fig, axes = plt.subplots(1, 2, figsize=(9, 4))
            M.RocCurveDisplay.from_predictions(yb, p.proba[:, k], ax=axes[0])
            axes[0].set_title(f"ROC curve (positive: {_plain(p.classes[k])})")
            M.PrecisionRecallDisplay.from_predictions(yb, p.proba[:, k], ax=axes[1])
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
