"""Refit or re-tune: a retrain reuses the champion's tuned configuration until the rows double or the search
changes, and the backtest's policy retrains the same way (its every-window baseline always searches)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlops.core.config import parse_config
from mlops.core.rowkeys import NEW_ROW_COLUMN
from mlops.monitoring.backtest import train_candidate
from mlops.training.retune import (
    CONFIGURATION_TAG,
    SEARCH_DIGEST_TAG,
    TUNED_ROWS_TAG,
    plan_retune,
    reused_result,
    search_digest,
)


def _cfg(**search: object):
    return parse_config({
        "name": "t", "task": "regression", "source": {"kind": "file", "path": "x.csv"}, "target": "y",
        "timestamp_column": "ts", "gate": {"primary_metric": "rmse", "thresholds": {}},
        "registry": {"model_name": "t"}, "split": {"test_size": 0.2},
        "models": [{"family": "hist_gradient_boosting",
                    "search_space": {"learning_rate": {"type": "loguniform", "low": 0.03, "high": 0.3},
                                     "max_leaf_nodes": {"type": "int", "low": 8, "high": 32}}}],
        "search": {"n_trials": 2, "cv_folds": 2, **search},
        "monitoring": {"policy": {"train_on": "original_plus_new"}}})


def _champion(cfg, tuned_rows: int = 1000):
    model = Pipeline([("features", StandardScaler()),
                      ("model", HistGradientBoostingRegressor(learning_rate=0.123, max_leaf_nodes=17, random_state=0))])
    tags = {"family": "hist_gradient_boosting", TUNED_ROWS_TAG: str(tuned_rows), SEARCH_DIGEST_TAG: search_digest(cfg)}
    return SimpleNamespace(model=model, tags=tags, version="3")


def test_a_retrain_under_twice_the_tuned_rows_reuses_the_champion_configuration():
    cfg = _cfg()
    reuse = plan_retune(cfg, _champion(cfg), rows=1999, retraining=True)
    assert reuse.reuse and reuse.family == "hist_gradient_boosting" and reuse.tuned_rows == 1000
    assert "v3" in reuse.reason and "1,999" in reuse.reason
    assert reuse.lineage(1999, "d") == {"tuned_rows": "1000", "search_digest": "d",
                                        "configuration": "reused from v3"}


@pytest.mark.parametrize(("change", "why"), [
    ({"rows": 2000}, "2x"),
    ({"retraining": False}, "not a retrain"),
    ({"cfg": {"n_trials": 3}}, "search changed"),
    ({"cfg": {"retune": "always"}}, "always"),
    ({"tags": {TUNED_ROWS_TAG: ""}}, "no record"),
    ({"tags": {"family": "random_forest"}}, "not one of the config's families"),
    ({"champion": None}, "no champion"),
])
def test_the_search_runs_again_when_the_data_or_the_search_outgrew_the_configuration(change, why):
    base = _cfg()
    champion = _champion(base)
    cfg = _cfg(**change.get("cfg", {}))
    champion.tags = champion.tags | change.get("tags", {})
    if "champion" in change:
        champion = None
    reuse = plan_retune(cfg, champion, rows=change.get("rows", 1500), retraining=change.get("retraining", True))
    assert not reuse.reuse
    assert why in reuse.reason
    assert reuse.lineage(1500, "d")["configuration"] == "tuned"
    assert reuse.lineage(1500, "d")["tuned_rows"] == "1500"


def test_the_digest_ignores_where_the_search_runs_but_not_what_it_explores():
    assert search_digest(_cfg()) == search_digest(_cfg(n_jobs=1))
    assert search_digest(_cfg()) != search_digest(_cfg(cv_folds=4))


def test_the_reused_result_is_the_champion_hyperparameters_fitted_on_this_run_rows():
    cfg = _cfg()
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=300)})
    y = pd.Series(3 * X["x"] + rng.normal(0, 0.1, 300))
    reuse = plan_retune(cfg, _champion(cfg), rows=300, retraining=True)
    result = reused_result(reuse, StandardScaler(), X, y, cfg, "neg_root_mean_squared_error")
    model = result.best_estimator.named_steps["model"]
    assert result.best_params == {"learning_rate": 0.123, "max_leaf_nodes": 17}
    assert result.n_trials == 0 and result.space == "reused"
    assert model is not reuse.estimator and hasattr(model, "n_iter_")  # a fitted copy, not the champion's object
    assert "no search" in result.describe() and "v3" in result.describe()


def _history(days: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=days * 8, freq="3h")
    x = rng.normal(size=len(ts))
    return pd.DataFrame({"ts": ts, "x": x, "z": rng.normal(size=len(ts)), "y": 5 * x + rng.normal(0, 0.5, len(ts))})


@pytest.mark.slow
def test_the_backtest_retrain_refits_until_the_rows_double_and_its_baseline_always_searches():
    cfg = _cfg()
    first = train_candidate(_history(60), cfg, None, 1, pd.Timestamp("2024-03-01"), gate=False)
    assert first.fits == 2 * 2 + 1 + 1  # 2 trials x 2 folds, the winner on all rows, the refit on train + holdout
    tuned = int(first.champion.tags[TUNED_ROWS_TAG])
    assert first.champion.tags[CONFIGURATION_TAG] == "tuned"

    grown = _history(75).assign(**{NEW_ROW_COLUMN: lambda d: np.arange(len(d)) >= 60 * 8})
    again = train_candidate(grown, cfg, first.champion, 2, pd.Timestamp("2024-03-16"), gate=False)
    assert again.champion.tags[CONFIGURATION_TAG] == "reused from v1"
    assert again.champion.tags[TUNED_ROWS_TAG] == str(tuned)  # carried: the tuning it comes from
    assert again.fits == 2  # the configuration fitted once, then the refit on train + holdout
    params = first.champion.model.named_steps["model"].get_params()
    assert again.champion.model.named_steps["model"].get_params() == params

    baseline = train_candidate(grown, cfg, first.champion, 0, pd.Timestamp("2024-03-16"), gate=False, search=True)
    assert baseline.champion.tags[CONFIGURATION_TAG] == "tuned"

    doubled = _history(130).assign(**{NEW_ROW_COLUMN: lambda d: np.arange(len(d)) >= 60 * 8})
    retuned = train_candidate(doubled, cfg, again.champion, 3, pd.Timestamp("2024-05-10"), gate=False)
    assert retuned.champion.tags[CONFIGURATION_TAG] == "tuned"
    assert int(retuned.champion.tags[TUNED_ROWS_TAG]) >= 2 * tuned


def test_a_baseline_refitting_a_reused_configuration_fits_only_the_model_it_serves():
    cfg, at = _cfg(), pd.Timestamp("2024-03-16")
    first = train_candidate(_history(60), cfg, None, 1, pd.Timestamp("2024-03-01"), gate=False)
    grown = _history(75).assign(**{NEW_ROW_COLUMN: lambda d: np.arange(len(d)) >= 60 * 8})
    full = train_candidate(grown, cfg, first.champion, 0, at, gate=False, choose=False)
    served = train_candidate(grown, cfg, first.champion, 0, at, gate=False, choose=False, served_only=True)
    assert (full.fits, served.fits) == (2, 1)  # no fit on the training split for a holdout nothing reads
    assert served.champion.tags[CONFIGURATION_TAG] == full.champion.tags[CONFIGURATION_TAG] == "reused from v1"
    assert full.champion.metrics and not served.champion.metrics
    X = _history(20, seed=1).drop(columns=["y"])
    np.testing.assert_array_equal(served.champion.model.predict(X), full.champion.model.predict(X))

    doubled = _history(130).assign(**{NEW_ROW_COLUMN: lambda d: np.arange(len(d)) >= 60 * 8})
    searched = train_candidate(doubled, cfg, served.champion, 0, at, gate=False, choose=False, served_only=True)
    assert searched.champion.tags[CONFIGURATION_TAG] == "tuned"  # the rows doubled: the search runs as before
    assert searched.fits == 2 * 2 + 1 + 1 and searched.champion.metrics
