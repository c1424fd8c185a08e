"""Evaluation stage: holdout metrics and plots, then the gate: thresholds, champion, slices, leakage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from mlops.core.config import PipelineConfig
from mlops.core.contract import DataContract
from mlops.training.assessment import Evaluation, evaluate, judge
from mlops.training.gate import GateVerdict


@task(name="evaluate_challenger", cache_policy=NONE)
def evaluate_challenger(model: Any, test: pd.DataFrame, cfg: PipelineConfig, plots_dir: Path) -> Evaluation:
    return evaluate(model, test, cfg, plots_dir)


@task(name="gate_challenger", cache_policy=NONE)
def gate_challenger(
    evaluation: Evaluation, champion_model: Any | None, champion_version: str | None, test: pd.DataFrame,
    cfg: PipelineConfig, *, model: Any | None = None, train: pd.DataFrame | None = None,
    contract: DataContract | None = None,
) -> GateVerdict:
    """The gate verdict; `model`, `train` and `contract` let the leakage check name the columns to look at."""
    return judge(evaluation, champion_model, champion_version, test, cfg, model=model, train=train, contract=contract)
