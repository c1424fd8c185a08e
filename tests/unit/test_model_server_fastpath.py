"""The fast path (numpy features + flat tree arrays) against Pipeline.predict/predict_proba: identical
bits on thousands of rows with nulls, unknown categories and missing timestamps, in batches and one row
at a time, for each model family; unsupported shapes fall back to the full pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from mlops.core.contract import coerce_to_contract
from mlops.serving.fastpath import Unsupported, compile_fast_path
from mlops.serving.model import build_served_model
from mlops.serving.records import Batch, Validator, records_from_frame
from tests.support.model_server import churn_frame, fit_pipeline

CASES = [
    ("churned", "classification", "hist_gradient_boosting", {"max_iter": 40}),
    ("churned", "classification", "logistic_regression", {}),
    ("churned", "classification", "random_forest", {"n_estimators": 15, "max_depth": 8}),
    ("contract", "classification", "hist_gradient_boosting", {"max_iter": 15}),  # three classes
    ("usage_gb", "regression", "hist_gradient_boosting", {"max_iter": 40}),
    ("usage_gb", "regression", "ridge", {}),
]
DATE_PARTS = ["year", "year_month", "decimal_year", "month", "day", "dayofweek", "hour"]  # every part a config can name


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """As in the server: scikit-learn's single-row HistGradientBoosting spends its time starting threads."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def messy_rows(contract: Any, target: str, n: int = 3000) -> pd.DataFrame:
    """Drifted rows with nulls in every kind of column, unseen categories and missing timestamps."""
    df = churn_frame(n, seed=99, drift=0.6)
    frame = coerce_to_contract(df, contract, need_target=False).frame.drop(columns=[target])
    rng = np.random.default_rng(7)
    for col, value in [("region", "mars"), ("plan", "platinum"), ("payment_method", None), ("plan", None),
                       ("tenure_months", np.nan), ("age", np.nan), ("usage_gb", np.nan), ("event_time", pd.NaT),
                       ("contract", "weekly"), ("contract", None)]:
        if col in frame.columns:
            frame.loc[rng.uniform(size=len(frame)) < 0.07, col] = value
    return frame.reset_index(drop=True)


@pytest.fixture(scope="module", params=CASES, ids=[f"{c[2]}-{c[0]}" for c in CASES])
def fitted(request: pytest.FixtureRequest) -> dict[str, Any]:
    target, task, family, params = request.param
    pipe, contract, _ = fit_pipeline(churn_frame(2500, seed=4), target, task=task, family=family, params=params,
                                     id_column="customer_id", timestamp_column="event_time", date_parts=DATE_PARTS)
    validator = Validator(contract.without_target(), enforce_ranges=False, target=target)
    X = messy_rows(contract, target)
    batch = validator.validate(records_from_frame(X), max_rows=10**6)
    kinds = {r.name: r.kind for r in validator.rules}
    allowed = {c.name: list(c.allowed) for c in contract.columns if c.allowed}
    fast = compile_fast_path(pipe, kinds, allowed, task == "classification")
    return {"pipe": pipe, "contract": contract, "X": X, "batch": batch, "fast": fast, "validator": validator,
            "task": task}


def _row(batch: Batch, i: int) -> Batch:
    return Batch({k: [v[i]] for k, v in batch.columns.items()}, 1)


def test_features_are_identical(fitted: dict[str, Any]) -> None:
    want = fitted["pipe"][0].transform(fitted["X"])
    got = fitted["fast"].features(fitted["batch"])
    assert got.shape == want.shape and np.array_equal(got, want)


def test_batch_predictions_are_identical(fitted: dict[str, Any]) -> None:
    pipe, X, fast = fitted["pipe"], fitted["X"], fitted["fast"]
    for rows in (slice(0, 40), slice(None)):  # under and over the tree-walk row threshold
        pred, proba = fast.predict(Batch({k: v[rows] for k, v in fitted["batch"].columns.items()},
                                         len(X.iloc[rows])))
        assert np.array_equal(pred, pipe.predict(X.iloc[rows]))
        if fitted["task"] == "classification":
            assert np.array_equal(proba, pipe.predict_proba(X.iloc[rows]))


@pytest.mark.slow
def test_single_rows_are_identical(fitted: dict[str, Any]) -> None:
    pipe, X, fast, batch = fitted["pipe"], fitted["X"], fitted["fast"], fitted["batch"]
    n = 60 if fitted["fast"].trees is None else 400
    for i in range(n):
        pred, proba = fast.predict(_row(batch, i))
        one = X.iloc[[i]]
        assert pred[0] == pipe.predict(one)[0], i
        if fitted["task"] == "classification":
            assert np.array_equal(proba, pipe.predict_proba(one)), i


def test_tree_models_walk_flat_arrays(fitted: dict[str, Any]) -> None:
    est = fitted["pipe"][-1]
    assert (fitted["fast"].trees is not None) == type(est).__name__.startswith("HistGradientBoosting")


def test_unsupported_pipeline_falls_back_to_the_full_pipeline() -> None:
    pipe, contract, frame = fit_pipeline(churn_frame(800, seed=4), "churned", params={"max_iter": 10},
                                         id_column="customer_id", timestamp_column="event_time")
    numeric = pipe[0].named_transformers_["numeric"]
    numeric.steps[-1] = ("scale", MinMaxScaler().fit(numeric[:-1].transform(frame[pipe[0].transformers_[0][2]])))
    X = frame.drop(columns=["churned"])
    ref = X.head(100).copy()
    ref["prediction"] = pipe.predict(ref)
    validator = Validator(contract.without_target())
    with pytest.raises(Unsupported, match="MinMaxScaler"):
        compile_fast_path(pipe, {r.name: r.kind for r in validator.rules}, {}, True)
    served = build_served_model("churn", "1", "r", pipe, contract, ref)
    assert served.fast is None and "MinMaxScaler" in served.fast_reason
    assert served.self_check["reproduces_training_predictions"]
    batch = served.validator.validate(records_from_frame(X.head(5)), 10)
    assert np.array_equal(served.score(batch).probabilities, pipe.predict_proba(X.head(5)))


def test_a_pipeline_that_does_not_reproduce_its_reference_is_refused() -> None:
    from mlops.serving.model import LoadError

    pipe, contract, frame = fit_pipeline(churn_frame(600, seed=4), "churned", params={"max_iter": 10},
                                         id_column="customer_id", timestamp_column="event_time")
    ref = frame.head(50).copy()
    ref["prediction"] = 1 - pipe.predict(ref.drop(columns=["churned"]))  # not what this artifact predicts
    with pytest.raises(LoadError, match="does not reproduce"):
        build_served_model("churn", "1", "r", pipe, contract, ref)


def test_a_wrong_fast_path_is_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe, contract, frame = fit_pipeline(churn_frame(600, seed=4), "churned", params={"max_iter": 10},
                                         id_column="customer_id", timestamp_column="event_time")
    ref = frame.head(50).copy()
    X = ref.drop(columns=["churned"])
    ref["prediction"] = pipe.predict(X)
    from mlops.serving import fastpath

    real = fastpath.HGBTrees.raw
    monkeypatch.setattr(fastpath.HGBTrees, "raw", lambda self, X: real(self, X) + 1e-12)
    served = build_served_model("churn", "1", "r", pipe, contract, ref)
    assert served.fast is None and "switched off" in served.fast_reason
    batch = served.validator.validate(records_from_frame(X.head(3)), 10)
    assert np.array_equal(served.score(batch).probabilities, pipe.predict_proba(X.head(3)))


def test_pipeline_shape_checks() -> None:
    with pytest.raises(Unsupported):
        compile_fast_path(Pipeline([("model", MinMaxScaler())]), {}, {}, False)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_binned_walk_splits_as_the_float_walk_at_every_threshold(task: str) -> None:
    """Each split's own threshold, the floats either side of it, +-inf and NaN: the walk over the bins
    gives the same bits as scikit-learn's walk over the floats."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from mlops.serving.fastpath import HGBTrees

    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 5)).round(2)
    X[rng.uniform(size=X.shape) < 0.05] = np.nan
    y = np.nan_to_num(X[:, 0]) * 2 + np.nan_to_num(X[:, 1]) ** 2 + rng.normal(size=len(X))
    if task == "classification":
        y = np.digitize(y, [-1.0, 1.0])  # three classes: three trees per iteration
        est = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)
    else:
        est = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X, y)
    probe = rng.normal(size=(4000, 5))
    splits = [(int(node["feature_idx"]), node["num_threshold"]) for (p, *_) in est._predictors
              for node in p.nodes if not node["is_leaf"]]
    for i, (f, t) in enumerate(splits[: len(probe) // 3]):
        for j, value in enumerate((t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf))):
            probe[3 * i + j, f] = value
    probe[-30:-20] = np.inf
    probe[-20:-10] = -np.inf
    probe[-10:] = np.nan
    trees = HGBTrees(est)
    assert np.array_equal(trees.binned_raw(probe), est._raw_predict(probe))
