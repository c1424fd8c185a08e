"""Hyperparameter search per model family: seeded scikit-learn search (random or successive halving),
trials in parallel on every core, or on a Dask cluster for scale."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from mlops.core.config import ModelSpec, Param, SearchConfig

SCORERS = {
    ("classification", "roc_auc", True): "roc_auc",
    ("classification", "roc_auc", False): "roc_auc_ovr",
    ("classification", "f1", True): "f1",
    ("classification", "f1", False): "f1_macro",
    ("classification", "accuracy", True): "accuracy",
    ("classification", "accuracy", False): "accuracy",
    ("classification", "log_loss", True): "neg_log_loss",
    ("classification", "log_loss", False): "neg_log_loss",
    ("regression", "rmse", True): "neg_root_mean_squared_error",
    ("regression", "mae", True): "neg_mean_absolute_error",
    ("regression", "r2", True): "r2",
}


def scorer_for(task: str, metric: str, binary: bool, override: str | None = None, *,
               labels: Any = None, positive_class: Any = None) -> Any:
    """The scikit-learn scorer the search maximises: a scorer name, or for binary f1 with a positive class
    other than 1 a scorer that says which class is positive (sklearn's "f1" scores label 1).

    `labels` (the training target) let it resolve `positive_class` (None: 1 / True for 0/1 or boolean
    labels, else the larger label); a positive_class that is not a label is a DataError, raised here so a
    bad config stops before the search starts. `override` (search.scoring) wins over all of this.
    """
    if task == "classification" and binary and labels is not None:
        from mlops.training.evaluation import positive_label

        classes = sorted(pd.unique(pd.Series(labels).dropna()).tolist())
        positive = positive_label(classes, positive_class) if len(classes) == 2 else None
    else:
        positive = None
    if override:
        return override
    name = SCORERS[(task, metric, binary if task == "classification" else True)]
    if name == "f1" and positive is not None and not (positive == 1 and not isinstance(positive, str)):
        from sklearn.metrics import f1_score, make_scorer

        return make_scorer(f1_score, pos_label=positive, zero_division=0)
    return name


def scoring_name(scoring: Any) -> str:
    """A scorer as text for logs and parameters, e.g. `f1(pos_label='no')`."""
    if isinstance(scoring, str):
        return scoring
    func = getattr(getattr(scoring, "_score_func", None), "__name__", None)
    kwargs = {k: v for k, v in getattr(scoring, "_kwargs", {}).items() if k != "zero_division"}
    if func:
        return f"{func.removesuffix('_score')}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    return str(scoring)


def make_estimator(family: str, task: str, params: dict[str, Any], seed: int) -> BaseEstimator:
    """A fresh estimator of the family with fixed parameters; n_jobs=1 inside, parallelism is across trials."""
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

    clf = task == "classification"
    if family == "logistic_regression":
        return LogisticRegression(max_iter=2000, random_state=seed, **params)
    if family == "linear_regression":
        return LinearRegression(**params)
    if family == "ridge":
        return Ridge(random_state=seed, **params)
    if family == "random_forest":
        cls = RandomForestClassifier if clf else RandomForestRegressor
        return cls(random_state=seed, n_jobs=1, **params)
    if family == "hist_gradient_boosting":
        cls = HistGradientBoostingClassifier if clf else HistGradientBoostingRegressor
        return cls(random_state=seed, **params)
    raise ValueError(f"unknown model family {family!r}")


def distribution(p: Param) -> Any:
    if p.type == "choice":
        return list(p.values or [])
    assert p.low is not None and p.high is not None
    if p.type == "int":
        return stats.randint(int(p.low), int(p.high) + 1)
    if p.type == "uniform":
        return stats.uniform(p.low, p.high - p.low)
    return stats.loguniform(p.low, p.high)


@dataclass
class FamilyResult:
    family: str
    best_estimator: Pipeline
    best_params: dict[str, Any]
    best_score: float
    cv_scores: list[float]
    scoring: str
    n_trials: int
    seconds: float
    trials: list[dict[str, Any]] = field(default_factory=list)

    def leaderboard_row(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "cv_score": round(self.best_score, 5),
            "cv_std": round(float(np.std(self.cv_scores)), 5),
            "trials": self.n_trials,
            "seconds": round(self.seconds, 2),
            "best_params": ", ".join(f"{k}={_short(v)}" for k, v in self.best_params.items()),
        }


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@contextlib.contextmanager
def _backend(cfg: SearchConfig) -> Iterator[None]:
    if cfg.backend != "dask":
        yield
        return
    import joblib

    from mlops.core.dask import connect, scheduler_address
    from mlops.core.settings import get_settings

    with connect(scheduler_address(cfg.dask_address, get_settings(), "search"), "search") as client, \
            joblib.parallel_backend("dask", client=client):
        yield


def tune_family(
    spec: ModelSpec,
    preprocessor: Any,
    X: pd.DataFrame,
    y: pd.Series,
    task: str,
    scoring: Any,
    cfg: SearchConfig,
) -> FamilyResult:
    """Search one family's space with cross-validation and refit the best on all of X."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold, RandomizedSearchCV, StratifiedKFold

    pipe = Pipeline([("features", clone(preprocessor)), ("model", make_estimator(spec.family, task, spec.params, cfg.seed))])
    space = {f"model__{k}": distribution(v) for k, v in spec.search_space.items()}
    splitter = (
        StratifiedKFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed)
        if task == "classification"
        else KFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed)
    )
    n_jobs = cfg.n_jobs
    t0 = time.perf_counter()
    if not space:
        # nothing to search: one trial, the family with its fixed parameters
        from sklearn.model_selection import GridSearchCV

        search: Any = GridSearchCV(pipe, [{}], scoring=scoring, cv=splitter, n_jobs=n_jobs, refit=True,
                                   error_score="raise")
    elif cfg.strategy == "halving":
        from sklearn.experimental import enable_halving_search_cv  # noqa: F401
        from sklearn.model_selection import HalvingRandomSearchCV

        search = HalvingRandomSearchCV(
            pipe, space, n_candidates=max(cfg.n_trials, 2), scoring=scoring, cv=splitter, n_jobs=n_jobs,
            random_state=cfg.seed, refit=True, error_score="raise", factor=2, min_resources="exhaust",
        )
    else:
        search = RandomizedSearchCV(
            pipe, space, n_iter=cfg.n_trials, scoring=scoring, cv=splitter, n_jobs=n_jobs,
            random_state=cfg.seed, refit=True, error_score="raise",
        )
    with _backend(cfg):
        search.fit(X, y)
    seconds = time.perf_counter() - t0
    res = search.cv_results_
    best = int(search.best_index_)
    folds = [float(res[f"split{i}_test_score"][best]) for i in range(cfg.cv_folds) if f"split{i}_test_score" in res]
    trials = [
        {"params": {k.removeprefix("model__"): _jsonable(v) for k, v in p.items()},
         "mean_score": float(res["mean_test_score"][i]), "std_score": float(res["std_test_score"][i])}
        for i, p in enumerate(res["params"])
    ]
    return FamilyResult(
        family=spec.family,
        best_estimator=search.best_estimator_,
        best_params={k.removeprefix("model__"): _jsonable(v) for k, v in search.best_params_.items()},
        best_score=float(search.best_score_),
        cv_scores=folds,
        scoring=scoring_name(scoring),
        n_trials=len(res["params"]),
        seconds=seconds,
        trials=trials,
    )


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def pick_best(results: list[FamilyResult]) -> FamilyResult:
    """The family with the best cross-validated score (scorers are 'greater is better')."""
    return max(results, key=lambda r: r.best_score)


def refit_on_all(model: Any, train: pd.DataFrame, test: pd.DataFrame, target: str) -> Any:
    """A fresh copy of the gated configuration fitted on train + holdout.

    With time-ordered data the holdout is the newest rows; the gate judged the model fitted without
    them, and this copy (same hyperparameters, one fit more) is the one registered and served.
    """
    from sklearn.base import clone

    rows = pd.concat([train, test], ignore_index=True)
    return clone(model).fit(rows.drop(columns=[target]), rows[target])
