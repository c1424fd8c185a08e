import pandas as pd
import pytest

from mlops.core.config import FeatureConfig, ModelSpec, Param, SearchConfig, ValidationConfig
from mlops.core.contract import infer_contract
from mlops.core.data import generate_churn
from mlops.core.features import build_preprocessor
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
    assert pick_best([r1, r2]).best_score == max(r1.best_score, r2.best_score)


def test_fixed_params_only(data) -> None:
    X, y, pre = data
    r = tune_family(ModelSpec(family="random_forest", params={"n_estimators": 10}), pre, X, y, "classification",
                    "roc_auc", SearchConfig(cv_folds=2))
    assert r.n_trials == 1 and r.best_estimator.named_steps["model"].n_estimators == 10


def test_search_runs_on_a_real_dask_cluster(data) -> None:
    from distributed import LocalCluster

    X, y, pre = data
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        local = tune_family(SPEC, pre, X, y, "classification", "roc_auc", SearchConfig(n_trials=3, cv_folds=2, seed=4))
        remote = tune_family(SPEC, pre, X, y, "classification", "roc_auc",
                             SearchConfig(n_trials=3, cv_folds=2, seed=4, backend="dask",
                                          dask_address=cluster.scheduler_address))
        from distributed import Client

        with Client(cluster.scheduler_address) as c:
            # the workers really ran tasks: their task logs are not empty
            ran = c.run(lambda dask_worker: len(dask_worker.state.log))
    assert remote.best_params == local.best_params
    assert remote.best_score == pytest.approx(local.best_score)
    assert all(n > 0 for n in ran.values())


def test_dask_backend_needs_an_address(data, monkeypatch) -> None:
    from mlops.core.errors import ConfigError

    monkeypatch.delenv("MLOPS_DASK_ADDRESS", raising=False)
    X, y, pre = data
    with pytest.raises(ConfigError, match="set search.dask_address in the config or MLOPS_DASK_ADDRESS"):
        tune_family(SPEC, pre, X, y, "classification", "roc_auc", SearchConfig(backend="dask"))


def test_dask_backend_takes_the_stack_address_and_names_a_dead_scheduler(data, monkeypatch) -> None:
    """Without search.dask_address the stack's MLOPS_DASK_ADDRESS is used; nobody there is one sentence."""
    import socket

    from mlops.core.errors import ConfigError

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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
