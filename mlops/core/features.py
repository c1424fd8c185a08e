"""Feature engineering as a scikit-learn ColumnTransformer that lives inside the logged Pipeline,
so serving applies exactly what training fitted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlops.core.config import FeatureConfig
from mlops.core.contract import DataContract
from mlops.core.periods import as_times, date_part

MISSING = "__missing__"

# Types the skops loader must trust beyond scikit-learn's defaults, named explicitly.
SKOPS_TRUSTED_TYPES = [
    "mlops.core.features.DateParts",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "numpy.dtype",
]


class DateParts(BaseEstimator, TransformerMixin):
    """Turn timestamp columns into numeric parts (month, day of week, hour, ...).

    At fit time each column keeps only the parts that vary in the training data: a date-only
    column (every time midnight) gets no `hour`. The parts kept per column (`parts_`) are what
    transform applies, so serving computes exactly the features training fitted.

    `decimal_year` is the year with the share of it gone by (2024.5 is early July:
    mlops.core.periods.decimal_years), a time axis for a target with a trend: the calendar `year` is one value
    in a year's data, so a model fitted in December drops it and reads the trend from the month instead, then
    maps next January to last January's level; a decimal year goes on where the training rows end. On a target
    without a trend it lets a tree split on time for nothing (docs/real-data.md has the figures). `year_month`
    is the same axis in whole months (mlops.core.periods.year_months): constant inside a month, so a tree cannot
    split on time finer than the months it has seen. In a first year of data it orders the rows as `month` does;
    listed before `month`, it is the one a tree splits on (the first of equally good features), so the season
    learnt in that year is read as time and next January follows December.
    """

    def __init__(self, parts: tuple[str, ...] = ("month", "dayofweek", "hour")) -> None:
        self.parts = parts

    def fit(self, X: Any, y: Any = None) -> DateParts:
        frame = pd.DataFrame(X)
        self.columns_ = [str(c) for c in frame.columns]
        self.n_features_in_ = len(self.columns_)
        self.parts_ = {name: self._varying_parts(frame.iloc[:, i]) for i, name in enumerate(self.columns_)}
        return self

    def _varying_parts(self, values: pd.Series) -> list[str]:
        """The configured parts that take more than one value here (the first one if none does)."""
        ts = as_times(values).dropna()
        kept = [p for p in self.parts if date_part(ts, p).nunique() > 1]
        return kept or list(self.parts[:1])

    def parts_for(self, name: str) -> list[str]:
        """The parts fitted for a column (models fitted before parts_ existed apply every configured part)."""
        return list(getattr(self, "parts_", {}).get(name, self.parts))

    def transform(self, X: Any) -> np.ndarray:
        frame = pd.DataFrame(X)
        out = []
        for i in range(frame.shape[1]):
            ts = as_times(frame.iloc[:, i])
            for p in self.parts_for(self.columns_[i]):
                out.append(date_part(ts, p).astype(float).to_numpy())
        return np.column_stack(out) if out else np.empty((len(frame), 0))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.array([f"{c}_{p}" for c in self.columns_ for p in self.parts_for(c)], dtype=object)


def feature_columns(contract: DataContract) -> dict[str, list[str]]:
    """Split the contract's feature columns by how they are transformed (ids, ignored columns and free text are left out)."""
    groups: dict[str, list[str]] = {"numeric": [], "categorical": [], "datetime": []}
    for c in contract.columns:
        if c.role in {"target", "id", "ignored"}:
            continue
        if c.kind in {"numeric", "integer"}:
            groups["numeric"].append(c.name)
        elif c.kind in {"categorical", "boolean"}:
            groups["categorical"].append(c.name)
        elif c.kind == "datetime":
            groups["datetime"].append(c.name)
    return groups


def build_preprocessor(contract: DataContract, cfg: FeatureConfig) -> ColumnTransformer:
    """Imputation and scaling for numbers, one-hot with unknown categories ignored, date parts."""
    g = feature_columns(contract)
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy=cfg.numeric_impute))]
    if cfg.scale:
        numeric_steps.append(("scale", StandardScaler()))
    transformers: list[tuple[str, Any, list[str]]] = []
    if g["numeric"]:
        transformers.append(("numeric", Pipeline(numeric_steps), g["numeric"]))
    if g["categorical"]:
        cat = Pipeline(
            [
                ("impute", SimpleImputer(strategy=cfg.categorical_impute, fill_value=MISSING)),
                ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=cfg.max_one_hot,
                                         sparse_output=False)),
            ]
        )
        transformers.append(("categorical", cat, g["categorical"]))
    if g["datetime"] and cfg.date_parts:
        dates = Pipeline([("parts", DateParts(tuple(cfg.date_parts))), ("impute", SimpleImputer(strategy="most_frequent"))])
        transformers.append(("dates", dates, g["datetime"]))
    if not transformers:
        from mlops.core.errors import DataError

        raise DataError("no usable feature columns: every column is the target, an id, free text, constant or "
                        "empty (see the data profile)")
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
