"""A slice of the training steps run on its own, as the flow and the backtest run it: validated rows, the
split, the search inputs and the search (or the reused configuration), the window, no Prefect, no MLflow."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from mlops.core.config import parse_config
from mlops.core.data import split_frame
from mlops.core.validation import validate_training_batch
from mlops.training import steps
from mlops.training.retune import Reuse, plan_retune, search_digest
from mlops.training.tuning import pick_best
from mlops.training.window import train_in_window


def _cfg():
    return parse_config({
        "name": "t", "task": "regression", "source": {"kind": "file", "path": "x.csv"}, "target": "y",
        "timestamp_column": "ts", "gate": {"primary_metric": "rmse", "thresholds": {}},
        "registry": {"model_name": "t"},
        "models": [{"family": "ridge", "search_space": {"alpha": {"type": "loguniform", "low": 0.01, "high": 10}}},
                   {"family": "hist_gradient_boosting", "params": {"max_iter": 30}, "search_space": {}}],
        "search": {"n_trials": 2, "cv_folds": 2, "n_jobs": 1}})


def _frame(n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    x = rng.normal(size=n)
    return pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=n, freq="6h"), "x": x,
                         "colour": rng.choice(["red", "blue"], n), "y": 2 * x + rng.normal(0, 0.3, n)})


def test_the_search_slice_from_validated_rows_to_a_windowed_challenger():
    cfg = _cfg()
    batch = validate_training_batch(_frame(), None, cfg)
    split = split_frame(batch.outcome.good, cfg.target, cfg.task, cfg.split, cfg.timestamp_column)
    inputs = steps.search_inputs(split.train, batch.contract, cfg)
    assert list(inputs.X.columns) == ["ts", "x", "colour"] and inputs.y.name == "y"

    results = steps.search(cfg, inputs)  # no reuse: every family searched under the shared trial pool
    assert {r.family for r in results} == {"ridge", "hist_gradient_boosting"}
    assert steps.fits_of(results, 2) == sum(r.n_trials for r in results) * 2 + 1
    best = pick_best(results)
    windowed = train_in_window(best.best_estimator, split.train, cfg)
    assert windowed.model.predict(split.test.drop(columns=["y"])).shape == (len(split.test),)


def test_a_reused_configuration_is_one_fit_of_the_champion_family():
    cfg = _cfg()
    batch = validate_training_batch(_frame(), None, cfg)
    inputs = steps.search_inputs(batch.outcome.good, batch.contract, cfg)
    tuned = pick_best(steps.search(cfg, inputs))
    tags = {"family": tuned.family, "lineage.tuned_rows": str(len(inputs.X)),
            "lineage.search_digest": search_digest(cfg)}
    champion = SimpleNamespace(model=tuned.best_estimator, tags=tags, version="1")
    reuse = plan_retune(cfg, champion, rows=len(inputs.X) + 10, retraining=True)
    assert isinstance(reuse, Reuse) and reuse.reuse, reuse.reason
    again = steps.search(cfg, inputs, reuse)
    assert [r.family for r in again] == [tuned.family] and steps.fits_of(again, 2) == 1
    assert again[0].best_params == tuned.best_params
