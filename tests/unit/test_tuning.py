import pandas as pd
import pytest

from mlops.core.config import FeatureConfig, ModelSpec, Param, SearchConfig, ValidationConfig
from mlops.core.contract import infer_contract
from mlops.core.data import generate_churn
from mlops.core.features import build_preprocessor
from mlops.training.spaces import DEFAULT_SPACES
from mlops.training.tuning import pick_best, tune_family


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series, object]:
    df = generate_churn(1200, seed=5)
    contract = infer_contract(df, "churned", "classification", ValidationConfig(), "customer_id", "event_time")
    pre = build_preprocessor(contract, FeatureConfig())
    return df.drop(columns=["churned"]), df["churned"], pre


SPEC = ModelSpec(family="logistic_regression", search_space={"C": Param(type="loguniform", low=0.01, high=10)})


def test_search_is_seeded(data) -> None:
    X, y, pre = data
    a = tune_family(SPEC, pre, X, y, "classification", "roc_auc", SearchConfig(n_trials=3, cv_folds=2, seed=4))
    b = tune_family(SPEC, pre, X, y, "classification", "roc_auc", SearchConfig(n_trials=3, cv_folds=2, seed=4))
    assert a.best_params == b.best_params and a.best_score == b.best_score
    assert a.n_trials == 3 and len(a.cv_scores) == 2 and 0.5 < a.best_score <= 1.0


def test_halving_search_and_pick_best(data) -> None:
    X, y, pre = data
    hgb = ModelSpec(family="hist_gradient_boosting", params={"max_iter": 30},
                    search_space={"max_leaf_nodes": Param(type="int", low=4, high=16)})
    r1 = tune_family(hgb, pre, X, y, "classification", "roc_auc",
                     SearchConfig(strategy="halving", n_trials=4, cv_folds=2))
    r2 = tune_family(SPEC, pre, X, y, "classification", "roc_auc", SearchConfig(n_trials=2, cv_folds=2))
    assert r1.best_score > 0.6  # the last halving round sees all rows, not a tiny one-class subsample
    assert r1.n_trials == 4 and len(r1.trials) > 4  # trials count the candidates, not candidates x rounds
    assert pick_best([r1, r2]).best_score == max(r1.best_score, r2.best_score)


def test_an_empty_space_is_one_trial_and_says_so(data) -> None:
    X, y, pre = data
    r = tune_family(ModelSpec(family="random_forest", params={"n_estimators": 10}, search_space={}), pre, X, y,
                    "classification", "roc_auc", SearchConfig(cv_folds=2))
    assert r.n_trials == 1 and r.best_estimator.named_steps["model"].n_estimators == 10
    assert r.space == "none" and r.leaderboard_row()["space"] == "none"


def test_a_family_without_a_space_searches_the_default_space(data) -> None:
    X, y, pre = data
    spec = ModelSpec(family="random_forest", params={"n_estimators": 10})  # listed without a search_space
    r = tune_family(spec, pre, X, y, "classification", "roc_auc", SearchConfig(n_trials=4, cv_folds=2, n_jobs=1))
    assert r.space == "default" and r.leaderboard_row()["space"] == "default space"
    assert r.n_trials == 4 and len(r.trials) == 4 and all(len(t["folds"]) == 2 for t in r.trials)  # all fitted
    assert "n_estimators" not in r.best_params  # fixed by the user, left out of the default space
    assert set(r.best_params) <= set(DEFAULT_SPACES["random_forest"])


@pytest.mark.process
def test_search_runs_on_a_real_dask_cluster(data) -> None:
    from distributed import LocalCluster

    X, y, pre = data
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        local = tune_family(SPEC, pre, X, y, "classification", "roc_auc",
                            SearchConfig(n_trials=3, cv_folds=2, seed=4, n_jobs=2))
        remote = tune_family(SPEC, pre, X, y, "classification", "roc_auc",
                             SearchConfig(n_trials=3, cv_folds=2, seed=4, n_jobs=2, backend="dask",
                                          dask_address=cluster.scheduler_address))
        from distributed import Client

        with Client(cluster.scheduler_address) as c:
            # the workers really ran tasks: their task logs are not empty
            ran = c.run(lambda dask_worker: len(dask_worker.state.log))
    assert remote.best_params == local.best_params
    assert remote.best_score == pytest.approx(local.best_score, abs=1e-3)  # BLAS in another process: last digits
    assert all(n > 0 for n in ran.values())


def test_dask_backend_needs_an_address(data, monkeypatch) -> None:
    from mlops.core.errors import ConfigError

    monkeypatch.delenv("MLOPS_DASK_ADDRESS", raising=False)
    X, y, pre = data
    with pytest.raises(ConfigError, match="set search.dask_address in the config or MLOPS_DASK_ADDRESS"):
        tune_family(SPEC, pre, X, y, "classification", "roc_auc", SearchConfig(backend="dask"))


def test_dask_backend_takes_the_stack_address_and_names_a_dead_scheduler(data, monkeypatch) -> None:
    """Without search.dask_address the stack's MLOPS_DASK_ADDRESS is used; nobody there is one sentence."""
    from mlops.core.errors import ConfigError
    from mlops.core.startup import free_port

    port = free_port()  # a loopback port nobody listens on
    monkeypatch.setenv("MLOPS_DASK_ADDRESS", f"tcp://127.0.0.1:{port}")
    monkeypatch.setattr("mlops.core.dask.CONNECT_SECONDS", 2.0)
    X, y, pre = data
    cfg = SearchConfig(backend="dask")
    with pytest.raises(ConfigError, match=f"no Dask scheduler answers at tcp://127.0.0.1:{port} .*search.dask_address"):
        tune_family(SPEC, pre, X, y, "classification", "roc_auc", cfg)


# ---- the scorer and the positive class -------------------------------------------------------------


def _yes_no(rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, rows)
    y = np.where(rng.uniform(size=rows) < 1 / (1 + np.exp(-(1.5 * x - 1.0))), "yes", "no")
    return pd.DataFrame({"x": x, "region": rng.choice(["n", "s"], rows)}), pd.Series(y, name="answer")


def test_f1_scorer_scores_the_configured_positive_class() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from mlops.training.tuning import scorer_for

    X, y = _yes_no(1500, 1)
    model = LogisticRegression().fit(X[["x"]], y)
    pred = model.predict(X[["x"]])
    for positive in ["no", "yes"]:
        scorer = scorer_for("classification", "f1", True, labels=y, positive_class=positive)
        assert scorer(model, X[["x"]], y) == pytest.approx(f1_score(y, pred, pos_label=positive))
    default = scorer_for("classification", "f1", True, labels=y)  # None: the larger label, 'yes'
    assert default(model, X[["x"]], y) == pytest.approx(f1_score(y, pred, pos_label="yes"))


def test_scorer_names_stay_plain_where_sklearn_already_agrees() -> None:
    from mlops.training.tuning import scorer_for

    zero_one = pd.Series([0, 1, 1, 0])
    assert scorer_for("classification", "f1", True, labels=zero_one) == "f1"
    assert scorer_for("classification", "roc_auc", True, labels=pd.Series(["a", "b"]), positive_class="a") == "roc_auc"
    assert scorer_for("classification", "f1", True, "precision", labels=zero_one, positive_class=0) == "precision"
    assert scorer_for("regression", "rmse", True) == "neg_root_mean_squared_error"


def test_positive_class_that_is_not_a_label_stops_before_the_search() -> None:
    from mlops.core.errors import DataError
    from mlops.training.tuning import scorer_for

    _, y = _yes_no(200, 2)
    with pytest.raises(DataError, match=r"positive_class 'maybe' is not one of the target's labels \['no', 'yes'\]"):
        scorer_for("classification", "f1", True, labels=y, positive_class="maybe")


def test_search_on_string_labels_with_f1_runs_and_logs_a_readable_scorer() -> None:
    from sklearn.compose import make_column_transformer
    from sklearn.preprocessing import OneHotEncoder

    from mlops.training.tuning import scorer_for

    X, y = _yes_no(800, 3)
    pre = make_column_transformer((OneHotEncoder(), ["region"]), ("passthrough", ["x"]))
    # sklearn's plain "f1" scores label 1 and fails on 'no'/'yes'; the scorer names the positive class
    scoring = scorer_for("classification", "f1", True, labels=y, positive_class="no")
    r = tune_family(SPEC, pre, X, y, "classification", scoring, SearchConfig(n_trials=2, cv_folds=2, n_jobs=1))
    assert 0.3 < r.best_score <= 1.0
    assert isinstance(r.scoring, str) and "pos_label='no'" in r.scoring


# ---- time budget, threads, sharing, bad input ------------------------------------------------------------


def _trials(result):
    """Every trial a search asked for, cut ones too, as (state, started, stop_at, ended, longest fold seconds)."""
    return [(t.state.name, t.user_attrs["started"], t.user_attrs["stop_at"], t.user_attrs.get("ended"),
             t.user_attrs.get("seconds", 0.0)) for t in result.study.trials if t.state.name != "WAITING"]


@pytest.mark.slow
def test_a_time_budget_stops_the_search_and_counts_what_fitted(data) -> None:
    import time

    X, y, pre = data
    t0 = time.time()
    r = tune_family(ModelSpec(family="hist_gradient_boosting"), pre, X, y, "classification", "roc_auc",
                    SearchConfig(time_budget=3, cv_folds=2, n_jobs=1))
    assert r.stopped == "time budget" and r.n_trials >= 1
    assert r.n_trials == len(r.trials) and r.pruned == sum(t["state"] == "pruned" for t in r.trials)
    trials = _trials(r)
    begun = trials[0][1]  # the budget's clock starts just before the first trial (after the folds are prepared)
    assert t0 <= begun and all(started <= begun + 3 for _, started, *_ in trials)  # none after the budget
    # after the first (the defaults, which always finish without a deadline) every fit had to end by the budget:
    # a counted trial ended at most one fit (its longest) after it, the others were cut and do not count
    assert trials[0][2] is None and all(stop <= begun + 3 for _, _, stop, *_ in trials[1:])
    assert all(ended <= stop + took for state, _, stop, ended, took in trials[1:] if state == "COMPLETE")
    assert r.cut == sum(state == "FAIL" for state, *_ in trials)


@pytest.mark.slow
def test_a_slow_family_cannot_hold_the_search_past_its_budget(data) -> None:
    """A forest of 20,000 trees is slow next to a logistic regression and a small boosting: with a budget of 8 s
    no trial starts after the budget, none may run past it, and what would have run over was cut, not counted."""
    import time

    from mlops.training.tuning import STRAGGLER_SLACK, tune_families

    X, y, pre = data
    specs = [ModelSpec(family="logistic_regression"), ModelSpec(family="random_forest", params={"n_estimators": 20000}),
             ModelSpec(family="hist_gradient_boosting", params={"max_iter": 20})]
    deadlines = []

    def tune(*args, **share):
        deadlines.append(share.get("deadline"))
        return tune_family(*args, **share)

    said: list[tuple[float, str]] = []
    t0 = time.time()
    results = tune_families(specs, pre, X, y, "classification", "roc_auc",
                            SearchConfig(time_budget=8, cv_folds=2, n_jobs=1), tune=tune,
                            log=lambda msg: said.append((time.time(), msg)))
    deadline = deadlines[0]
    assert deadline is not None and t0 + 8 <= deadline and set(deadlines) == {deadline}
    # the search used its budget and did not hold past it: the forest's first trial runs until it stops itself,
    # which it does before the deadline when its next batch of trees would not fit (sooner on a busy machine).
    # The search's end is when it says so; the winner's fit on every row comes after, outside the budget.
    ended = next(at for at, msg in said if msg.startswith("Tuning: search ended"))
    assert t0 + 4 < ended <= deadline + STRAGGLER_SLACK + 2
    for r in results:
        trials = _trials(r)
        assert all(started <= deadline and stop is not None and stop <= deadline for _, started, stop, *_ in trials)
        assert all(ended <= stop + took for state, _, stop, ended, took in trials if state == "COMPLETE")
        assert r.n_trials == sum(state in {"COMPLETE", "PRUNED"} for state, *_ in trials)
        assert r.cut == sum(state == "FAIL" for state, *_ in trials)
    forest = results[1]
    assert forest.cut >= 1 and forest.n_trials == 0  # its default (20,000 full trees a fold) never finished
    assert forest.partial or (not forest.cv_scores and forest.best_score == float("-inf"))  # at most some folds
    assert "no trial finished" in forest.describe()
    assert results[0].cv_scores and results[2].cv_scores  # the fast families were searched, not starved


def test_forests_and_boosting_stop_themselves_at_a_deadline_and_grow_the_same_model_otherwise(monkeypatch) -> None:
    import time

    import numpy as np
    from sklearn.datasets import make_classification

    from mlops.training.trials import OutOfTime, fit_until, make_estimator

    X, y = make_classification(600, 8, random_state=0)
    for family, params in [("random_forest", {"n_estimators": 37}),
                           ("hist_gradient_boosting", {"max_iter": 300, "early_stopping": True, "max_features": 0.7})]:
        whole = make_estimator(family, "classification", params, 3).fit(X, y)
        grown = fit_until(make_estimator(family, "classification", params, 3), family, X, y, time.time() + 600)
        assert np.array_equal(whole.predict_proba(X), grown.predict_proba(X))
        assert grown.get_params()["warm_start"] is False
    from mlops.training import trials

    forest = make_estimator("random_forest", "classification", {"n_estimators": 400}, 0)
    # a clock that passes the deadline (5) while the first round grows
    monkeypatch.setattr(trials.time, "time", lambda: 10.0 if hasattr(forest, "estimators_") else 0.0)
    with pytest.raises(OutOfTime):
        fit_until(forest, "random_forest", X, y, 5.0)
    assert len(forest.estimators_) == 10  # one round (the first, before the pace is known), then it stopped itself
    with pytest.raises(OutOfTime):  # past the deadline already: not even a round
        fit_until(make_estimator("random_forest", "classification", {}, 0), "random_forest", X, y, 5.0)

    # a clock at which each tree takes 10 ms: rounds are sized to the pace, so the forest stops at the deadline
    # (0.95 s, 95 trees) instead of within a round of 40 past it (120 trees, 1.2 s, as fixed rounds would)
    paced = make_estimator("random_forest", "classification", {"n_estimators": 400}, 0)
    monkeypatch.setattr(trials.time, "time", lambda: 0.01 * len(getattr(paced, "estimators_", [])))
    with pytest.raises(OutOfTime):
        fit_until(paced, "random_forest", X, y, 0.95)
    assert 90 <= len(paced.estimators_) <= 95


@pytest.mark.slow
def test_unpromising_trials_are_pruned_on_the_first_fold(data) -> None:
    X, y, pre = data
    r = tune_family(SPEC, pre, X, y, "classification", "roc_auc", SearchConfig(n_trials=16, cv_folds=3, n_jobs=1))
    pruned = [t for t in r.trials if t["state"] == "pruned"]
    assert r.n_trials == 16 and r.pruned == len(pruned) >= 1
    assert all(len(t["folds"]) < 3 for t in pruned) and r.best_score >= max(t["mean_score"] for t in pruned) - 0.05


@pytest.mark.parametrize(("n_jobs", "cores", "trials", "threads"),
                         [(-1, 2, 2, 1), (1, 2, 1, 2), (8, 2, 2, 1), (-1, 8, 8, 1), (2, 8, 2, 4), (-2, 8, 7, 1),
                          (3, 1, 1, 1)])
def test_trials_times_threads_never_exceed_the_cores(n_jobs, cores, trials, threads) -> None:
    from mlops.training.tuning import thread_plan

    plan = thread_plan(n_jobs, cores)
    assert (plan.trials, plan.per_trial) == (trials, threads) and plan.trials * plan.per_trial <= cores


def test_worker_processes_start_one_thread_each_when_trials_fill_the_cores() -> None:
    from threadpoolctl import threadpool_info

    from mlops.training.trials import ThreadPlan, executor

    pool = executor(ThreadPlan(2, 1))
    infos = pool.submit(threadpool_info).result(timeout=120)
    assert infos and all(i["num_threads"] == 1 for i in infos if i["user_api"] == "openmp")


def _fake(family: str, score: float, trials: int, std: float = 0.01, space: str = "default"):
    from sklearn.dummy import DummyClassifier

    from mlops.training.tuning import FamilyResult

    return FamilyResult(family, DummyClassifier(), {}, score, [score - std, score + std], "roc_auc", trials, 1.0,
                        space=space)


def test_families_within_reach_of_the_leader_keep_searching() -> None:
    from mlops.training.tuning import in_reach

    results = [_fake("hist_gradient_boosting", 0.80, 3), _fake("random_forest", 0.795, 3),
               _fake("logistic_regression", 0.70, 3), _fake("linear_regression", 0.80, 1, space="none")]
    assert [r.family for r in in_reach(results)] == ["hist_gradient_boosting", "random_forest"]


def test_the_trial_pool_goes_to_the_families_in_reach() -> None:
    from mlops.training.tuning import tune_families

    calls: list[tuple[str, int | None]] = []
    scores = {"logistic_regression": 0.70, "random_forest": 0.79, "hist_gradient_boosting": 0.80}

    def tune(spec, *args, max_trials=None, resume=None, **kw):
        calls.append((spec.family, max_trials))
        before = resume.n_trials if resume else 0
        return _fake(spec.family, scores[spec.family], before + (max_trials or 0))

    X = pd.DataFrame({"x": range(60)})
    y = pd.Series([0, 1] * 30)
    from sklearn.preprocessing import StandardScaler

    specs = [ModelSpec(family=f) for f in scores]
    out = tune_families(specs, StandardScaler(), X, y, "classification", "roc_auc",
                        SearchConfig(n_trials=10, cv_folds=2), tune=tune)
    trials = {r.family: r.n_trials for r in out}
    assert trials["logistic_regression"] == 3  # the warm-up only: clearly behind
    assert trials["hist_gradient_boosting"] + trials["random_forest"] == 30 - 3 and sum(trials.values()) == 30
    assert min(trials["hist_gradient_boosting"], trials["random_forest"]) > 10
    # the warm-up goes from the cheapest family to the dearest; each family's search is continued once at most;
    # the one behind is not searched again
    assert calls == [("logistic_regression", 3), ("hist_gradient_boosting", 3), ("random_forest", 3),
                     ("hist_gradient_boosting", 10), ("random_forest", 11)]
    assert hasattr(next(r for r in out if r.family == "hist_gradient_boosting").best_estimator, "classes_")


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_default_space_fits_its_estimators(task) -> None:
    import numpy as np

    from mlops.core.config import CLASSIFICATION_FAMILIES, REGRESSION_FAMILIES, check_family_parameter
    from mlops.training.spaces import DEFAULT_FIXED, default_start
    from mlops.training.trials import make_estimator

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4))
    y = (X[:, 0] > 0).astype(int) if task == "classification" else X[:, 0] * 3
    for family in sorted(CLASSIFICATION_FAMILIES if task == "classification" else REGRESSION_FAMILIES):
        space = DEFAULT_SPACES[family]
        for name, p in space.items():
            check_family_parameter(family, name, p.candidates())
        fixed = DEFAULT_FIXED.get(family, {})
        start = default_start(family, task, space, fixed)
        for name, p in space.items():  # the bounds and every choice fit
            for value in p.candidates():
                make_estimator(family, task, fixed | start | {name: value} | ({"n_estimators": 5}
                               if family == "random_forest" else {}), 0).fit(X, y)


def test_a_family_whose_trials_were_all_cut_offers_the_folds_it_finished(data, monkeypatch) -> None:
    """Cut at the deadline on its second fold, a trial's first fold is still evidence: the family is scored on it
    (said in the summary) rather than dropped for a family that finished but is far worse."""
    import time

    from mlops.training import trials

    def fit_fold(source, fold, *args):
        if fold == 0:
            return 0.9, 0.01
        raise trials.OutOfTime

    monkeypatch.setattr(trials, "fit_fold", fit_fold)
    X, y, pre = data
    r = tune_family(ModelSpec(family="hist_gradient_boosting"), pre, X, y, "classification", "roc_auc",
                    SearchConfig(time_budget=30, cv_folds=3, n_jobs=1), max_trials=2, deadline=time.time() + 60,
                    refit=False)
    assert r.partial and r.best_score == 0.9 and r.cv_scores == [0.9] and r.cut == 2 and r.n_trials == 0
    assert "0.9000 on the 1 fold(s) it finished" in r.describe()


def test_a_search_never_ends_with_only_a_linear_baseline_scored() -> None:
    """When the budget ran out before any tree family had a score, the cheapest tree family's defaults are fitted
    whatever the time (a linear baseline would otherwise win by default); a scored tree family needs no rescue."""
    from sklearn.preprocessing import StandardScaler

    from mlops.training.tuning import tune_families

    X = pd.DataFrame({"x": range(60)})
    y = pd.Series([0, 1] * 30)

    def run(scored: set[str]) -> list[tuple[str, object, object]]:
        calls = []

        def tune(spec, *args, budget=None, max_trials=None, resume=None, **kw):
            calls.append((spec.family, budget, max_trials))
            if spec.family in scored or budget is None:
                return _fake(spec.family, 0.9 if spec.family != "logistic_regression" else 0.6, 1)
            out = _fake(spec.family, float("-inf"), 0)
            out.cv_scores = []
            return out

        specs = [ModelSpec(family=f) for f in ["random_forest", "logistic_regression", "hist_gradient_boosting"]]
        tune_families(specs, StandardScaler(), X, y, "classification", "roc_auc",
                      SearchConfig(time_budget=10, cv_folds=2), tune=tune)
        return calls

    rescued = run({"logistic_regression"})
    assert ("hist_gradient_boosting", None, 1) in rescued and ("random_forest", None, 1) not in rescued
    assert all(budget is not None for _, budget, _ in run({"logistic_regression", "random_forest"}))


def test_boosting_starts_from_its_defaults_then_a_portfolio_of_shapes_inside_the_space() -> None:
    from mlops.training.spaces import resolve_space, starts

    space, fixed, _ = resolve_space(ModelSpec(family="hist_gradient_boosting"))
    first = starts("hist_gradient_boosting", "regression", space, fixed)
    assert first[0]["max_iter"] == 100 and first[0]["max_leaf_nodes"] == 31  # the estimator's defaults first
    assert first[0]["l2_regularization"] == space["l2_regularization"].low  # its default 0, moved into the range
    assert [(s["max_iter"], s["max_leaf_nodes"], s["learning_rate"]) for s in first[1:]] == [
        (1000, 31, 0.1), (1000, 7, 0.05), (1000, 127, 0.05), (1000, 2, 0.5)]  # early stopping picks the rounds of every shape
    # a user's narrower space: shapes outside it are left out, and no start is asked twice
    narrow = {"max_iter": Param(type="int", low=50, high=500), "max_leaf_nodes": Param(type="int", low=8, high=64)}
    assert starts("hist_gradient_boosting", "regression", narrow, {"early_stopping": True}) == [
        {"max_iter": 100, "max_leaf_nodes": 31}, {"max_iter": 500, "max_leaf_nodes": 31}]
    assert len(starts("random_forest", "regression", *resolve_space(ModelSpec(family="random_forest"))[:2])) == 1


def test_starts_cut_at_a_phase_end_are_asked_first_in_the_next_and_slow_trials_are_not_started(data, monkeypatch) -> None:
    """A warm-up's share is short: the starts it cut are the first trials of the family's next share; a trial
    cut at its deadline leaves an estimate of its whole time, and no trial starts that would not fit a share."""
    import time

    from mlops.training import trials
    from mlops.training.tuning import cut_starts, expected_seconds

    asked: list[int] = []
    cut_shapes = {7, 127}

    def fit_fold(source, fold, family, task, params, *args):
        if fold == 0:
            asked.append(params["max_leaf_nodes"])
        if params["max_leaf_nodes"] in cut_shapes:
            time.sleep(0.3)
            raise trials.OutOfTime
        return 0.9 - abs(params["max_leaf_nodes"] - 7) / 1000, 0.01  # the shallow shape scores best

    monkeypatch.setattr(trials, "fit_fold", fit_fold)
    X, y, pre = data
    spec = ModelSpec(family="hist_gradient_boosting")
    cfg = SearchConfig(time_budget=30, cv_folds=2, n_jobs=1)
    warm = tune_family(spec, pre, X, y, "classification", "roc_auc", cfg, max_trials=5, refit=False)
    assert asked == [31, 31, 7, 127, 2] and warm.cut == 2 and warm.n_trials == 3
    assert [s["max_leaf_nodes"] for s in cut_starts(warm.study)] == [7, 127]
    cut = [t for t in warm.study.trials if t.state.name == "FAIL"]
    assert all(t.user_attrs["estimate"] >= 0.3 * 2 for t in cut)  # at the pace it was cut at, over both folds

    asked.clear()
    cut_shapes = {127}  # the next share is long enough for the shallow shape
    more = tune_family(spec, pre, X, y, "classification", "roc_auc", cfg, max_trials=2, resume=warm, refit=False,
                       free_start=False)
    assert asked == [7, 127] and more.best_params["max_leaf_nodes"] == 7 and more.cut == 3
    assert cut_starts(more.study) == []  # a start cut twice stays cut

    cut_shapes = {2, 7, 31, 127}  # a family whose every trial is cut: its usual trial time is what they would take
    asked.clear()
    cut_all = tune_family(spec, pre, X, y, "classification", "roc_auc", cfg, budget=5, max_trials=2, refit=False,
                          free_start=False)
    assert len(asked) == 2 and cut_all.cut == 2 and expected_seconds(cut_all.study) >= 0.6
    asked.clear()
    slow = tune_family(spec, pre, X, y, "classification", "roc_auc", cfg, budget=0.5, max_trials=3, resume=cut_all,
                       refit=False, free_start=False)
    assert asked == [] and slow.n_trials == 0  # a 0.6 s trial does not fit a 0.5 s share: none started


def test_the_best_start_is_refined_by_halving_and_doubling_its_shape_while_that_improves(data, monkeypatch) -> None:
    """Boosting's starts are a handful of shapes; the best of them is moved one step at a time along its leaves
    and its learning rate, from each move that became the best, before the sampler goes on alone."""
    from mlops.training import trials
    from mlops.training.spaces import moves, resolve_space

    space = resolve_space(ModelSpec(family="hist_gradient_boosting"))[0]
    assert moves("hist_gradient_boosting", space, {"max_leaf_nodes": 7, "learning_rate": 0.05, "max_iter": 9}) == [
        {"max_leaf_nodes": 4, "learning_rate": 0.05, "max_iter": 9},
        {"max_leaf_nodes": 14, "learning_rate": 0.05, "max_iter": 9},
        {"max_leaf_nodes": 7, "learning_rate": 0.025, "max_iter": 9},
        {"max_leaf_nodes": 7, "learning_rate": 0.1, "max_iter": 9}]
    # at the space's edge a step out of it is left out; families without shape axes have no moves
    assert moves("hist_gradient_boosting", space, {"max_leaf_nodes": 2, "learning_rate": 0.5}) == [
        {"max_leaf_nodes": 4, "learning_rate": 0.5}, {"max_leaf_nodes": 2, "learning_rate": 0.25}]
    assert moves("random_forest", space, {"max_leaf_nodes": 7}) == []

    asked: list[tuple[int, float]] = []

    def fit_fold(source, fold, family, task, params, *args):
        if fold == 0:
            asked.append((params["max_leaf_nodes"], round(params["learning_rate"], 4)))
        # the best shape: 4 leaves at a rate of 0.025, two steps from the shallow start (7 leaves, 0.05)
        return 0.9 - abs(params["max_leaf_nodes"] - 4) / 100 - abs(params["learning_rate"] - 0.025), 0.01

    monkeypatch.setattr(trials, "fit_fold", fit_fold)
    X, y, pre = data
    cfg = SearchConfig(cv_folds=2, n_jobs=1)
    result = tune_family(ModelSpec(family="hist_gradient_boosting"), pre, X, y, "classification", "roc_auc", cfg,
                         budget=None, max_trials=16, refit=False)
    n_starts = 5  # defaults, early-stopped defaults, three shapes
    assert asked[n_starts:n_starts + 4] == [(4, 0.05), (14, 0.05), (7, 0.025), (7, 0.1)]  # from the shallow start
    assert (4, 0.025) in asked[n_starts + 4:n_starts + 8]  # then from the best move
    assert (result.best_params["max_leaf_nodes"], result.best_params["learning_rate"]) == (4, 0.025)
