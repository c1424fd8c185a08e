"""The backtest's yardstick: what other schedules would have scored, so a policy is judged against the best
of them in hindsight, never only against a baseline it chose.

Families of models: retraining on all history (tuned at every window) and on the last k periods of it
(the same tuned configuration fitted on that window). For each family the model trained after window j
is scored on every later window (one prediction over all of them, `score_row`), which gives both the fixed schedules
(retrain every window: model j-1 on window j) and, by dynamic programming over keep/retrain, the
hindsight-optimal schedule for a given retrain cost (`optimal_schedule`). Pure: no Prefect, no MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.config import METRIC_DIRECTION, PipelineConfig
from mlops.training.evaluation import metric_value, predict


@dataclass
class Family:
    """Models of one training window, as their scores: `rows[j]` is the model trained after window j (0: the
    first champion) scored on every window (`score_row`), None where a retrain could not fit and the model before
    it was kept."""

    name: str
    periods: int | None
    rows: list[np.ndarray | None] = field(default_factory=list)

    def loss(self) -> np.ndarray:
        """loss[j, w]: the metric of model j on window w+1 (NaN where w < j; a kept model repeats its scores)."""
        kept: list[np.ndarray] = []
        for r in self.rows:
            kept.append((r if r is not None else kept[-1]).copy())
        out = np.vstack(kept)
        for j in range(len(out)):
            out[j, :j] = np.nan
        return out


@dataclass
class Board:
    """Every window's labelled rows stacked once: model j is scored on windows j, j+1, ... with one prediction."""

    X: pd.DataFrame
    y: np.ndarray
    bounds: np.ndarray  # window w is rows bounds[w]:bounds[w + 1]

    @classmethod
    def of(cls, windows: list[pd.DataFrame], target: str) -> Board:
        labelled = [w.loc[w[target].notna()] for w in windows]
        stacked = pd.concat(labelled, ignore_index=True)
        return cls(stacked.drop(columns=[target]), stacked[target].to_numpy(),
                   np.cumsum([0] + [len(w) for w in labelled]))

    @property
    def windows(self) -> int:
        return len(self.bounds) - 1


def score_row(model: Any, board: Board, j: int, cfg: PipelineConfig) -> np.ndarray:
    """The metric of a model trained after window j on each window from j on (NaN before j, and where a window has
    no labelled rows or one class only for roc_auc)."""
    out = np.full(board.windows, np.nan)
    start = board.bounds[j]
    if start == len(board.y):
        return out
    p = predict(model, board.X.iloc[start:], cfg.task, cfg.positive_class)
    for w in range(j, board.windows):
        a, b = board.bounds[w] - start, board.bounds[w + 1] - start
        if b - a == 0:
            continue
        try:
            out[w] = metric_value(cfg.primary_metric, board.y[start + a:start + b], p.subset(slice(a, b)))
        except ValueError:  # one class only in a window: no roc_auc there
            pass
    return out


@dataclass
class Schedule:
    """A keep/retrain schedule: its metric per window, how many retrains, and the objective it minimised."""

    name: str
    metrics: list[float | None]
    retrains: int
    retrain_windows: list[int]
    objective: float

    @property
    def mean_metric(self) -> float | None:
        values = [v for v in self.metrics if v is not None and math.isfinite(v)]
        return float(np.mean(values)) if values else None


def optimal_schedule(name: str, loss: np.ndarray, cost: float, higher_is_better: bool) -> Schedule:
    """The hindsight-optimal keep/retrain schedule for a retrain cost, by dynamic programming over windows.

    `loss[j, w]` is the metric of the model trained after window j on window w (0-based windows; model 0
    serves window 0). Serving window w with model j costs its (sign-adjusted) metric; retraining after
    window w-1 costs `cost` and switches to model w. Missing scores (NaN) cost the model's mean elsewhere.
    """
    n_models, n = loss.shape
    sign = -1.0 if higher_is_better else 1.0
    filled = loss.copy()
    for j in range(n_models):
        row = filled[j]
        mean = np.nanmean(row) if np.isfinite(row).any() else 0.0
        filled[j] = np.where(np.isfinite(row), row, mean)
    c = sign * filled
    best = np.full((n, n_models), np.inf)
    came = np.full((n, n_models), -1, dtype=int)
    best[0, 0] = c[0, 0]
    for w in range(1, n):
        best[w, :w] = best[w - 1, :w] + c[:w, w]
        came[w, :w] = np.arange(w)
        if w < n_models:
            j = int(np.argmin(best[w - 1, :w]))
            best[w, w] = best[w - 1, j] + cost + c[w, w]
            came[w, w] = j
    j = int(np.argmin(best[n - 1]))
    objective = float(best[n - 1, j])
    serving = [0] * n
    for w in range(n - 1, -1, -1):
        serving[w] = j
        j = came[w, j] if w > 0 else j
    retrain_at = [w + 1 for w in range(1, n) if serving[w] != serving[w - 1]]  # 1-based windows
    metrics = [None if not math.isfinite(loss[serving[w], w]) else float(loss[serving[w], w]) for w in range(n)]
    return Schedule(name, metrics, len(retrain_at), retrain_at, objective)


def every_window(loss: np.ndarray) -> list[float | None]:
    """Retraining after every window: model w serves window w (model 0, the first champion, window 0)."""
    n = loss.shape[1]
    return [None if not math.isfinite(loss[min(w, loss.shape[0] - 1), w]) else float(loss[min(w, loss.shape[0] - 1), w])
            for w in range(n)]


def recovered_share(policy: float | None, never: float | None, best: float | None,
                    higher_is_better: bool) -> float | None:
    """The share of the best schedule's gain over never retraining that `policy` gets (None: no gain)."""
    if policy is None or never is None or best is None:
        return None
    sign = 1.0 if higher_is_better else -1.0
    gain = sign * (best - never)
    if gain <= 0:
        return None
    return float(sign * (policy - never) / gain)


def better(metric: str, a: float | None, b: float | None) -> bool:
    """`a` is better than `b` for this metric (None is worst)."""
    if a is None:
        return False
    if b is None:
        return True
    return a > b if METRIC_DIRECTION[metric] else a < b
