"""The data contract: what the model was trained on, re-inferred by every training from its accepted rows.

Two parts kept apart: what the user declared (config `validation.expectations`, declared column
types, the target, id and timestamp columns), which holds until the config changes, and what was
observed in the training data (kinds where nothing was declared, ranges with margin, allowed
categories, null fractions), which each retrain re-infers (`evolve_contract`, with a `ContractDiff`).
A value outside the observed range is drift; only structure and the user's rules make data bad.
Saved with every model version as `contract/contract.json` and used by training, serving, scoring
and monitoring alike. Pure functions; the Great Expectations suite is built from it in
mlops.core.validation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.config import PipelineConfig, UserExpectation, ValidationConfig
from mlops.core.errors import DataError
from mlops.core.profile import (
    FEATURE_ROLES,
    INTERNAL_PREFIX,
    ColumnProfile,
    DataProfile,
    Kind,
    Role,
    as_dates,
    as_numbers,
    profile_frame,
)

OPTIONAL_ROLES = frozenset({"id", "ignored"})  # roles a scoring request may leave out


@dataclass
class ColumnSpec:
    name: str
    kind: Kind
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None
    max_null_fraction: float = 0.0
    role: Role = "feature"


@dataclass
class ContractDiff:
    """How a contract differs from the one it evolved from: JSON-serialisable, `summary()` reads in a line.

    `ranges`: column -> {"from": [min, max], "to": [min, max], "change": widened | narrowed | shifted};
    `categories`: column -> {"added": [...], "removed": [...]}; `kinds` and `roles`: column -> [old, new];
    `rules_added` / `rules_removed`: the user's rules (config expectations) described.
    """

    first: bool = False  # no previous contract: everything was inferred now
    rows: int = 0  # training rows the new contract was inferred from
    columns: int = 0
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kinds: dict[str, list[str]] = field(default_factory=dict)
    roles: dict[str, list[str]] = field(default_factory=dict)
    ranges: dict[str, dict[str, Any]] = field(default_factory=dict)
    categories: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    rules_added: list[str] = field(default_factory=list)
    rules_removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.first or any((self.added, self.removed, self.kinds, self.roles, self.ranges, self.categories,
                                  self.rules_added, self.rules_removed))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"summary": self.summary()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ContractDiff:
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})

    def summary(self, limit: int = 400) -> str:
        """One line: what changed, most telling first (columns, kinds, user rules, categories, ranges)."""
        if self.first:
            return f"first contract: {self.columns} columns inferred from {self.rows:,} rows"
        parts = [f"+column {c}" for c in self.added] + [f"-column {c}" for c in self.removed]
        parts += [f"{c} kind {a} -> {b}" for c, (a, b) in self.kinds.items()]
        parts += [f"{c} role {a} -> {b}" for c, (a, b) in self.roles.items()]
        parts += [f"+rule {r}" for r in self.rules_added] + [f"-rule {r}" for r in self.rules_removed]
        for c, d in self.categories.items():
            for key, sign in (("added", "+"), ("removed", "-")):
                if d.get(key):
                    parts.append(f"{c} {sign}categories {_few(d[key])}")
        parts += [f"{c} range {d['change']} {_span(d['from'])} -> {_span(d['to'])}" for c, d in self.ranges.items()]
        if not parts:
            return f"unchanged ({self.columns} columns, re-inferred from {self.rows:,} rows)"
        text = "; ".join(parts)
        return text if len(text) <= limit else text[: limit - 12].rsplit("; ", 1)[0] + "; (+ more)"


def _span(bounds: list[float | None]) -> str:
    return "..".join("?" if b is None else f"{b:.4g}" for b in bounds)


def _few(values: list[str], n: int = 3) -> str:
    return "(" + ", ".join(values[:n]) + (f", +{len(values) - n} more" if len(values) > n else "") + ")"


@dataclass
class DataContract:
    """The user's part (`expectations`, `declared`, target, id and timestamp columns) and the observed part
    (each column's kind, range, categories and null fraction); `changes` is how it differs from the
    contract it evolved from (None for contracts saved before contracts evolved)."""

    columns: list[ColumnSpec]
    target: str
    task: str
    id_column: str | None = None
    timestamp_column: str | None = None
    expectations: list[dict[str, Any]] = field(default_factory=list)
    version: int = 1
    declared: dict[str, str] = field(default_factory=dict)  # config `columns`: the user's declared types
    changes: ContractDiff | None = None

    @property
    def by_name(self) -> dict[str, ColumnSpec]:
        return {c.name: c for c in self.columns}

    @property
    def feature_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.role in FEATURE_ROLES]

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
        if raw.get("changes") is not None:
            raw["changes"] = ContractDiff.from_dict(raw["changes"])
        return cls(**raw)

    def without_target(self) -> DataContract:
        return replace(self, columns=[c for c in self.columns if c.role != "target"],
                       expectations=[e for e in self.expectations if e.get("column") != self.target])


def _category_strings(s: pd.Series) -> pd.Series:
    """Category values as strings, spelt the way serving spells them (whole floats without '.0')."""
    if pd.api.types.is_float_dtype(s):
        return s.map(lambda v: None if pd.isna(v) else str(int(v)) if float(v).is_integer() else str(v))
    if isinstance(s.dtype, pd.StringDtype):  # text already: what the mapping below gives, without the loop
        return s.astype("str")  # missing stays NaN, as the mapping leaves it (the pipeline imputes NaN, not None)
    return s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v))


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

    Column roles and kinds are the data profile's decisions (`profile`, the frame's; a frame alone is
    profiled here with the declared types): ids, free text and constant or empty columns are kept as
    inputs but are not features (role 'id' or 'ignored').
    """
    data_columns = [c for c in df.columns if not str(c).startswith(INTERNAL_PREFIX)]
    if profile is None:
        profile = profile_frame(df, target, task, cfg.max_categories, id_column, timestamp_column, declared)
    decided = _decisions(profile, data_columns)
    cols: list[ColumnSpec] = []
    for name in data_columns:
        s = df[name]
        col = decided[str(name)]
        role = col.role
        kind: Kind = col.kind if role != "ignored" else "text"
        null_frac = float(s.isna().mean()) if role != "ignored" else 1.0
        spec = ColumnSpec(name=str(name), kind=kind, role=role,
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
    contract = DataContract(cols, target, task, id_column, timestamp_column, exps, declared=dict(declared or {}))
    for e in exps:
        if e["column"] not in contract.by_name:
            raise DataError(f"config expectation on column '{e['column']}': no such column in the data")
    return _bound_by_rules(contract)


def _decisions(profile: DataProfile, columns: list[Any]) -> dict[str, ColumnProfile]:
    """The profile's column decisions by name; a profile of other data (a column missing) is a bug."""
    decided = profile.by_name
    missing = [str(c) for c in columns if str(c) not in decided]
    if missing:
        raise ValueError(f"the data profile has no column {missing[0]!r}: profile the frame the contract comes from")
    return decided


def _bound_by_rules(contract: DataContract) -> DataContract:
    """Observed ranges and categories kept within the user's rules (the user's bounds win over a margin)."""
    by = contract.by_name
    for e in contract.expectations:
        spec = by[e["column"]]
        if e["type"] == "between" and spec.min is not None and spec.max is not None:
            lo = spec.min if e.get("min") is None else max(spec.min, float(e["min"]))
            hi = spec.max if e.get("max") is None else min(spec.max, float(e["max"]))
            if lo <= hi:
                spec.min, spec.max = lo, hi
        elif e["type"] == "in_set" and spec.allowed:
            permitted = set(_category_strings(pd.Series(list(e["values"]), dtype=object)).dropna())
            spec.allowed = [a for a in spec.allowed if a in permitted] or spec.allowed
    return contract


def evolve_contract(previous: DataContract | None, frame: pd.DataFrame, cfg: PipelineConfig,
                    profile: DataProfile) -> tuple[DataContract, ContractDiff]:
    """The contract re-inferred from this training data (the rows validation kept, `profile` the batch's),
    and how it differs from `previous` (also held as its `changes`).

    Ranges, categories and null fractions come from these rows; columns keep the roles and kinds of
    `previous` where the data agrees (an integer column that now holds fractions becomes numeric) and
    the config declares nothing else; the config's rules are the user's part and bound what was observed.
    """
    new = _reinferred(previous, frame, cfg, profile)
    diff = diff_contracts(previous, new, len(frame))
    return replace(new, changes=diff), diff


def _reinferred(previous: DataContract | None, frame: pd.DataFrame, cfg: PipelineConfig,
                profile: DataProfile) -> DataContract:
    """The contract these rows imply, with the structure of `previous` kept where the data agrees."""
    return infer_contract(frame, cfg.target, cfg.task, cfg.validation, cfg.id_column, cfg.timestamp_column,
                          cfg.columns, _follow_structure(previous, frame, cfg, profile))


def checking_contract(previous: DataContract | None, frame: pd.DataFrame, cfg: PipelineConfig,
                      profile: DataProfile) -> DataContract:
    """What a training batch (`profile` its profile) is checked against before its own contract is
    evolved from the rows kept.

    The previous contract's columns as they were (a missing one is structural, their null budgets hold;
    their observed ranges and categories only report), columns it does not know as this batch shows
    them, and the config's rules. Without a previous contract: the one this batch implies.
    """
    fresh = _reinferred(previous, frame, cfg, profile)
    if previous is None:
        return fresh
    old = previous.by_name
    cols = []
    for spec in fresh.columns:
        prev = old.get(spec.name)
        same = prev is not None and prev.role == spec.role and (
            prev.kind == spec.kind or {prev.kind, spec.kind} <= {"numeric", "integer"})
        cols.append(replace(prev, kind=spec.kind) if same and prev is not None else spec)
    gone = [s for s in previous.columns
            if s.name not in fresh.by_name and s.role != "ignored" and s.name not in cfg.drop_columns]
    return replace(fresh, columns=cols + gone, changes=None)


def _follow_structure(previous: DataContract | None, frame: pd.DataFrame, cfg: PipelineConfig,
                      profile: DataProfile) -> DataProfile:
    """The data profile with each column's role and kind as the evolved contract keeps them."""
    names = [str(c) for c in frame.columns if not str(c).startswith(INTERNAL_PREFIX)]
    decided = _decisions(profile, names)
    if previous is None:
        return profile
    old = previous.by_name
    user = {cfg.target, cfg.id_column, cfg.timestamp_column, *cfg.columns} - {None}
    structure: dict[str, tuple[Role, Kind]] = {}
    for name in names:
        role, kind = decided[name].role, decided[name].kind
        prev = old.get(name)
        if prev is not None and name not in user and prev.role not in {"target", "id", "timestamp"}:
            role, kind = prev.role, prev.kind
            if kind == "integer" and _has_fractions(frame[name]):
                kind = "numeric"
            if kind == "text":
                role = "ignored"  # a contract saved before unused columns had a role of their own
        structure[name] = (role, kind)
    return profile.follow_contract(structure, "the previous data contract")


def _has_fractions(s: pd.Series) -> bool:
    v = as_numbers(s).dropna().to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return bool(len(v) and np.any(np.mod(v, 1) != 0))


def diff_contracts(old: DataContract | None, new: DataContract, rows: int = 0) -> ContractDiff:
    """What changed from `old` to `new`: columns, kinds, roles, observed ranges and categories, user rules."""
    if old is None:
        return ContractDiff(first=True, rows=rows, columns=len(new.columns))
    was, now = old.by_name, new.by_name
    diff = ContractDiff(rows=rows, columns=len(new.columns), added=[c for c in now if c not in was],
                        removed=[c for c in was if c not in now])
    for name, b in now.items():
        a = was.get(name)
        if a is None:
            continue
        if a.kind != b.kind:
            diff.kinds[name] = [a.kind, b.kind]
        if a.role != b.role:
            diff.roles[name] = [a.role, b.role]
        change = _range_change(a, b)
        if change:
            diff.ranges[name] = {"from": [a.min, a.max], "to": [b.min, b.max], "change": change}
        if a.allowed is not None and b.allowed is not None:
            added, gone = sorted(set(b.allowed) - set(a.allowed)), sorted(set(a.allowed) - set(b.allowed))
            if added or gone:
                diff.categories[name] = {"added": added, "removed": gone}
    old_rules, new_rules = [rule_text(e) for e in old.expectations], [rule_text(e) for e in new.expectations]
    diff.rules_added = [r for r in new_rules if r not in old_rules]
    diff.rules_removed = [r for r in old_rules if r not in new_rules]
    return diff


def _range_change(a: ColumnSpec, b: ColumnSpec) -> str | None:
    """'widened', 'narrowed' or 'shifted' when both specs have a range and it moved; else None."""
    if None in (a.min, a.max, b.min, b.max):
        return None
    assert a.min is not None and a.max is not None and b.min is not None and b.max is not None
    tol = 1e-9 * max(1.0, abs(a.min), abs(a.max))
    lo = 0 if abs(b.min - a.min) <= tol else (1 if b.min < a.min else -1)  # 1: wider on this side
    hi = 0 if abs(b.max - a.max) <= tol else (1 if b.max > a.max else -1)
    if lo == hi == 0:
        return None
    if lo >= 0 and hi >= 0:
        return "widened"
    return "narrowed" if lo <= 0 and hi <= 0 else "shifted"


def rule_text(e: Mapping[str, Any]) -> str:
    """A user rule (config expectation) in a few words, e.g. 'temperature between -45..50'."""
    col, kind = e["column"], e["type"]
    if kind == "between":
        return f"{col} between {_span([e.get('min'), e.get('max')])}"
    if kind == "in_set":
        return f"{col} in {sorted(map(str, e['values']))}"
    if kind == "regex":
        return f"{col} matches {e['pattern']!r}"
    return f"{col} {kind.replace('_', ' ')}"


def merge_expectations(contract: DataContract, extra: list[UserExpectation]) -> DataContract:
    """The contract plus the config's expectations (those it does not hold already)."""
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
    out = df.copy(deep=False)  # columns are replaced, never changed in place
    failures: dict[int, list[str]] = {}
    for spec in expected:
        s = df[spec.name]
        if s.isna().all() and spec.max_null_fraction < 1.0:
            raise DataError(f"column '{spec.name}' is entirely empty; the contract expects values")
        if spec.kind in {"numeric", "integer"}:
            out[spec.name] = _coerce_numbers(s, spec, failures)
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
                s.astype("str") if isinstance(s.dtype, pd.StringDtype) else
                s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v)))
    return Coerced(out, failures)


def _coerce_numbers(s: pd.Series, spec: ColumnSpec, failures: dict[int, list[str]]) -> pd.Series | np.ndarray:
    """A numeric column as float64: what cannot be read as a finite number (and a fraction in a column of whole
    numbers) becomes null and its row is reported; mostly unreadable values stop the run."""
    if isinstance(s.dtype, np.dtype) and s.dtype.kind in "iuf":  # stored as numbers: one pass, no text to parse
        values = s.to_numpy(dtype=np.float64, copy=True)
        infinite = np.isinf(values)
        if infinite.any():
            _record(failures, infinite, f"expect_column_values_to_be_of_type({spec.name}, numeric)", s)
            values[infinite] = np.nan
        if spec.kind == "integer" and spec.role != "target" and s.dtype.kind == "f":
            fraction = np.isfinite(values) & (np.mod(values, 1) != 0)
            if fraction.any():
                _record(failures, fraction, f"expect_column_values_to_be_of_type({spec.name}, integer)", s)
                values[fraction] = np.nan
        return values
    # text, objects, booleans and nullable types: parsed, and the rows that do not parse reported
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
    _record(failures, bad, f"expect_column_values_to_be_of_type({spec.name}, numeric)", s)
    if spec.kind == "integer" and spec.role != "target":
        # 3.5 in a column of whole numbers breaks the contract as "x" does; the value becomes null
        values = cast.astype(float)
        fraction = values.notna() & np.isfinite(values.fillna(0.0)) & (np.mod(values.fillna(0.0), 1) != 0)
        if fraction.any():
            cast = cast.where(~fraction)
            _record(failures, fraction, f"expect_column_values_to_be_of_type({spec.name}, integer)", s)
    return cast.astype(float)


def _record(failures: dict[int, list[str]], mask: pd.Series | np.ndarray, reason: str, values: pd.Series) -> None:
    """Note each failing row with the reason and the value it held."""
    for idx in np.flatnonzero(np.asarray(mask)):
        failures.setdefault(int(idx), []).append(f"{reason}: {str(values.iloc[idx])[:40]!r}")
