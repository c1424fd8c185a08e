"""Assess a challenger on the holdout: metrics, plots and the gate verdict (pure; no Prefect, no MLflow)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.config import PipelineConfig
from mlops.core.contract import DataContract
from mlops.core.rowkeys import RowHashSet, row_hashes
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


def unseen_rows(test: pd.DataFrame, champion_rows: RowHashSet | None) -> np.ndarray:
    """Which holdout rows the champion never trained on (all of them when it keeps no training row hashes)."""
    if champion_rows is None or not champion_rows.columns:
        return np.ones(len(test), dtype=bool)
    missing = [c for c in champion_rows.columns if c not in test.columns]
    if missing:  # the columns changed: no holdout row can be one the champion trained on
        return np.ones(len(test), dtype=bool)
    return ~np.isin(row_hashes(test, champion_rows.columns), champion_rows.hashes)


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
    champion_rows: RowHashSet | None = None,
) -> gate.GateVerdict:
    """Run (a) thresholds, (b) the paired bootstrap against the champion, (c) slices, (d) leakage.

    The champion is compared only on holdout rows it never trained on (`champion_rows`, the hashes its
    version keeps): a champion refitted on rows it is then scored on looks better than it is. With fewer
    than `gate.min_comparison_rows` such rows the champion stays: nothing shows the challenger is better.
    `model` is the challenger itself (the leakage check names the columns it leans on), `train` its
    training rows and `contract` the data contract (single-column scores, column kinds); without them
    the leakage check does what the holdout alone allows.
    """
    metric = cfg.primary_metric
    pred = challenger.predictions
    checks = gate.check_thresholds(challenger.metrics, cfg.gate.thresholds)
    if pred.classes is not None and len(pred.classes) == 2:
        checks.append(gate.Check("positive class", True, describe_positive(pred.classes, cfg.positive_class)))
    fresh = unseen_rows(test, champion_rows) if champion_model is not None else np.ones(len(test), dtype=bool)
    compared, mine_pred = test.loc[fresh].reset_index(drop=True), pred.subset(fresh)
    y = compared[cfg.target].to_numpy()
    champ_pred: Predictions | None = None
    if champion_model is not None:
        checks.append(_comparison_rows(int(fresh.sum()), len(test), champion_rows, champion_version,
                                       cfg.gate.min_comparison_rows))
        if checks[-1].passed:
            try:
                champ_pred = predict(champion_model, compared.drop(columns=[cfg.target]), cfg.task, pred.positive)
            except Exception as exc:  # a champion that cannot score this holdout cannot be compared
                checks.append(gate.Check(
                    "champion comparable", False,
                    f"champion v{champion_version} could not score this holdout ({type(exc).__name__}); "
                    "no sound comparison, promote by hand with `mlops promote --version N`"))
    if champ_pred is not None:
        b = paired_bootstrap(metric, y, mine_pred, champ_pred, cfg.gate.bootstrap_samples,
                             cfg.gate.confidence, cfg.search.seed)
        checks += gate.check_champion(b, cfg.gate)
        if cfg.gate.replace_failing_champion and cfg.gate.thresholds:
            mine, theirs = holdout_metrics(cfg.task, y, mine_pred), holdout_metrics(cfg.task, y, champ_pred)
            gate.waive_for_failing_champion(checks, mine, theirs, cfg.gate.thresholds, b,
                                            champion_version)
    elif champion_model is None:
        checks.append(gate.Check("champion comparison", True,
                                 "no champion yet: thresholds, slices (against trivial baselines) and leakage decide"))
    y_all = test[cfg.target].to_numpy()
    for sl in cfg.gate.slices:
        if sl.column not in test.columns:
            checks.append(gate.Check(f"slice {sl.column}", False, f"slice column '{sl.column}' is not in the holdout"))
            continue
        if champ_pred is not None:
            mine = slice_metrics(metric, compared, sl.column, y, mine_pred, sl.min_rows)
            theirs = slice_metrics(metric, compared, sl.column, y, champ_pred, sl.min_rows)
            checks += gate.check_slices(metric, sl.column, mine, theirs, cfg.gate.slice_tolerance,
                                        cfg.gate.slice_tolerance_mode)
        elif champion_model is None:
            mine = slice_metrics(metric, test, sl.column, y_all, pred, sl.min_rows)
            trivial = slice_baselines(metric, test, sl.column, y_all, sl.min_rows, pred.classes, pred.positive)
            checks += gate.check_slice_usefulness(metric, sl.column, mine, trivial, challenger.metrics.get(metric))
    checks.append(check_leakage(challenger.metrics, model, train, test, cfg, contract, pred.positive))
    return gate.decide(checks)


def _comparison_rows(fresh: int, total: int, champion_rows: RowHashSet | None, version: str | None,
                     needed: int) -> gate.Check:
    """How many holdout rows the champion comparison rests on, and whether they are enough."""
    if champion_rows is None:
        return gate.Check("comparison rows", True, f"all {total:,} holdout rows: champion v{version} keeps no training "
                          "row hashes, so rows it trained on cannot be told apart (the comparison may favour it)")
    seen = total - fresh
    if fresh < needed:
        return gate.Check("comparison rows", False,
                          f"only {fresh:,} of {total:,} holdout rows are new to champion v{version} ({seen:,} it "
                          f"trained on), fewer than gate.min_comparison_rows {needed}: no fair comparison, so the "
                          "champion stays; train on data with more new rows, or promote by hand")
    return gate.Check("comparison rows", True, f"{fresh:,} of {total:,} holdout rows, the ones champion "
                      f"v{version} never trained on" + (f" ({seen:,} it trained on left out)" if seen else ""))


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
