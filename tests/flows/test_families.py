"""The flow's own tasks ship a random forest: register_challenger, then infra validation started at
once and timed only when the flow asks (start_infra_validation / finish_infra_validation)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from mlops.training.gate import Check

pytestmark = pytest.mark.process


@flow(name="ship-family")
def ship_family(task: str, family: str) -> dict[str, Any]:
    import mlflow
    from sklearn.pipeline import Pipeline

    from mlops.core.config import FeatureConfig, ValidationConfig
    from mlops.core.contract import coerce_to_contract, infer_contract
    from mlops.core.features import build_preprocessor
    from mlops.serving.infra_validation import FreshProcess
    from mlops.training.tuning import make_estimator
    from tasks.deployment import finish_infra_validation, start_infra_validation
    from tasks.registry import register_challenger
    from tests.support.families import SMALL, messy_frame

    fresh = FreshProcess()  # as the training flow does: started before the model exists
    try:
        target, other = ("churned", "spend") if task == "classification" else ("spend", "churned")
        raw = messy_frame(200, seed=4).drop(columns=[other])
        contract = infer_contract(raw, target, task, ValidationConfig(), id_column="account")
        frame = coerce_to_contract(raw, contract).frame
        train, test = frame.iloc[:150], frame.iloc[150:].reset_index(drop=True)
        X = train.drop(columns=[target])
        pipe = Pipeline([("features", build_preprocessor(contract, FeatureConfig())),
                         ("model", make_estimator(family, task, SMALL[family], seed=0))]).fit(X, train[target])
        mlflow.set_experiment("ship-family")
        with mlflow.start_run() as run:
            run_id = run.info.run_id
        name = f"ship-{task}-{family}"
        version = register_challenger(run_id, pipe, name, X.head(50), contract)
        infra = start_infra_validation(name, version, pipe, test.drop(columns=[target]), task, 5000.0,
                                       os.environ["MLFLOW_TRACKING_URI"], fresh, 90.0)
        check = finish_infra_validation(infra)
    finally:
        fresh.close()
    return {"version": version, "check": check}


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_flow_tasks_register_and_validate_a_random_forest(state_dir: Path, task: str) -> None:
    out = ship_family(task, "random_forest")
    check = out["check"]
    assert isinstance(check, Check) and check.name == "infra validation"
    assert check.passed, check.detail
    assert "50 holdout rows match" in check.detail and "p90 single-row latency" in check.detail
    assert "timed on the caller's signal" in check.detail and out["version"] == "1"
