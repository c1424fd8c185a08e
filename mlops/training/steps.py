"""The training steps between a validated split and a fitted challenger, defined once: the search inputs
(feature pipeline, labels, scorer) and the search itself (every family under the shared budget, or the
champion's configuration refitted when a retrain has not outgrown it).

The training flow calls them through its tasks (tasks/tuning.py adds logging, Prefect task runs per
family and the MLflow records); the backtest calls them directly, in the same order. The steps around
them are single functions too: validation (mlops.core.validation), the split (mlops.core.data), the
training window (mlops.training.window), evaluation and the gate (mlops.training.assessment).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlops.core.config import PipelineConfig
from mlops.core.contract import DataContract
from mlops.core.features import build_preprocessor
from mlops.training.retune import Reuse, reused_result
from mlops.training.tuning import FamilyResult, scorer_for, scoring_name, tune_families


@dataclass
class SearchInputs:
    """What every family's search gets: the training features and labels, the scorer it maximises, and the
    (unfitted) feature pipeline built from the data contract."""

    X: pd.DataFrame
    y: pd.Series
    scoring: Any
    preprocessor: Any


def search_inputs(train: pd.DataFrame, contract: DataContract, cfg: PipelineConfig) -> SearchInputs:
    """The feature pipeline (inside the logged model, so serving applies what training fitted) and the scorer."""
    X, y = train.drop(columns=[cfg.target]), train[cfg.target]
    binary = cfg.task == "classification" and y.nunique() == 2
    scoring = scorer_for(cfg.task, cfg.primary_metric, binary, cfg.search.scoring, labels=y,
                         positive_class=cfg.positive_class)
    return SearchInputs(X, y, scoring, build_preprocessor(contract, cfg.features))


def search(cfg: PipelineConfig, inputs: SearchInputs, reuse: Reuse | None = None, tune: Any = None,
           log: Callable[[str], None] | None = None) -> list[FamilyResult]:
    """Every family's search, the time budget and trial pool shared where it pays (`tune`: how one family's
    share runs, tune_family's signature; the flow passes its Prefect task); with `reuse` (a retrain whose
    data has not outgrown the champion's tuning) the champion's configuration fitted on the rows instead."""
    if reuse is not None and reuse.reuse:
        return [reused_result(reuse, inputs.preprocessor, inputs.X, inputs.y, cfg, scoring_name(inputs.scoring))]
    how = {} if tune is None else {"tune": tune}
    return tune_families(cfg.models, inputs.preprocessor, inputs.X, inputs.y, cfg.task, inputs.scoring, cfg.search,
                         log=log, **how)


def fits_of(results: list[FamilyResult], cv_folds: int) -> int:
    """Models a search fitted: every trial on every fold, and the winner on all rows (a reused configuration:
    its one fit)."""
    if len(results) == 1 and results[0].space == "reused":
        return 1
    return sum(r.n_trials for r in results) * cv_folds + 1
