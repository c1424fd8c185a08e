"""The data contract: what the model was trained on, inferred from the first accepted training data.

Columns, kinds, ranges with margin, allowed categories and null fractions, plus the user's own
expectations from config. Saved with every model version as `contract/contract.json` and used by
training, serving, scoring and monitoring alike. Pure functions; the Great Expectations suite is
built from it in mlops.validation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlops.config import UserExpectation, ValidationConfig
from mlops.errors import DataError

Kind = Literal["numeric", "integer", "categorical", "boolean", "datetime", "text"]


@dataclass
class ColumnSpec:
    name: str
    kind: Kind
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None
    max_null_fraction: float = 0.0
    role: Literal["feature", "target", "id", "timestamp"] = "feature"


@dataclass
class DataContract:
    columns: list[ColumnSpec]
    target: str
    task: str
    id_column: str | None = None
    timestamp_column: str | None = None
    expectations: list[dict[str, Any]] = field(default_factory=list)
    version: int = 1

    @property
    def by_name(self) -> dict[str, ColumnSpec]:
        return {c.name: c for c in self.columns}

    @property
    def feature_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.role in {"feature", "timestamp"}]

    @property
    def input_columns(self) -> list[str]:
        """Columns a caller sends for scoring: everything but the target."""
        return [c.name for c in self.columns if c.role != "target"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    @classmethod
    def from_json(cls, text: str) -> DataContract:
        raw = json.loads(text)
        raw["columns"] = [ColumnSpec(**c) for c in raw["columns"]]
        return cls(**raw)

    def without_target(self) -> DataContract:
        cols = [c for c in self.columns if c.role != "target"]
        return DataContract(cols, self.target, self.task, self.id_column, self.timestamp_column,
                            [e for e in self.expectations if e.get("column") != self.target], self.version)


def _kind_of(s: pd.Series, max_categories: int) -> Kind:
    if pd.api.types.is_bool_dtype(s):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    if pd.api.types.is_integer_dtype(s):
        return "integer"
    if pd.api.types.is_numeric_dtype(s):
        non_null = s.dropna()
        if len(non_null) and np.all(np.mod(non_null.to_numpy(dtype=float), 1) == 0) and non_null.nunique() > 2:
            return "integer"
        return "numeric"
    if s.dropna().nunique() <= max_categories:
        return "categorical"
    return "text"


def infer_contract(
    df: pd.DataFrame,
    target: str,
    task: str,
    cfg: ValidationConfig,
    id_column: str | None = None,
    timestamp_column: str | None = None,
) -> DataContract:
    """Infer the contract from accepted training data, widening ranges and null fractions by the margins."""
    cols: list[ColumnSpec] = []
    for name in df.columns:
        s = df[name]
        role = "target" if name == target else "id" if name == id_column else "timestamp" if name == timestamp_column else "feature"
        if role == "timestamp":
            kind: Kind = "datetime"
        elif role == "id":
            kind = "text" if not pd.api.types.is_numeric_dtype(s) else "integer"
        elif role == "target" and task == "classification":
            kind = "categorical"
        else:
            kind = _kind_of(s, cfg.max_categories)
        null_frac = float(s.isna().mean())
        spec = ColumnSpec(name=str(name), kind=kind, role=role,
                          max_null_fraction=min(1.0, round(null_frac + cfg.null_margin, 6)))
        if kind in {"numeric", "integer"} and role != "id":
            vals = s.dropna().astype(float)
            if len(vals):
                lo, hi = float(vals.min()), float(vals.max())
                pad = (hi - lo) * cfg.range_margin
                spec.min, spec.max = lo - pad, hi + pad
                if kind == "integer":
                    spec.min, spec.max = float(np.floor(spec.min)), float(np.ceil(spec.max))
                if lo >= 0 and spec.min < 0:
                    spec.min = 0.0  # a non-negative quantity stays non-negative
        elif kind == "categorical":
            spec.allowed = sorted(str(v) for v in s.dropna().unique())
        cols.append(spec)
    exps = [e.model_dump(exclude_none=True) for e in cfg.expectations]
    contract = DataContract(cols, target, task, id_column, timestamp_column, exps)
    for e in exps:
        if e["column"] not in contract.by_name:
            raise DataError(f"config expectation on column '{e['column']}': no such column in the data")
    return contract


def merge_expectations(contract: DataContract, extra: list[UserExpectation]) -> DataContract:
    """The contract plus the config's expectations (those it does not hold already)."""
    from dataclasses import replace

    new = [e.model_dump(exclude_none=True) for e in extra]
    missing = [e for e in new if e["column"] not in contract.by_name]
    if missing:
        raise DataError(f"config expectation on column '{missing[0]['column']}': no such column in the contract")
    return replace(contract, expectations=contract.expectations + [e for e in new if e not in contract.expectations])


@dataclass
class Coerced:
    frame: pd.DataFrame
    row_failures: dict[int, list[str]]


def coerce_to_contract(df: pd.DataFrame, contract: DataContract, need_target: bool = True) -> Coerced:
    """Check structure and cast each column to its contract kind.

    Structural problems (a missing column, no rows, a column whose values are mostly of the wrong
    type, an all-null column that must have values) raise DataError. Single values that cannot be
    cast become null and their row is reported, so it can be quarantined rather than stop the run.
    """
    if len(df) == 0:
        raise DataError("the data has no rows")
    expected = [c for c in contract.columns if need_target or c.role != "target"]
    missing = [c.name for c in expected if c.name not in df.columns]
    if missing:
        raise DataError(f"column(s) {missing} required by the data contract are missing")
    out = df.copy()
    failures: dict[int, list[str]] = {}
    for spec in expected:
        s = df[spec.name]
        if s.isna().all() and spec.max_null_fraction < 1.0:
            raise DataError(f"column '{spec.name}' is entirely empty; the contract expects values")
        if spec.kind in {"numeric", "integer"}:
            cast = pd.to_numeric(s, errors="coerce") if not pd.api.types.is_numeric_dtype(s) else s
            if pd.api.types.is_bool_dtype(cast):
                cast = cast.astype(float)
            bad = cast.isna() & s.notna()
            if s.notna().sum() and bad.sum() > 0.5 * s.notna().sum():
                example = s[bad].iloc[0]
                raise DataError(
                    f"column '{spec.name}' should be numeric but {int(bad.sum())} of {int(s.notna().sum())} "
                    f"values are not (e.g. {str(example)[:40]!r})"
                )
            if not np.isfinite(cast.dropna().astype(float)).all():
                bad = bad | ~np.isfinite(cast.astype(float).fillna(0.0))
                cast = cast.where(np.isfinite(cast.astype(float).fillna(0.0)))
            out[spec.name] = cast.astype(float)
            _record(failures, bad, f"expect_column_values_to_be_of_type({spec.name}, numeric)")
        elif spec.kind == "datetime":
            cast = s if pd.api.types.is_datetime64_any_dtype(s) else pd.to_datetime(s, errors="coerce", format="mixed")
            bad = cast.isna() & s.notna()
            if s.notna().sum() and bad.sum() > 0.5 * s.notna().sum():
                raise DataError(f"column '{spec.name}' should hold timestamps but most values do not parse")
            if getattr(cast.dt, "tz", None) is not None:
                cast = cast.dt.tz_convert(None)
            out[spec.name] = cast.astype("datetime64[ns]")
            _record(failures, bad, f"expect_column_values_to_be_of_type({spec.name}, datetime)")
        elif spec.role == "target":
            continue  # the target keeps its own labels
        elif spec.kind in {"categorical", "text", "boolean"}:
            out[spec.name] = s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v))
            if spec.kind == "categorical" and pd.api.types.is_float_dtype(s):
                # integer-valued floats read back from CSV ("1.0") keep the training spelling
                out[spec.name] = s.map(lambda v: None if pd.isna(v) else str(int(v)) if float(v).is_integer() else str(v))
    return Coerced(out, failures)


def _record(failures: dict[int, list[str]], mask: pd.Series, reason: str) -> None:
    for idx in np.flatnonzero(mask.to_numpy()):
        failures.setdefault(int(idx), []).append(reason)
