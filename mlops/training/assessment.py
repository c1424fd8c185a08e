"""Assess a challenger on the holdout: metrics, plots and the gate verdict (pure; no Prefect, no MLflow)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.config import PipelineConfig
from mlops.core.contract import DataContract
from mlops.training import gate
from mlops.training.evaluation import (
    Predictions,
    describe_positive,
    holdout_metrics,
    make_plots,
    paired_bootstrap,
    predict,
    slice_baselines,
    slice_metrics,
)
from mlops.training.leakage import check_leakage


@dataclass
class Evaluation:
    metrics: dict[str, float]
    predictions: Predictions
    plots: dict[str, Path]


def evaluate(model: Any, test: pd.DataFrame, cfg: PipelineConfig, plots_dir: Path | None) -> Evaluation:
    """Holdout metrics (binary ones with cfg.positive_class as the positive class) and plots."""
    X, y = test.drop(columns=[cfg.target]), test[cfg.target].to_numpy()
    p = predict(model, X, cfg.task, cfg.positive_class)
    metrics = holdout_metrics(cfg.task, y, p)
    plots = make_plots(cfg.task, y, p, model, X, plots_dir, cfg.search.seed) if plots_dir else {}
    return Evaluation(metrics, p, plots)


def judge(
    challenger: Evaluation,
    champion_model: Any | None,
    champion_version: str | None,
    test: pd.DataFrame,
    cfg: PipelineConfig,
    *,
    model: Any | None = None,
    train: pd.DataFrame | None = None,
    contract: DataContract | None = None,
) -> gate.GateVerdict:
    """Run (a) thresholds, (b) the paired bootstrap against the champion, (c) slices, (d) leakage.

    `model` is the challenger itself (the leakage check names the columns it leans on), `train` its
    training rows and `contract` the data contract (single-column scores, column kinds); without them
    the leakage check does what the holdout alone allows.
    """
    metric = cfg.primary_metric
    y = test[cfg.target].to_numpy()
    pred = challenger.predictions
    checks = gate.check_thresholds(challenger.metrics, cfg.gate.thresholds)
    if pred.classes is not None and len(pred.classes) == 2:
        checks.append(gate.Check("positive class", True, describe_positive(pred.classes, cfg.positive_class)))
    champ_pred: Predictions | None = None
    if champion_model is not None:
        try:
            champ_pred = predict(champion_model, test.drop(columns=[cfg.target]), cfg.task, pred.positive)
        except Exception as exc:  # a champion that cannot score this holdout cannot be compared
            checks.append(gate.Check("champion comparable", False,
                                     f"champion v{champion_version} could not score this holdout ({type(exc).__name__}); "
                                     "no sound comparison, promote by hand with `mlops promote --version N`"))
    if champ_pred is not None:
        b = paired_bootstrap(metric, y, pred, champ_pred, cfg.gate.bootstrap_samples,
                             cfg.gate.confidence, cfg.search.seed)
        checks += gate.check_champion(b, cfg.gate)
        if cfg.gate.replace_failing_champion and cfg.gate.thresholds:
            theirs = holdout_metrics(cfg.task, y, champ_pred)
            gate.waive_for_failing_champion(checks, challenger.metrics, theirs, cfg.gate.thresholds, b,
                                            champion_version)
    elif champion_model is None:
        checks.append(gate.Check("champion comparison", True,
                                 "no champion yet: thresholds, slices (against trivial baselines) and leakage decide"))
    for sl in cfg.gate.slices:
        if sl.column not in test.columns:
            checks.append(gate.Check(f"slice {sl.column}", False, f"slice column '{sl.column}' is not in the holdout"))
            continue
        mine = slice_metrics(metric, test, sl.column, y, pred, sl.min_rows)
        if champ_pred is not None:
            theirs = slice_metrics(metric, test, sl.column, y, champ_pred, sl.min_rows)
            checks += gate.check_slices(metric, sl.column, mine, theirs, cfg.gate.slice_tolerance,
                                        cfg.gate.slice_tolerance_mode)
        elif champion_model is None:
            trivial = slice_baselines(metric, test, sl.column, y, sl.min_rows, pred.classes, pred.positive)
            checks += gate.check_slice_usefulness(metric, sl.column, mine, trivial, challenger.metrics.get(metric))
    checks.append(check_leakage(challenger.metrics, model, train, test, cfg, contract, pred.positive))
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
