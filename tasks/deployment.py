"""Deployment stage: prove a registered version serves what the flow saw, before any alias moves."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mlops.serving.infra_validation import DEFAULT_PERCENTILE, InfraValidation, infra_validate
from mlops.serving.infra_validation import start_infra_validation as start_validation
from mlops.training.gate import Check


@task(name="infra_validate", cache_policy=NONE)
def infra_validate_challenger(model_name: str, version: str, holdout: pd.DataFrame, expected: np.ndarray,
                              budget_ms: float, tracking_uri: str, process: Any = None,
                              percentile: float = DEFAULT_PERCENTILE) -> Check:
    """Load the version through the model server's code path in a fresh process (`process`, an
    `mlops.serving.infra_validation.FreshProcess` started earlier, or a new one), score the holdout, require
    identical predictions and the `percentile` single-row latency under the budget, timed at once."""
    passed, detail, latency = infra_validate(model_name, version, holdout, expected, budget_ms, tracking_uri,
                                             process=process, percentile=percentile)
    return _check(version, passed, detail, latency, percentile)


@task(name="start_infra_validation", cache_policy=NONE)
def start_infra_validation(model_name: str, version: str, holdout: pd.DataFrame, expected: np.ndarray,
                           budget_ms: float, tracking_uri: str, process: Any = None,
                           percentile: float = DEFAULT_PERCENTILE) -> InfraValidation:
    """Hand the version to the fresh process, which loads it the server's way and checks its
    predictions while the flow goes on; the latency is timed later by `finish_infra_validation`."""
    return start_validation(model_name, version, holdout, expected, budget_ms, tracking_uri, process=process,
                 percentile=percentile)


@task(name="finish_infra_validation", cache_policy=NONE)
def finish_infra_validation(run: InfraValidation) -> Check:
    """Time the version now that the flow computes nothing beside it, and collect the verdict."""
    passed, detail, latency = run.measure()
    return _check(run.version, passed, detail, latency, run.percentile)


def _check(version: str, passed: bool, detail: str, latency_ms: float, percentile: float) -> Check:
    get_run_logger().info("Infra validation of version %s: %s (p%g %.2f ms)", version,
                          "passed" if passed else "FAILED", percentile, latency_ms)
    return Check("infra validation", passed, detail)
