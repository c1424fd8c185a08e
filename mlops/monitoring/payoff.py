"""Would a retrain pay? A fresh model, scored on a labelled window beside the champion.

A champion can hold its own level while a model fitted on newer data would do clearly better (on growing
data, say): a threshold on the champion's decay never sees that. So on each labelled window a cheap
challenger (the champion's own configuration, one fit, no search) is fitted on the labelled history
before the window's newer half, inside the champion's training window, and scored on that half beside
the champion. Its gain, with a paired bootstrap bound, is what the retrain policy weighs against
`retrain_cost`, the gain per window a retrain must promise (cost-aware retraining: a retrain is worth
its cost only when the gain it buys exceeds it). Pure: no Prefect, no MLflow.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from mlops.core.config import METRIC_DIRECTION, PipelineConfig
from mlops.core.periods import parse_period
from mlops.training.evaluation import metric_value, paired_bootstrap, predict
from mlops.training.window import last_periods

MIN_FRESH_ROWS = 100  # a fresh model needs this many labelled rows of history
RELATIVE_COST = 0.2  # default retrain cost for errors: 20% of the champion's error on the window
BOUNDED_COST = 0.02  # default retrain cost for bounded scores (roc_auc, accuracy, f1, r2), in points


@dataclass
class FreshGain:
    """A fresh model against the champion on one window: both metrics, the gain (positive: the fresh model is
    better, in metric units), its lower confidence bound, the cost it is weighed against and whether it pays."""

    champion: float
    fresh: float
    gain: float
    ci_low: float
    cost: float
    rows: int
    history_rows: int
    seconds: float

    def sentence(self, metric: str) -> str:
        return (f"a fresh model fitted on {self.history_rows:,} labelled rows up to this window's "
                f"newest {self.rows:,} scores {metric} {self.fresh:.4g} on those rows against the champion's "
                f"{self.champion:.4g} (gain {self.gain:+.4g}, lower bound {self.ci_low:+.4g})")

    def record(self, metric: str) -> dict[str, Any]:
        """The figures and the sentence, as the monitor result keeps them and the policy reads them."""
        return asdict(self) | {"metric": metric, "sentence": self.sentence(metric)}


def retrain_cost(cfg: PipelineConfig, champion_metric: float) -> float:
    """The configured retrain cost, else the default for the metric's kind (see the config's description)."""
    configured = cfg.monitoring.policy.retrain_cost
    if configured is not None:
        return float(configured)
    if METRIC_DIRECTION[cfg.primary_metric]:
        return BOUNDED_COST
    return RELATIVE_COST * abs(champion_metric) if math.isfinite(champion_metric) else 0.0


def fresh_gain(champion: Any, history: pd.DataFrame, window: pd.DataFrame, cfg: PipelineConfig) -> FreshGain | None:
    """Fit the champion's configuration on `history` (labelled rows before the window, already cut to the
    champion's training window) plus the older half of the window's labelled rows, and score both models on
    the newer half (by the timestamp column, else by arrival), which neither trained on: a change inside the
    window shows at once. None when either part is too small to judge (the policy's other triggers decide)."""
    from sklearn.base import clone

    started = time.perf_counter()
    target = cfg.target
    history = history.loc[history[target].notna()]
    window = window.loc[window[target].notna()]
    if len(window) < cfg.monitoring.min_labelled_rows:
        return None
    ts = cfg.timestamp_column
    if ts and ts in window.columns:
        window = window.sort_values(ts, kind="stable")
    half = len(window) // 2
    history = pd.concat([history, window.iloc[:half]], ignore_index=True, sort=False)
    window = window.iloc[half:]
    if len(history) < MIN_FRESH_ROWS:
        return None
    try:
        fresh = clone(champion).fit(history.drop(columns=[target]), history[target])
        X, y = window.drop(columns=[target]), window[target].to_numpy()
        mine = predict(fresh, X, cfg.task, cfg.positive_class)
        theirs = predict(champion, X, cfg.task, mine.positive)
        m_fresh, m_champ = metric_value(cfg.primary_metric, y, mine), metric_value(cfg.primary_metric, y, theirs)
        b = paired_bootstrap(cfg.primary_metric, y, mine, theirs, 200, 0.95, cfg.search.seed)
    except ValueError:  # one class only in the history, a label the champion never saw: no verdict
        return None
    sign = 1.0 if METRIC_DIRECTION[cfg.primary_metric] else -1.0
    gain = sign * (m_fresh - m_champ)
    if not (math.isfinite(gain) and math.isfinite(b.ci_low)):
        return None
    return FreshGain(float(m_champ), float(m_fresh), float(gain), float(b.ci_low), retrain_cost(cfg, m_champ),
                     int(len(window)), int(len(history)), time.perf_counter() - started)



def history_in_window(history: pd.DataFrame, window: dict[str, Any] | None, timestamp_column: str | None) -> pd.DataFrame:
    """The labelled history cut to the champion's training window (its `WindowChoice` record: `periods` and
    `period`); all of it when the champion trained on all history or the record is missing."""
    periods, period = (window or {}).get("periods"), (window or {}).get("period")
    if not periods or not period or timestamp_column not in history.columns:
        return history
    return last_periods(history, timestamp_column, int(periods), parse_period(str(period), "window_period"))
