"""scikit-learn's successive halving as a search strategy (`search.strategy: halving`): its candidates drawn from
the same spaces as the Optuna search, the result in the same shape."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.pipeline import Pipeline

from mlops.core.config import ModelSpec, Param, SearchConfig
from mlops.training.scorers import scoring_name
from mlops.training.trials import joblib_backend, limits, make_estimator, splitter, thread_plan


class _LogInt:
    """An integer drawn on a log scale, for scikit-learn's samplers (halving)."""

    def __init__(self, low: int, high: int) -> None:
        self.dist = stats.loguniform(low, high + 1)
        self.high = high

    def rvs(self, random_state: Any = None) -> int:
        return min(int(self.dist.rvs(random_state=random_state)), self.high)


def distribution(p: Param) -> Any:
    """A Param as a scikit-learn sampler distribution (successive halving)."""
    if p.type == "choice":
        return list(p.values or [])
    assert p.low is not None and p.high is not None
    if p.type == "int":
        return _LogInt(int(p.low), int(p.high)) if p.log else stats.randint(int(p.low), int(p.high) + 1)
    if p.type == "uniform":
        return stats.uniform(p.low, p.high - p.low)
    return stats.loguniform(p.low, p.high)



def halving_search(spec: ModelSpec, preprocessor: Any, X: pd.DataFrame, y: pd.Series, task: str, scoring: Any,
                   cfg: SearchConfig, space: dict[str, Param], fixed: dict[str, Any], source: str) -> dict[str, Any]:
    """scikit-learn's successive halving over n_trials candidates, as the fields of a FamilyResult; trials counts
    the candidates (configurations), not the rounds."""
    from sklearn.base import clone
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingRandomSearchCV

    pipe = Pipeline([("features", clone(preprocessor)), ("model", make_estimator(spec.family, task, fixed, cfg.seed))])
    plan = thread_plan(cfg.n_jobs)
    search = HalvingRandomSearchCV(
        pipe, {f"model__{k}": distribution(v) for k, v in space.items()}, n_candidates=max(cfg.trials or 8, 2),
        scoring=scoring, cv=splitter(task, cfg.cv_folds, cfg.seed), n_jobs=plan.trials, random_state=cfg.seed,
        refit=True, error_score="raise", factor=2, min_resources="exhaust")
    t0 = time.perf_counter()
    with joblib_backend(cfg), limits(plan.per_trial):
        search.fit(X, y)
    res = search.cv_results_
    best = int(search.best_index_)
    folds = [float(res[f"split{i}_test_score"][best]) for i in range(cfg.cv_folds) if f"split{i}_test_score" in res]
    trials = [{"params": {k.removeprefix("model__"): _jsonable(v) for k, v in p.items()}, "round": int(res["iter"][i]),
               "mean_score": float(res["mean_test_score"][i]), "std_score": float(res["std_test_score"][i])}
              for i, p in enumerate(res["params"])]
    return dict(
        family=spec.family, best_estimator=search.best_estimator_,
        best_params={k.removeprefix("model__"): _jsonable(v) for k, v in search.best_params_.items()},
        best_score=float(search.best_score_), cv_scores=folds, scoring=scoring_name(scoring),
        n_trials=int(search.n_candidates_[0]), seconds=time.perf_counter() - t0, trials=trials, space=source,
        stopped="halving", threads=plan.describe())


def _jsonable(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
