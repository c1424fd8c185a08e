"""The loop's judgment on evidence: the training window chosen on the newest rows, the hindsight-optimal
keep/retrain schedule, the champion compared only on rows it never trained on, and retraining once staying
costs more than a retrain (the staleness sum)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression

from mlops.core.config import RetrainPolicyConfig, parse_config
from mlops.core.rowkeys import RowHashSet
from mlops.monitoring.policy import PolicyState, WindowSummary, decide
from mlops.monitoring.yardstick import every_window, optimal_schedule, recovered_share
from mlops.training.assessment import evaluate, judge
from mlops.training.window import ALL_HISTORY, train_in_window

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _series(kind: str, days: int = 360, seed: int = 0, trend: float | None = None) -> pd.DataFrame:
    """Daily-cycle data, 4 rows a day: `growth` moves the level 100% a year, `stationary` holds it (with more
    noise); `trend` sets the yearly move instead."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=days * 4, freq="6h")
    x = rng.normal(size=len(ts))
    years = np.arange(len(ts)) / (365 * 4)
    level = 100 * (1 + (trend if trend is not None else 1.0 if kind == "growth" else 0.0) * years)
    y = level + 10 * x + rng.normal(0, 8 if kind == "stationary" else 2, len(ts))
    return pd.DataFrame({"ts": ts, "x": x, "y": y})


def _cfg(n_jobs: int = -1, **policy: object):
    return parse_config({"name": "t", "task": "regression", "source": {"kind": "file", "path": "x.csv"},
                         "target": "y", "timestamp_column": "ts", "gate": {"primary_metric": "rmse"},
                         "registry": {"model_name": "t"}, "models": [{"family": "linear_regression"}],
                         "search": {"n_jobs": n_jobs}, "monitoring": {"policy": {"window_period": "1M", **policy}}})


def _features(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["ts"])


class _DropTs:
    """A model that ignores the timestamp column, as a feature pipeline would turn it into parts."""

    def __init__(self, model: object) -> None:
        self.model = model

    def get_params(self, deep: bool = True) -> dict:
        return {"model": self.model}

    def set_params(self, **p: object) -> _DropTs:
        self.model = p["model"]
        return self

    def fit(self, X: pd.DataFrame, y: pd.Series) -> _DropTs:
        from sklearn.base import clone

        self.fitted_ = clone(self.model).fit(_features(X), y)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.fitted_.predict(_features(X))


def test_growth_chooses_a_recent_window_and_stationary_all_history() -> None:
    model = _DropTs(LinearRegression())
    grown = train_in_window(model, _series("growth"), _cfg())
    assert grown.choice.chosen != ALL_HISTORY and grown.choice.periods is not None
    assert len(grown.choice.candidates) >= 4 and grown.choice.fits == len(grown.choice.candidates)
    # coarse to fine: the last 1 and 4 months scored better than all history, so the length beside the best
    # (the last 2 beside the last 1) was fitted as well
    assert [c.periods for c in grown.choice.candidates] == [None, 1, 2, 4], grown.choice.summary()
    still = train_in_window(model, _series("stationary"), _cfg())
    assert still.choice.chosen == ALL_HISTORY, still.choice.summary()
    # all history holds its own against the coarse windows: nothing finer is fitted
    assert [c.periods for c in still.choice.candidates] == [None, 1, 4] and still.choice.fits == 3
    assert "held-back rows" in still.choice.summary() and "| all history (chosen) |" in still.choice.to_markdown()


def test_candidates_fit_side_by_side_in_warm_workers_choose_as_one_after_another(monkeypatch) -> None:
    """With the search's worker processes up, the candidates fit there (one thread each) and score exactly as
    fitted here one after another; with no warm pool, here."""
    from mlops.training.trials import executor, thread_plan, warm_executor

    cfg = _cfg(n_jobs=2)
    plan = thread_plan(2)
    executor(plan).used -= 600  # idle past the workers' timeout: they may be gone, so the fits run here
    assert warm_executor(plan) is None
    here = train_in_window(_DropTs(LinearRegression()), _series("growth"), cfg).choice
    pool = executor(plan)  # used now: warm
    pids = {pool.submit(os.getpid).result() for _ in range(8)}
    assert warm_executor(plan) is pool and os.getpid() not in pids
    sent, submit = [], pool.submit
    monkeypatch.setattr(pool, "submit", lambda fn, *args: sent.append(fn.__name__) or submit(fn, *args))
    there = train_in_window(_DropTs(LinearRegression()), _series("growth"), cfg).choice
    assert [(c.name, c.score) for c in there.candidates] == [(c.name, c.score) for c in here.candidates]
    # the coarse three (all history, the last 1 and 4 months) in the workers; the one length beside the best
    # (the last 2 months) alone, so here
    assert there.chosen == here.chosen and there.fits == here.fits == 4 and len(sent) == 3


def test_a_worker_that_dies_mid_choice_leaves_its_candidate_to_be_fitted_here(monkeypatch) -> None:
    """A worker killed or out of memory breaks the pool: its candidates are fitted here, with the same scores."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from mlops.training.trials import executor, thread_plan

    cfg, plan = _cfg(n_jobs=2), thread_plan(2)
    executor(plan).used -= 600
    here = train_in_window(_DropTs(LinearRegression()), _series("growth"), cfg).choice
    pool = executor(plan)

    def broken(fn, *args):
        dead: Future = Future()
        dead.set_exception(BrokenProcessPool("a worker died"))
        return dead

    monkeypatch.setattr(pool, "submit", broken)
    there = train_in_window(_DropTs(LinearRegression()), _series("growth"), cfg).choice
    assert [(c.name, c.score) for c in there.candidates] == [(c.name, c.score) for c in here.candidates]
    assert there.chosen == here.chosen and all(not c.note.startswith("could not") for c in there.candidates)


def test_a_shorter_window_that_wins_by_a_few_percent_keeps_all_history() -> None:
    """A level that creeps up 4% a year under noise: the last months beat all history on the held-back month,
    significantly, by about 3% of the error. That is not worth throwing the history away for (the margin is 5%)."""
    import re

    choice = train_in_window(_DropTs(LinearRegression()), _series("stationary", trend=0.04), _cfg()).choice
    assert choice.chosen == ALL_HISTORY and "5% of all history's error" in choice.reason, choice.summary()
    bounds = [re.search(r"90% lower bound ([-+][0-9.e+-]+) \(needs > ([0-9.e+-]+)\)", c.note) for c in choice.candidates]
    significant = [(float(m.group(1)), float(m.group(2))) for m in bounds if m and float(m.group(1)) > 0]
    assert significant and all(low < needed for low, needed in significant), choice.summary()


def test_a_fixed_train_on_or_no_timestamp_trains_on_every_row() -> None:
    model = _DropTs(LinearRegression())
    fixed = train_in_window(model, _series("growth"), _cfg(train_on="original_plus_new"))
    assert fixed.choice.chosen == ALL_HISTORY and fixed.model is model and "not auto" in fixed.choice.reason


def test_a_candidate_window_too_small_to_fit_is_one_sentence() -> None:
    df = _series("growth").iloc[::2].reset_index(drop=True)  # about 60 rows a month
    chosen = train_in_window(_DropTs(LinearRegression()), df, _cfg()).choice
    small = [c for c in chosen.candidates if c.periods == 1]
    assert small[0].note.startswith("too small to fit: ") and small[0].score is None
    assert chosen.chosen != small[0].name and chosen.fits == len(chosen.candidates) - 1


def test_optimal_schedule_retrains_only_where_it_pays() -> None:
    # model j trained after window j-1 serves from window j; model 2 is far better from window 2 on
    loss = np.array([[10, 10, 30, 30, 30],
                     [np.nan, 10, 30, 30, 30],
                     [np.nan, np.nan, 10, 10, 10],
                     [np.nan, np.nan, np.nan, 9.5, 9.5],
                     [np.nan, np.nan, np.nan, np.nan, 9.5]])
    s = optimal_schedule("f", loss, cost=5.0, higher_is_better=False)
    assert s.retrain_windows == [3] and s.metrics == [10, 10, 10, 10, 10]
    free = optimal_schedule("f", loss, cost=0.0, higher_is_better=False)
    assert free.retrains >= 2 and free.mean_metric < s.mean_metric
    assert every_window(loss) == [10, 10, 10, 9.5, 9.5]
    assert recovered_share(12.0, 30.0, 10.0, False) == pytest.approx(0.9)


def _regression_cfg():
    return parse_config({"name": "t", "task": "regression", "source": {"kind": "file", "path": "x.csv"}, "target": "y",
                         "gate": {"primary_metric": "rmse", "min_comparison_rows": 50, "bootstrap_samples": 200},
                         "registry": {"model_name": "t"}, "models": [{"family": "linear_regression"}]})


@pytest.mark.slow
def test_the_champion_is_compared_only_on_rows_it_never_trained_on() -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x": rng.normal(size=600)})
    df["y"] = 3 * df["x"] + rng.normal(0, 1, 600)
    cfg = _regression_cfg()
    test = df.iloc[400:].reset_index(drop=True)
    overfit = HistGradientBoostingRegressor(max_leaf_nodes=200, min_samples_leaf=1, max_iter=300).fit(df[["x"]], df["y"])
    challenger = LinearRegression().fit(df.iloc[:400][["x"]], df.iloc[:400]["y"])
    ev = evaluate(challenger, test, cfg, None)
    seen = RowHashSet.of(df, ["x"])  # the champion trained on every row, the holdout too
    verdict = judge(ev, overfit, "1", test, cfg, champion_rows=seen)
    rows = next(c for c in verdict.checks if c.name == "comparison rows")
    assert not rows.passed and "only 0 of 200 holdout rows are new to champion v1" in rows.detail
    assert not verdict.passed
    part = RowHashSet.of(df.iloc[:500], ["x"])  # the newest 100 holdout rows are new to it
    fair = judge(ev, overfit, "1", test, cfg, champion_rows=part)
    rows = next(c for c in fair.checks if c.name == "comparison rows")
    assert rows.passed and rows.detail.startswith("100 of 200 holdout rows")
    assert any(c.name == "not worse than champion" for c in fair.checks)


def _payoff(gain: float, low: float, cost: float = 10.0) -> WindowSummary:
    return WindowSummary(rows=1000, drift_share=0.0, model_version="1", live_metric=50.0, payoff_gain=gain,
                         payoff_ci_low=low, payoff_cost=cost, payoff_reason=f"fresh model gain {gain}")


def test_small_steady_gains_add_up_to_a_retrain_and_noise_does_not() -> None:
    cfg = RetrainPolicyConfig(min_rows=1, cooldown_minutes=0)
    state = PolicyState(budget=0.0)  # just retrained: the budget has room for the windows below
    verdicts = []
    for i in range(3):
        d, state = decide(state, _payoff(4.0, 1.0), cfg, NOW.replace(day=i + 1))
        verdicts.append(d.retrain)
    assert verdicts == [False, False, True] and state.staleness == 0.0
    d, state = decide(PolicyState(), _payoff(30.0, 20.0), cfg, NOW)
    assert d.retrain and "exceeds retrain_cost 10" in " ".join(d.reasons)
    d, state = decide(PolicyState(staleness=20.0), _payoff(1.0, -3.0), cfg, NOW)
    assert not d.retrain and "exceeds retrain_cost 10, but this window's gain is within noise" in " ".join(d.reasons)
    d, _ = decide(PolicyState(staleness=8.0), _payoff(-20.0, -25.0), cfg, NOW)
    assert not d.retrain


def test_a_full_retrain_budget_lets_a_gain_that_is_not_noise_pay_under_the_default_cost() -> None:
    """A retrain the full budget does not pay for now is budget lost: with the default cost a significant gain
    under it retrains; a gain within noise, a budget with room, or a cost the user set does not."""
    default = RetrainPolicyConfig(min_rows=1, cooldown_minutes=0)
    d, state = decide(PolicyState(budget=2.0), _payoff(4.0, 1.0), default, NOW)
    assert d.retrain and "the retrain budget is full" in " ".join(d.reasons)
    assert state.budget == 1.0 and state.staleness == 0.0
    d, _ = decide(PolicyState(budget=2.0), _payoff(4.0, -1.0), default, NOW)
    assert not d.retrain and "within noise" in " ".join(d.reasons)
    d, _ = decide(PolicyState(budget=1.0), _payoff(4.0, 1.0), default, NOW)  # 1.5 after this window: room left
    assert not d.retrain and "does not exceed retrain_cost 10" in " ".join(d.reasons)
    d, _ = decide(PolicyState(), _payoff(4.0, 1.0), default, NOW)  # before the first retrain: no budget yet
    assert not d.retrain
    priced = default.model_copy(update={"retrain_cost": 10.0})
    d, _ = decide(PolicyState(budget=2.0), _payoff(4.0, 1.0), priced, NOW)
    assert not d.retrain  # a cost the user set is the price of every retrain


def test_a_decayed_champion_is_kept_when_a_fresh_model_does_no_better() -> None:
    cfg = RetrainPolicyConfig(min_rows=1, cooldown_minutes=0)
    w = _payoff(-1.0, -4.0)
    w.quality_degraded, w.quality_reason = True, "rmse 80 > 60"
    d, _ = decide(PolicyState(), w, cfg, NOW)
    assert not d.retrain and "a retrain would not fix it" in " ".join(d.reasons)
