"""A small messy frame and tiny estimator settings for the model-family tests (unit and flow)."""

from __future__ import annotations

import numpy as np
import pandas as pd

SMALL = {"random_forest": {"n_estimators": 5, "max_depth": 6}, "hist_gradient_boosting": {"max_iter": 15}}


def messy_frame(rows: int, seed: int) -> pd.DataFrame:
    """Numbers with gaps, a category with missing values and a rare level, dates with gaps, an id."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, rows).astype(float)
    charges = rng.gamma(3.0, 25.0, rows).round(2)
    plan = rng.choice(["basic", "plus", "pro", "legacy"], rows, p=[0.5, 0.3, 0.18, 0.02]).astype(object)
    signup = pd.Timestamp("2023-03-01") + pd.to_timedelta(rng.integers(0, 500, rows), unit="D")
    df = pd.DataFrame({"account": rng.permutation(rows) + 10_000, "tenure": tenure, "charges": charges,
                       "plan": plan, "signup": signup})
    df.loc[rng.random(rows) < 0.08, "tenure"] = np.nan
    df.loc[rng.random(rows) < 0.05, "charges"] = np.nan
    df.loc[rng.random(rows) < 0.04, "plan"] = None
    df.loc[rng.random(rows) < 0.03, "signup"] = pd.NaT
    risk = -0.04 * tenure + 0.01 * charges + (plan == "basic") * 0.8 + rng.normal(0, 0.5, rows)
    df["churned"] = np.where(risk > np.median(risk), "yes", "no")
    df["spend"] = (3.0 * charges + 2.0 * tenure + rng.normal(0, 10, rows)).round(2)
    return df
