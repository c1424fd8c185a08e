"""Every model family the config allows, for both tasks, registers, loads in a fresh process with the
model server's loader and serves the flow's predictions (issue 9: random forests could not register)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops.core.config import CLASSIFICATION_FAMILIES, REGRESSION_FAMILIES
from tests.support.families import SMALL, messy_frame

pytestmark = pytest.mark.process

MATRIX = [("classification", f) for f in sorted(CLASSIFICATION_FAMILIES)] + [
    ("regression", f) for f in sorted(REGRESSION_FAMILIES)]
BUDGET_MS = 5000.0  # correctness is the point here; the latency check has its own tests
CONCURRENT = 3  # fresh processes importing the serving stack at once


def fit_and_register(task: str, family: str) -> dict[str, Any]:
    """Fit the family in the flow's Pipeline, register it the flow's way; the holdout and its expected outputs."""
    import mlflow
    from sklearn.pipeline import Pipeline

    from mlops.core.config import FeatureConfig, ValidationConfig
    from mlops.core.contract import coerce_to_contract, infer_contract
    from mlops.core.features import build_preprocessor
    from mlops.registry.tracking import log_model_version, log_run_artifacts
    from mlops.training.tuning import make_estimator

    target, other = ("churned", "spend") if task == "classification" else ("spend", "churned")
    raw = messy_frame(240, seed=len(family) + len(task)).drop(columns=[other])
    contract = infer_contract(raw, target, task, ValidationConfig(), id_column="account")
    frame = coerce_to_contract(raw, contract).frame
    train, test = frame.iloc[:180], frame.iloc[180:].reset_index(drop=True)
    X, y = train.drop(columns=[target]), train[target]
    pipe = Pipeline([("features", build_preprocessor(contract, FeatureConfig())),
                     ("model", make_estimator(family, task, dict(SMALL.get(family, {})), seed=0))]).fit(X, y)
    name = f"{task}-{family}"
    ref = train.head(80).reset_index(drop=True)
    ref["prediction"] = pipe.predict(ref.drop(columns=[target]))
    if task == "classification":
        ref["prediction_proba"] = pipe.predict_proba(ref.drop(columns=[target]))[:, 1]
    mlflow.set_experiment(name)
    with mlflow.start_run() as run:
        run_id = run.info.run_id
    version = log_model_version(run_id, pipe, name, X.head(50), pipe.predict(X.head(50)),
                                optional_columns=[contract.id_column])
    with tempfile.TemporaryDirectory() as tmp:
        ref.to_parquet(Path(tmp) / "reference.parquet", index=False)
        log_run_artifacts(run_id, [("reference", Path(tmp) / "reference.parquet")],
                          {"contract/contract.json": contract.to_json()})
    X_test = test.drop(columns=[target])
    expected = pipe.predict_proba(X_test) if task == "classification" else pipe.predict(X_test)
    return {"name": name, "version": version, "holdout": test, "expected": expected}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], tuple[bool, str]]]:
    """Each (task, family): registered, then infra-validated (fresh process, the server's loader and app)."""
    import os

    from mlops.core.errors import MLOpsError
    from mlops.serving.infra_validation import start_infra_validation
    from tests.support.model_server import isolated_state

    outcomes: dict[tuple[str, str], tuple[bool, str]] = {}
    with isolated_state(tmp_path_factory.mktemp("families")):
        uri = os.environ["MLFLOW_TRACKING_URI"]
        runs = {}
        for combo in MATRIX:
            try:
                runs[combo] = fit_and_register(*combo)
            except (MLOpsError, Exception) as exc:  # noqa: BLE001 - a family that cannot register is the finding
                outcomes[combo] = False, f"registration failed: {type(exc).__name__}: {str(exc)[:400]}"
        pending = list(runs.items())
        while pending:  # a few fresh processes at a time: their checks overlap, timing waits for measure()
            batch, pending = pending[:CONCURRENT], pending[CONCURRENT:]
            started = [(combo, start_infra_validation(r["name"], r["version"], r["holdout"], r["expected"],
                                                      BUDGET_MS, uri, rows=20)) for combo, r in batch]
            for combo, run in started:
                passed, detail, _ = run.measure()
                outcomes[combo] = passed, detail
        yield outcomes


@pytest.mark.parametrize(("task", "family"), MATRIX, ids=[f"{t}-{f}" for t, f in MATRIX])
def test_family_registers_loads_and_serves_the_flow_predictions(
        served: dict[tuple[str, str], tuple[bool, str]], task: str, family: str) -> None:
    passed, detail = served[(task, family)]
    assert passed, detail
    assert "60 holdout rows match the flow's predictions" in detail


def test_the_matrix_covers_every_family_the_config_allows() -> None:
    assert {f for t, f in MATRIX if t == "classification"} == CLASSIFICATION_FAMILIES
    assert {f for t, f in MATRIX if t == "regression"} == REGRESSION_FAMILIES
    assert ("classification", "random_forest") in MATRIX and ("regression", "random_forest") in MATRIX
