"""The data contract: what the model was trained on, inferred from the first accepted training data.

Columns, kinds, ranges with margin, allowed categories and null fractions, plus the user's own
expectations from config. Saved with every model version as `contract/contract.json` and used by
training, serving, scoring and monitoring alike. Pure functions; the Great Expectations suite is
built from it in mlops.validation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlops.core.config import UserExpectation, ValidationConfig
from mlops.core.errors import DataError
from mlops.core.profile import (
    FEATURE_ROLES,
    INTERNAL_PREFIX,
    DataProfile,
    as_dates,
    as_numbers,
    numeric_kind,
    profile_frame,
)

Kind = Literal["numeric", "integer", "categorical", "boolean", "datetime", "text"]


OPTIONAL_ROLES = frozenset({"id", "ignored"})  # roles a scoring request may leave out


@dataclass
class ColumnSpec:
    name: str
    kind: Kind
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None
    max_null_fraction: float = 0.0
    # 'ignored': an input kept so callers may send it, but not a feature (free text, constant, empty)
    role: Literal["feature", "target", "id", "timestamp", "ignored"] = "feature"


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
    def optional_inputs(self) -> list[str]:
        """Input columns a caller may leave out: ids and columns the model does not use."""
        return [c.name for c in self.columns if c.role in OPTIONAL_ROLES]

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
    """The kind of a column as plain inference sees it (kept for callers that have no profile)."""
    if pd.api.types.is_bool_dtype(s):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    if pd.api.types.is_numeric_dtype(s):
        return numeric_kind(s)  # type: ignore[return-value]
    if s.dropna().nunique() <= max_categories:
        return "categorical"
    return "text"


def _category_strings(s: pd.Series) -> pd.Series:
    """Category values as strings, spelt the way serving spells them (whole floats without '.0')."""
    if pd.api.types.is_float_dtype(s):
        return s.map(lambda v: None if pd.isna(v) else str(int(v)) if float(v).is_integer() else str(v))
    return s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v))


def _contract_role(role: str) -> str:
    if role in {"target", "id", "timestamp"}:
        return role
    return "feature" if role in FEATURE_ROLES else "ignored"


def infer_contract(
    df: pd.DataFrame,
    target: str,
    task: str,
    cfg: ValidationConfig,
    id_column: str | None = None,
    timestamp_column: str | None = None,
    declared: Mapping[str, str] | None = None,
    profile: DataProfile | None = None,
) -> DataContract:
    """Infer the contract from accepted training data, widening ranges and null fractions by the margins.

    Column roles and kinds are the data profile's decisions (given, or profiled here with the
    declared types): ids, free text and constant or empty columns are kept as inputs but are not
    features (role 'id' or 'ignored').
    """
    data_columns = [c for c in df.columns if not str(c).startswith(INTERNAL_PREFIX)]
    if profile is None or any(str(c) not in profile.by_name for c in data_columns):
        profile = profile_frame(df, target, task, cfg.max_categories, id_column, timestamp_column, declared)
    decided = profile.by_name
    cols: list[ColumnSpec] = []
    for name in data_columns:
        s = df[name]
        col = decided[str(name)]
        role = _contract_role(col.role)
        kind: Kind = col.kind if role != "ignored" else "text"  # type: ignore[assignment]
        null_frac = float(s.isna().mean()) if role != "ignored" else 1.0
        spec = ColumnSpec(name=str(name), kind=kind, role=role,  # type: ignore[arg-type]
                          max_null_fraction=min(1.0, round(null_frac + cfg.null_margin, 6)))
        if kind in {"numeric", "integer"} and role in {"feature", "target"}:
            vals = as_numbers(s).dropna()
            vals = vals[np.isfinite(vals)]
            if len(vals):
                lo, hi = float(vals.min()), float(vals.max())
                pad = (hi - lo) * cfg.range_margin
                spec.min, spec.max = lo - pad, hi + pad
                if kind == "integer":
                    spec.min, spec.max = float(np.floor(spec.min)), float(np.ceil(spec.max))
                if lo >= 0 and spec.min < 0:
                    spec.min = 0.0  # a non-negative quantity stays non-negative
        elif kind == "categorical" and role != "ignored":
            spec.allowed = sorted({str(v) for v in _category_strings(s).dropna().unique()})
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
            _record(failures, bad, f"expect_column_values_to_be_of_type({spec.name}, numeric)", s)
        elif spec.kind == "datetime":
            cast = as_dates(s)
            bad = cast.isna() & s.notna()
            if s.notna().sum() and bad.sum() > 0.5 * s.notna().sum():
                raise DataError(f"column '{spec.name}' should hold timestamps but most values do not parse")
            if getattr(cast.dt, "tz", None) is not None:
                cast = cast.dt.tz_convert(None)
            out[spec.name] = cast.astype("datetime64[ns]")
            _record(failures, bad, f"expect_column_values_to_be_of_type({spec.name}, datetime)", s)
        elif spec.role == "target":
            continue  # the target keeps its own labels
        elif spec.kind in {"categorical", "text", "boolean"}:
            # integer-valued floats read back from CSV ("1.0") keep the training spelling
            out[spec.name] = _category_strings(s) if spec.kind == "categorical" else (
                s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v)))
    return Coerced(out, failures)


def _record(failures: dict[int, list[str]], mask: pd.Series, reason: str, values: pd.Series) -> None:
    """Note each failing row with the reason and the value it held."""
    for idx in np.flatnonzero(mask.to_numpy()):
        failures.setdefault(int(idx), []).append(f"{reason}: {str(values.iloc[idx])[:40]!r}")
