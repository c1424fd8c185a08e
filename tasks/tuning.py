"""Features and tuning stages: the search inputs (feature pipeline, scorer), then one Prefect task per model
family, each logged as a nested MLflow run."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import get_run_logger

from mlops.core.config import ModelSpec, PipelineConfig, SearchConfig
from mlops.core.contract import DataContract
from mlops.core.data import Split
from mlops.registry.tracking import log_family_run, log_search_winner
from mlops.training import steps, tuning
from mlops.training.retune import Reuse
from mlops.training.steps import SearchInputs
from mlops.training.tuning import FamilyResult
from mlops.training.window import Windowed, refit_in_window, train_in_window
from tasks.common import stage_task


@stage_task("build_features")
def build_features(train: pd.DataFrame, contract: DataContract, cfg: PipelineConfig) -> SearchInputs:
    """The feature pipeline (inside the logged model, so serving applies what training fitted) and the scorer."""
    return steps.search_inputs(train, contract, cfg)


@stage_task("tune_family", task_run_name="tune-{spec.family}")
def tune_family(spec: ModelSpec, inputs: SearchInputs, task_kind: str, search: SearchConfig,
                **share: Any) -> FamilyResult:
    """Search one family's space for its share of the budget (`share`: tune_family's budget, max_trials,
    resume, folds, refit, grace; see mlops.training.tuning.tune_families, which decides the shares)."""
    result = tuning.tune_family(spec, inputs.preprocessor, inputs.X, inputs.y, task_kind, inputs.scoring, search,
                                **share)
    get_run_logger().info("%s; %s; %s", result.describe(), result.threads,
                          result.leaderboard_row()["best_params"] or "default parameters")
    return result


@stage_task("tune_families")
def tune_families(cfg: PipelineConfig, inputs: SearchInputs, parent_run_id: str | None = None,
                  reuse: Reuse | None = None) -> list[FamilyResult]:
    """The search step (mlops.training.steps.search): every family's search, the time budget and trial pool
    shared where it pays, each share a `tune-<family>` task and each family a nested MLflow run; or, for a
    retrain whose data has not outgrown the champion's tuning (`reuse`), the champion's configuration. The
    winner's hyperparameters go on the parent run."""
    logger = get_run_logger()
    if reuse is not None and reuse.reuse:
        logger.info("Search: %s", reuse.reason)

    def tune(spec: ModelSpec, *args: Any, **share: Any) -> FamilyResult:
        return tune_family(spec, inputs, cfg.task, cfg.search, **share)

    results = steps.search(cfg, inputs, reuse, tune=tune, log=logger.info)
    if parent_run_id:
        searched = [r for r in results if r.space != "reused"]  # a reused configuration ran no trial to log
        for result in searched:
            log_family_run(parent_run_id, result, cfg.search)
        log_search_winner(parent_run_id, tuning.pick_best(results), results, cfg.search)
    return results


@stage_task("choose_training_window")
def choose_training_window(model: Any, train: pd.DataFrame, cfg: PipelineConfig) -> Windowed:
    """With `train_on: auto` and a timestamp: all history or its last periods, whichever predicts the newest
    training rows best (mlops.training.window); the challenger is the tuned configuration fitted on it."""
    windowed = train_in_window(model, train, cfg)
    get_run_logger().info("Training window: %s", windowed.choice.summary())
    return windowed


@stage_task("refit_challenger")
def refit_challenger(windowed: Windowed, split: Split, cfg: PipelineConfig) -> Any:
    """The model to register: with `split.refit` on, the gated configuration fitted again on train + holdout
    (inside the chosen window's length)."""
    return refit_in_window(windowed, split.train, split.test, cfg) if cfg.refit else windowed.model
