"""Tuning stage: one Prefect task per model family, each logged as a nested MLflow run."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from mlops.core.config import ModelSpec, SearchConfig
from mlops.training.tuning import FamilyResult, tune_family


@task(name="tune_family", cache_policy=NONE, task_run_name="tune-{spec.family}")
def tune_candidates(
    spec: ModelSpec, preprocessor: object, X: pd.DataFrame, y: pd.Series, task_kind: str, scoring: str,
    search: SearchConfig, parent_run_id: str | None = None,
) -> FamilyResult:
    """Search one family's space; log its best trial and CV scores as a nested MLflow run."""
    result = tune_family(spec, preprocessor, X, y, task_kind, scoring, search)
    if parent_run_id:
        from mlops.registry.tracking import log_family_run

        log_family_run(parent_run_id, result, search)
    return result
