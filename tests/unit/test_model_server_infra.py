"""Infra validation: a fresh process loads the registered version the way the server does and must
reproduce the flow's predictions within the latency budget."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from deployments.model_server.testing import churn_frame, fit_pipeline, isolated_state, register_model
from mlops.contract import coerce_to_contract
from mlops.infra_validation import infra_validate

NAME = "churn-infra"


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with isolated_state(tmp_path_factory.mktemp("infra")):
        pipe, contract, frame = fit_pipeline(churn_frame(1500, seed=8), "churned", params={"max_iter": 30},
                                             id_column="customer_id", timestamp_column="event_time")
        version = register_model(NAME, pipe, contract, frame, promote=False)
        # the flow's holdout: validated rows (coerced to the contract), target included
        holdout = coerce_to_contract(churn_frame(400, seed=9), contract).frame
        yield {"pipe": pipe, "version": version, "holdout": holdout, "uri": os.environ["MLFLOW_TRACKING_URI"]}


def test_passes_when_served_predictions_match_and_latency_fits(registered: dict[str, Any]) -> None:
    pipe, holdout = registered["pipe"], registered["holdout"]
    expected = pipe.predict_proba(holdout.drop(columns=["churned"]))
    passed, detail, p99 = infra_validate(NAME, registered["version"], holdout, expected, 50.0, registered["uri"])
    assert passed, detail
    assert 0 < p99 < 50 and "400 holdout rows match" in detail


def test_fails_when_predictions_differ(registered: dict[str, Any]) -> None:
    X = registered["holdout"].drop(columns=["churned"])
    wrong = 1 - registered["pipe"].predict(X)
    passed, detail, _ = infra_validate(NAME, registered["version"], X, wrong, 50.0, registered["uri"])
    assert not passed and "400 of 400 predictions differ" in detail


def test_fails_over_the_latency_budget(registered: dict[str, Any]) -> None:
    X = registered["holdout"].drop(columns=["churned"])
    passed, detail, p99 = infra_validate(NAME, registered["version"], X, registered["pipe"].predict(X), 0.001,
                                         registered["uri"], rows=50)
    assert not passed and "over the budget" in detail and p99 > 0.001


def test_bad_arguments_fail_before_starting_a_process(registered: dict[str, Any]) -> None:
    X = registered["holdout"].drop(columns=["churned"])
    passed, detail, p99 = infra_validate(NAME, "1", X, np.zeros(3), 50.0, registered["uri"])
    assert not passed and "3 rows" in detail and np.isnan(p99)
