"""The scikit-learn scorer a search maximises, from the task and the primary metric, and its name for logs."""

from __future__ import annotations

from typing import Any

import pandas as pd

from mlops.training.evaluation import positive_label

SCORERS = {
    ("classification", "roc_auc", True): "roc_auc",
    ("classification", "roc_auc", False): "roc_auc_ovr",
    ("classification", "f1", True): "f1",
    ("classification", "f1", False): "f1_macro",
    ("classification", "accuracy", True): "accuracy",
    ("classification", "accuracy", False): "accuracy",
    ("classification", "log_loss", True): "neg_log_loss",
    ("classification", "log_loss", False): "neg_log_loss",
    ("regression", "rmse", True): "neg_root_mean_squared_error",
    ("regression", "mae", True): "neg_mean_absolute_error",
    ("regression", "r2", True): "r2",
}


def scorer_for(task: str, metric: str, binary: bool, override: str | None = None, *,
               labels: Any = None, positive_class: Any = None) -> Any:
    """The scikit-learn scorer the search maximises: a scorer name, or for binary f1 with a positive class
    other than 1 a scorer that says which class is positive (sklearn's "f1" scores label 1).

    `labels` (the training target) let it resolve `positive_class` (None: 1 / True for 0/1 or boolean
    labels, else the larger label); a positive_class that is not a label is a DataError, raised here so a
    bad config stops before the search starts. `override` (search.scoring) wins over all of this.
    """
    if task == "classification" and binary and labels is not None:
        classes = sorted(pd.unique(pd.Series(labels).dropna()).tolist())
        positive = positive_label(classes, positive_class) if len(classes) == 2 else None
    else:
        positive = None
    if override:
        return override
    name = SCORERS[(task, metric, binary if task == "classification" else True)]
    if name == "f1" and positive is not None and not (positive == 1 and not isinstance(positive, str)):
        from sklearn.metrics import f1_score, make_scorer

        return make_scorer(f1_score, pos_label=positive, zero_division=0)
    return name


def scoring_name(scoring: Any) -> str:
    """A scorer as text for logs and parameters, e.g. `f1(pos_label='no')`."""
    if isinstance(scoring, str):
        return scoring
    func = getattr(getattr(scoring, "_score_func", None), "__name__", None)
    kwargs = {k: v for k, v in getattr(scoring, "_kwargs", {}).items() if k != "zero_division"}
    if func:
        return f"{func.removesuffix('_score')}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    return str(scoring)
