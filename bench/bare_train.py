"""Baseline for bench_training: the same computations as the training flow on the same data (load,
filter the impossible rows, split, same search spaces, trials and folds, refit, the training window's choice,
holdout metrics, and the refit on train + holdout when `split.refit` is on),
with no Prefect, no MLflow and no Great Expectations."""

from __future__ import annotations

import sys
import time

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score


def main(config_path: str) -> None:
    t0 = time.perf_counter()
    from mlops.core.config import load_config
    from mlops.core.contract import infer_contract
    from mlops.core.data import load_source, split_frame
    from mlops.core.features import build_preprocessor
    from mlops.training.tuning import pick_best, scorer_for, tune_family
    from mlops.training.window import refit_in_window, train_in_window

    cfg = load_config(config_path)
    df = load_source(cfg)
    # the rows validation would quarantine, by plain pandas filters
    for e in cfg.validation.expectations:
        if e.type == "between":
            col = df[e.column]
            df = df[col.isna() | col.between(e.min if e.min is not None else -np.inf, e.max if e.max is not None else np.inf)]
    split = split_frame(df, cfg.target, cfg.task, cfg.split, cfg.timestamp_column)
    contract = infer_contract(split.train, cfg.target, cfg.task, cfg.validation, cfg.id_column, cfg.timestamp_column)
    pre = build_preprocessor(contract, cfg.features)
    X, y = split.train.drop(columns=[cfg.target]), split.train[cfg.target]
    scoring = scorer_for(cfg.task, cfg.primary_metric, y.nunique() == 2, cfg.search.scoring)
    print("phase: search starts", flush=True)
    best = pick_best([tune_family(s, pre, X, y, cfg.task, scoring, cfg.search) for s in cfg.models])
    print("phase: search done", flush=True)
    windowed = train_in_window(best.best_estimator, split.train, cfg)  # train_on auto: the window by evidence
    Xt, yt = split.test.drop(columns=[cfg.target]), split.test[cfg.target]
    proba = windowed.model.predict_proba(Xt)[:, 1]
    pred = windowed.model.predict(Xt)
    print(f"family={best.family} roc_auc={roc_auc_score(yt, proba):.4f} f1={f1_score(yt, pred):.4f} "
          f"accuracy={accuracy_score(yt, pred):.4f} log_loss={log_loss(yt, proba):.4f} "
          f"seconds={time.perf_counter() - t0:.1f}")
    if cfg.refit:
        refit_in_window(windowed, split.train, split.test, cfg)
        print(f"refit on train + holdout; seconds={time.perf_counter() - t0:.1f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "configs/default.yaml")
