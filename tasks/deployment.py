"""Deployment stage: prove a registered version serves what the flow saw, before any alias moves.

The checks run in a fresh process (`FreshProcess`) that the flow starts before its search (or takes from
its caller, who started it earlier still), so the serving stack's imports cost nothing on the critical
path; the process is handed the version once it is registered, and the latency is timed when the flow
computes nothing beside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger

from mlops.serving.infra_validation import DEFAULT_PERCENTILE, FreshProcess, InfraValidation, take_fresh_process
from mlops.serving.infra_validation import start_infra_validation as start_validation
from mlops.training.gate import Check
from tasks.common import stage_task


@contextlib.contextmanager
def infra_validation_process(enabled: bool) -> Iterator[FreshProcess | None]:
    """The fresh process infra validation will run in (None when infra validation is off): one the caller
    started ahead (`prestart_fresh_process`), else started now; ended on leaving the block if the run stops
    before using it."""
    process = take_fresh_process() if enabled else None
    try:
        yield process
    finally:
        if process is not None:
            process.close()


def expected_predictions(model: Any, X: pd.DataFrame, task_kind: str) -> np.ndarray:
    """What the served version must return for `X`: class probabilities for a classifier, else values."""
    return model.predict_proba(X) if task_kind == "classification" else model.predict(X)


@stage_task("start_infra_validation")
def start_infra_validation(model_name: str, version: str, model: Any, X_holdout: pd.DataFrame, task_kind: str,
                           budget_ms: float, tracking_uri: str, process: FreshProcess | None = None,
                           percentile: float = DEFAULT_PERCENTILE) -> InfraValidation:
    """Hand the version to the fresh process, which loads it the server's way and checks its predictions
    against the flow's model while the flow goes on; the latency is timed later by `finish_infra_validation`."""
    expected = expected_predictions(model, X_holdout, task_kind)
    return start_validation(model_name, version, X_holdout, expected, budget_ms, tracking_uri, process=process,
                            percentile=percentile)


@stage_task("finish_infra_validation")
def finish_infra_validation(run: InfraValidation) -> Check:
    """Time the version now that the flow computes nothing beside it, and collect the verdict."""
    passed, detail, latency = run.measure()
    return _check(run.version, passed, detail, latency, run.percentile)


def _check(version: str, passed: bool, detail: str, latency_ms: float, percentile: float) -> Check:
    get_run_logger().info("Infra validation of version %s: %s (p%g %.2f ms)", version,
                          "passed" if passed else "FAILED", percentile, latency_ms)
    return Check("infra validation", passed, detail)
