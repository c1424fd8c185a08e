"""Drifted churn history and a fast config for the backtest tests (unit and flow)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from mlops.core.data import generate_churn

SHIFT_AT = pd.Timestamp("2025-05-01")


def drifted_history() -> pd.DataFrame:
    """January to August: undrifted until May, then prices, usage, regions and what drives churn move."""
    before = generate_churn(3600, seed=1, drift=0.0, start=pd.Timestamp("2025-01-01"))
    after = generate_churn(3600, seed=2, drift=1.0, start=SHIFT_AT)
    before = before.loc[before["event_time"] < SHIFT_AT]
    after = after.loc[after["event_time"] < pd.Timestamp("2025-09-01")]
    return pd.concat([before, after], ignore_index=True)


def backtest_config(**policy: Any) -> dict[str, Any]:
    """A fast churn config: one small logistic search, a quick gate, retrain after one drifted window."""
    return {
        "name": "churn-backtest", "task": "classification", "source": {"kind": "generated"}, "target": "churned",
        "id_column": "customer_id", "timestamp_column": "event_time",
        "validation": {"expectations": [{"type": "between", "column": "age", "min": 16, "max": 110}]},
        "models": [{"family": "logistic_regression",
                    "search_space": {"C": {"type": "loguniform", "low": 0.01, "high": 10}}}],
        "search": {"n_trials": 2, "cv_folds": 2, "seed": 1, "n_jobs": 1},
        "gate": {"bootstrap_samples": 200, "noninferiority_margin": 0.01},
        "registry": {"model_name": "churn-backtest", "reference_rows": 500},
        "monitoring": {"sample_size": 2000, "policy": {"consecutive_windows": 1, "min_rows": 300, "drift_share_threshold": 0.45,
                                                              "drift_trigger": "always", "retrain_cost": 0.05, **policy}},
    }
