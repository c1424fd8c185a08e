"""Assess a challenger on the holdout: metrics, plots and the gate verdict (pure; no Prefect, no MLflow)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops import gate
from mlops.config import PipelineConfig
from mlops.evaluation import Predictions, holdout_metrics, make_plots, paired_bootstrap, predict, slice_metrics


@dataclass
class Evaluation:
    metrics: dict[str, float]
    predictions: Predictions
    plots: dict[str, Path]


def evaluate(model: Any, test: pd.DataFrame, cfg: PipelineConfig, plots_dir: Path | None) -> Evaluation:
    X, y = test.drop(columns=[cfg.target]), test[cfg.target].to_numpy()
    p = predict(model, X, cfg.task)
    metrics = holdout_metrics(cfg.task, y, p)
    plots = make_plots(cfg.task, y, p, model, X, plots_dir, cfg.search.seed) if plots_dir else {}
    return Evaluation(metrics, p, plots)


def judge(
    challenger: Evaluation,
    champion_model: Any | None,
    champion_version: str | None,
    test: pd.DataFrame,
    cfg: PipelineConfig,
) -> gate.GateVerdict:
    """Run (a) thresholds, (b) the paired bootstrap against the champion, (c) slices."""
    metric = cfg.primary_metric
    y = test[cfg.target].to_numpy()
    checks = gate.check_thresholds(challenger.metrics, cfg.gate.thresholds)
    champ_pred: Predictions | None = None
    if champion_model is not None:
        try:
            champ_pred = predict(champion_model, test.drop(columns=[cfg.target]), cfg.task)
        except Exception as exc:  # a champion that cannot score this holdout cannot be compared
            checks.append(gate.Check("champion comparable", False,
                                     f"champion v{champion_version} could not score this holdout ({type(exc).__name__}); "
                                     "no sound comparison, promote by hand with `mlops promote --version N`"))
    if champ_pred is not None:
        b = paired_bootstrap(metric, y, challenger.predictions, champ_pred, cfg.gate.bootstrap_samples,
                             cfg.gate.confidence, cfg.search.seed)
        checks += gate.check_champion(b, cfg.gate)
    elif champion_model is None:
        checks.append(gate.Check("champion comparison", True, "no champion yet: thresholds and slices decide"))
    for sl in cfg.gate.slices:
        if sl.column not in test.columns:
            checks.append(gate.Check(f"slice {sl.column}", False, f"slice column '{sl.column}' is not in the holdout"))
            continue
        mine = slice_metrics(metric, test, sl.column, y, challenger.predictions, sl.min_rows)
        baseline: Any = (slice_metrics(metric, test, sl.column, y, champ_pred, sl.min_rows) if champ_pred is not None
                         else challenger.metrics[metric])
        checks += gate.check_slices(metric, sl.column, mine, baseline, cfg.gate.slice_tolerance)
    return gate.decide(checks)


def reference_sample(train: pd.DataFrame, model: Any, cfg: PipelineConfig) -> pd.DataFrame:
    """Training rows kept with the version for drift monitoring, with the model's predictions."""
    n = min(len(train), cfg.registry.reference_rows)
    ref = train.sample(n=n, random_state=cfg.split.seed).reset_index(drop=True) if n < len(train) else train.copy()
    X = ref.drop(columns=[cfg.target])
    ref["prediction"] = np.asarray(model.predict(X))
    if cfg.task == "classification" and hasattr(model, "predict_proba"):
        proba = model.predict_proba(X)
        if proba.shape[1] == 2:
            ref["prediction_proba"] = proba[:, 1]
    return ref
