"""Live quality by slice: a window of one slice is compared with that slice of the holdout, a live baseline
decides before the holdout slices, and the tolerance's units (points for scores, a share for errors)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import parse_config
from mlops.core.data import generate_churn
from mlops.monitoring import live_quality as lq
from tests.conftest import small_config


def _banded(rows: int, seed: int) -> pd.DataFrame:
    """Churn rows with `risk_band`, a slice column that itself predicts the target."""
    df = generate_churn(rows, seed=seed)
    rng = np.random.default_rng(seed + 100)
    df["risk_band"] = np.where(rng.uniform(size=rows) < np.where(df["churned"] == 1, 0.85, 0.15), "high", "low")
    return df


class BandModel:
    """Uses the band and support calls: far better across bands than within one."""

    classes_ = np.array([0, 1])

    def __init__(self, use_calls: bool = True) -> None:
        self.use_calls = use_calls

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        z = 3.0 * (X["risk_band"].astype(str) == "high").to_numpy() - 1.5
        if self.use_calls:
            z = z + 0.4 * (X["support_calls"].to_numpy(float) - 1.2) - 0.035 * (X["tenure_months"].to_numpy(float) - 36)
        else:  # a broken model: within a band it ranks rows at random
            z = z + np.random.default_rng(0).normal(0, 0.01, len(X))
        p = 1.0 / (1.0 + np.exp(-z))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def test_live_quality_compares_a_one_slice_window_with_that_slice_of_the_holdout() -> None:
    from mlops.training.evaluation import predict

    cfg = parse_config(small_config(monitoring={"min_labelled_rows": 50, "policy": {"quality_tolerance": 0.05}},
                                    gate={"slices": [{"column": "risk_band", "min_rows": 30}]}))
    holdout = _banded(3000, seed=11)
    stored = lq.holdout_slice_metrics(holdout, predict(BandModel(), holdout.drop(columns=["churned"]),
                                                       "classification"), cfg)
    assert stored["metric"] == "roc_auc" and set(stored["slices"]["risk_band"]) == {"high", "low"}
    assert stored["overall"] > stored["slices"]["risk_band"]["high"]["metric"] + 0.15  # the band predicts churn
    tags = {"metric.roc_auc": str(stored["overall"])}
    window = _banded(4000, seed=12)
    window = window.loc[window["risk_band"] == "high"].reset_index(drop=True)
    columns = [c for c in window.columns if c != "churned"]

    fair = lq.live_quality(window, "customer_id", BandModel(), cfg, tags, columns, stored)
    assert fair.status == "ok" and fair.compared_with == "slices" and not fair.degraded, fair.reason
    assert [(s["column"], s["value"]) for s in fair.slices] == [("risk_band", "high")]
    assert "the same slice (risk_band=high)" in fair.reason and "within the tolerance 0.05 roc_auc points (absolute)" in fair.reason
    assert "not used" in fair.reason and "risk_band=high" in fair.to_markdown()

    overall = lq.live_quality(window, "customer_id", BandModel(), cfg, tags, columns, None)  # an older version
    assert overall.compared_with == "overall" and overall.degraded  # what the overall comparison got wrong
    assert "stores no holdout slice metrics" in overall.reason

    broken = lq.live_quality(window, "customer_id", BandModel(use_calls=False), cfg, tags, columns, stored)
    assert broken.compared_with == "slices" and broken.degraded
    assert "worse than the holdout on the same slice (risk_band=high)" in broken.reason
    assert "more than the tolerance 0.05 roc_auc points (absolute)" in broken.reason
    assert broken.slice_gaps["risk_band"]["gap"] > 0.05 > fair.slice_gaps["risk_band"]["gap"]

    no_slices = parse_config(small_config(monitoring={"min_labelled_rows": 50}, gate={"slices": []}))
    plain = lq.live_quality(window, "customer_id", BandModel(), no_slices, tags, columns, stored)
    assert plain.compared_with == "overall" and plain.degraded and plain.slices == []


def test_a_live_baseline_decides_before_the_holdout_slices_which_are_still_reported() -> None:
    from mlops.monitoring.policy import LiveBaseline
    from mlops.training.evaluation import predict

    cfg = parse_config(small_config(monitoring={"min_labelled_rows": 50},
                                    gate={"slices": [{"column": "risk_band", "min_rows": 30}]}))
    holdout = _banded(3000, seed=11)
    stored = lq.holdout_slice_metrics(holdout, predict(BandModel(), holdout.drop(columns=["churned"]),
                                                       "classification"), cfg)
    tags = {"metric.roc_auc": str(stored["overall"])}
    window = _banded(4000, seed=12)
    columns = [c for c in window.columns if c != "churned"]
    level = lq.live_quality(window, "customer_id", BandModel(), cfg, tags, columns, stored).metrics["roc_auc"]
    broken = BandModel(use_calls=False)
    by_slices = lq.live_quality(window, "customer_id", broken, cfg, tags, columns, stored)
    assert by_slices.compared_with == "slices" and by_slices.degraded  # worse than the holdout within each band
    # against its own live level (here: the level this broken model already had live), the window is fine
    own = lq.live_quality(window, "customer_id", broken, cfg, tags, columns, stored,
                          LiveBaseline(by_slices.metrics["roc_auc"], 1, "live baseline (test)"))
    assert own.compared_with == "live_baseline" and not own.degraded
    assert "reported, not deciding" in own.reason and own.slices
    dropped = lq.live_quality(window, "customer_id", broken, cfg, tags, columns, stored,
                              LiveBaseline(level, 1, "live baseline (test)"))
    assert dropped.compared_with == "live_baseline" and dropped.degraded == (level - dropped.metrics["roc_auc"] > 0.05)


def test_the_default_tolerance_is_points_for_scores_and_a_share_for_errors() -> None:
    assert lq.quality_tolerance("roc_auc", None) == 0.05 and lq.quality_tolerance("r2", None) == 0.05
    assert lq.quality_tolerance("rmse", None) == 0.2 and lq.quality_tolerance("mae", None) == 0.2
    assert lq.quality_tolerance("rmse", 0.1) == 0.1  # a configured tolerance wins


def test_degradation_states_the_tolerance_units() -> None:
    assert "0.05 roc_auc points (absolute)" in lq.degradation("roc_auc", 0.7, 0.8, 0.05)[1]
    assert "5% of the holdout value (relative)" in lq.degradation("rmse", 11.0, 10.0, 0.05)[1]


def test_slice_gaps_weigh_each_value_by_its_rows_in_the_window() -> None:
    comparisons = [{"column": "region", "value": "south", "rows": 200, "live": 0.74, "holdout": 0.82},
                   {"column": "region", "value": "north", "rows": 800, "live": 0.80, "holdout": 0.80},
                   {"column": "plan", "value": "basic", "rows": 100, "live": 11.0, "holdout": 10.0}]
    gaps = lq.slice_gaps("roc_auc", comparisons[:2])
    assert gaps["region"]["gap"] == pytest.approx(0.016) and gaps["region"]["values"] == 2
    assert lq.slice_gaps("rmse", comparisons[2:])["plan"]["gap"] == pytest.approx(0.1)  # 10% worse
