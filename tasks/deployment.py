"""Deployment stage: prove a registered version serves what the flow saw, before any alias moves."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mlops.gate import Check


@task(name="infra_validate", cache_policy=NONE)
def infra_validate_challenger(model_name: str, version: str, holdout: pd.DataFrame, expected: np.ndarray,
                              budget_ms: float, tracking_uri: str, process: Any = None) -> Check:
    """Load the version through the model server's code path in a fresh process (`process`, an
    `mlops.infra_validation.FreshProcess` started earlier, or a new one), score the holdout, require
    identical predictions and a p99 single-row latency under the budget."""
    from mlops.infra_validation import infra_validate

    passed, detail, p99 = infra_validate(model_name, version, holdout, expected, budget_ms, tracking_uri,
                                         process=process)
    get_run_logger().info("Infra validation of version %s: %s (p99 %.2f ms)", version,
                          "passed" if passed else "FAILED", p99)
    return Check("infra validation", passed, detail)
