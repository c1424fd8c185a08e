"""What a backtest replay produced: the per-window records, one summary per arm (the policy, the fixed
schedules, never retraining, the hindsight schedule) and the result with its summary figures. Plain data;
the replay is mlops.monitoring.backtest, the files and tables mlops.monitoring.backtest_report."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.config import METRIC_DIRECTION
from mlops.monitoring.yardstick import better, recovered_share


@dataclass
class WindowRecord:
    """One row of the per-window table (the policy's view, with each baseline's metric beside it)."""

    window: int
    start: str
    end: str
    rows: int
    labelled_rows: int
    champion_version: int
    metric: float | None
    drift_share: float | None
    decision: str
    reasons: list[str]
    retrained: bool
    promoted: bool
    seconds: float
    retrain_detail: str = ""
    baselines: dict[str, float | None] = field(default_factory=dict)
    training_window: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ArmSummary:
    """One way of running the loop over the windows: its metric per window, mean, retrains and their cost."""

    name: str
    metrics: list[float | None] = field(default_factory=list)
    retrains: int = 0
    promotions: int = 0
    failures: int = 0
    fits: int = 0
    training_seconds: float = 0.0
    retrain_windows: list[int] = field(default_factory=list)
    search_seconds: float = 0.0  # of training_seconds: searches (or reused configurations' fits)
    window_seconds: float = 0.0  # of training_seconds: choosing training windows
    searches: int = 0  # retrains that searched (the others refitted the champion's configuration)
    check_seconds: float = 0.0  # of training_seconds: the fresh-model checks (mlops.monitoring.payoff)

    @property
    def mean_metric(self) -> float | None:
        values = [v for v in self.metrics if v is not None and math.isfinite(v)]
        return float(np.mean(values)) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {"mean_metric": self.mean_metric, "retrains": self.retrains, "promotions": self.promotions,
                "failures": self.failures, "fits": self.fits, "training_seconds": round(self.training_seconds, 3),
                "retrain_windows": self.retrain_windows, "metrics": self.metrics, "searches": self.searches,
                "search_seconds": round(self.search_seconds, 3), "window_seconds": round(self.window_seconds, 3),
                "check_seconds": round(self.check_seconds, 3)}


@dataclass
class BacktestResult:
    """The per-window table, one summary per arm, the kept predictions and the plan it replayed.

    Arms: `policy`; `never`; `every_window` (all history, searched at every window; with `fast`, searched when
    its rows doubled and refitted between); `every_window_last_<k>` (that configuration on the last k windows); `hindsight` (the keep/retrain schedule that was
    best in hindsight for `retrain_cost`). The recovered share is measured against the best fixed schedule.
    """

    metric: str
    windows: list[WindowRecord]
    arms: dict[str, ArmSummary]
    predictions: pd.DataFrame
    train_on: str
    initial: str
    every: str
    initial_rows: int
    first_champion_seconds: float
    seconds: float
    notes: list[str] = field(default_factory=list)
    retrain_cost: float | None = None
    hindsight_family: str | None = None
    fast: bool = False  # the every-window baseline refitted between searches (see run_backtest)

    @property
    def higher_is_better(self) -> bool:
        return METRIC_DIRECTION[self.metric]

    @property
    def fixed_arms(self) -> list[str]:
        return [n for n in self.arms if n.startswith("every_window")]

    @property
    def best_fixed(self) -> str | None:
        """The fixed schedule (retrain every window on one training window) with the best mean metric."""
        best: str | None = None
        for name in self.fixed_arms:
            if best is None or better(self.metric, self.arms[name].mean_metric, self.arms[best].mean_metric):
                best = name
        return best

    @property
    def recovered_share(self) -> float | None:
        best = self.best_fixed
        if best is None or "never" not in self.arms:
            return None
        return recovered_share(self.arms["policy"].mean_metric, self.arms["never"].mean_metric,
                               self.arms[best].mean_metric, self.higher_is_better)

    def summary(self) -> dict[str, Any]:
        policy = self.arms["policy"]
        best = self.best_fixed
        regret = None
        if best is not None and policy.mean_metric is not None and self.arms[best].mean_metric is not None:
            sign = 1.0 if self.higher_is_better else -1.0
            regret = sign * (self.arms[best].mean_metric - policy.mean_metric)
        return {
            "metric": self.metric, "higher_is_better": self.higher_is_better, "windows": len(self.windows),
            "mean_metric": policy.mean_metric, "retrains": policy.retrains, "promotions": policy.promotions,
            "fits": policy.fits, "training_seconds": round(policy.training_seconds, 3),
            "recovered_share": self.recovered_share, "best_fixed": best, "regret": regret,
            "retrain_cost": self.retrain_cost, "hindsight_family": self.hindsight_family,
            "baselines": {name: arm.to_dict() for name, arm in self.arms.items() if name != "policy"},
            "policy": policy.to_dict(), "train_on": self.train_on, "initial": self.initial, "every": self.every,
            "initial_rows": self.initial_rows, "first_champion_seconds": round(self.first_champion_seconds, 3),
            "seconds": round(self.seconds, 3), "notes": self.notes, "fast": self.fast,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"windows": [w.to_dict() for w in self.windows], "summary": self.summary()}
