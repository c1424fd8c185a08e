"""What `mlops monitor` changes in its own process to make a monitor + retrain cycle cheaper (mlops.cli.monitor
.live_cycle) must not change what the retrain trains: the same search, on threads instead of worker
processes and with one OpenMP/BLAS thread, picks the same parameters and fits the same model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlops.cli.monitor import live_cycle
from mlops.core.config import PipelineConfig, load_config
from mlops.serving import infra_validation as iv
from tests.conftest import REPO
from tests.support.model_server import churn_frame, fit_pipeline


@pytest.fixture(scope="module")
def cfg() -> PipelineConfig:
    return load_config(REPO / "configs" / "default.yaml")


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    _, contract, frame = fit_pipeline(churn_frame(900, seed=61), "churned", params={"max_iter": 10},
                                      id_column="customer_id", timestamp_column="event_time")
    return {"contract": contract, "X": frame.drop(columns=["churned"]), "y": frame["churned"]}


def _search(cfg: PipelineConfig, data: dict[str, Any], family: str) -> Any:
    from mlops.core.features import build_preprocessor
    from mlops.training.tuning import tune_family

    spec = next(m for m in cfg.models if m.family == family)
    search = cfg.search.model_copy(update={"n_trials": 3, "cv_folds": 2, "n_jobs": 2})
    return tune_family(spec, build_preprocessor(data["contract"], cfg.features), data["X"], data["y"],
                       "classification", "roc_auc", search)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["logistic_regression", "random_forest", "hist_gradient_boosting"])
def test_the_retrain_search_is_the_same_inside_the_live_cycle(cfg: PipelineConfig, data: dict[str, Any],
                                                              family: str) -> None:
    usual = _search(cfg, data, family)  # worker processes, as `mlops train` runs it
    try:
        with live_cycle(cfg):
            cycle = _search(cfg, data, family)
    finally:
        iv._close_spare()
    assert cycle.best_params == usual.best_params
    assert [t["mean_score"] for t in cycle.trials] == [t["mean_score"] for t in usual.trials]
    X = data["X"]
    assert np.array_equal(cycle.best_estimator.predict_proba(X), usual.best_estimator.predict_proba(X))


def test_the_live_cycle_prestarts_the_fresh_process_only_when_the_retrain_runs_here(cfg: PipelineConfig) -> None:
    try:
        with live_cycle(cfg):
            assert iv._spare is not None and iv._spare.alive()  # default: the retrain runs in this process
    finally:
        iv._close_spare()
    policy = cfg.monitoring.policy.model_copy(update={"run_training_locally": False})
    elsewhere = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"policy": policy})})
    with live_cycle(elsewhere):
        assert iv._spare is None
