"""The data profile: what each column is taken to be before training, and why.

Nothing is dropped silently: every column gets a role and a kind with a reason, null and unique
counts, and whether it is a feature. A column that looks numeric but holds a few stray values stays
numeric; the values are listed with their counts (their rows are quarantined by validation). Declared
types (`columns:` in the config) win over inference. The data contract (mlops.core.contract) is built
from the same decisions, in the same words (`Role`, `Kind`). Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlops.core.config import PipelineConfig

# How a column is used, in the profile and in the data contract alike (saved with these names):
# 'ignored' is an input kept so callers may send it, but not a feature (free text, constant, empty, dropped).
Role = Literal["feature", "target", "id", "timestamp", "ignored"]
# What a column holds; a column that is not used is 'text'.
Kind = Literal["numeric", "integer", "categorical", "boolean", "datetime", "text"]
FEATURE_ROLES = frozenset({"feature", "timestamp"})
# How the summary counts features by kind.
_FAMILY = {"numeric": "numeric", "integer": "numeric", "categorical": "category", "boolean": "category",
           "datetime": "date"}

# Columns the pipeline itself adds (e.g. rowkeys' new-row marker) are bookkeeping, not data.
INTERNAL_PREFIX = "_mlops_"
# A column that parses as numbers (or dates) this often is numbers (or dates) with a few stray values.
MOSTLY = 0.9
# Below this many rows, "unique per row and monotonic" says too little to call a column an identifier.
ID_MIN_ROWS = 20
# Names pandas and spreadsheets give a saved row index.
_INDEX_NAME = re.compile(r"^(unnamed: ?\d+|index|level_0|)$", re.IGNORECASE)
_DATE_LIKE = re.compile(
    r"^\s*(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})"
    r"([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?)?\s*$"
)
_TOKEN = re.compile(r"^\S{1,64}$")


@dataclass
class ColumnProfile:
    """One column: its role and kind and why, and its counts."""

    name: str
    role: Role
    why: str
    kind: Kind
    nulls: int
    unique: int
    feature: bool
    dtype: str = ""
    declared: str | None = None
    markers: dict[str, int] = field(default_factory=dict)
    offending: dict[str, int] = field(default_factory=dict)


@dataclass
class DataProfile:
    """Every column's role before training; `not_used` names each column that is not a feature and why."""

    rows: int
    columns: list[ColumnProfile]
    malformed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def by_name(self) -> dict[str, ColumnProfile]:
        return {c.name: c for c in self.columns}

    @property
    def features(self) -> list[str]:
        return [c.name for c in self.columns if c.feature]

    @property
    def not_used(self) -> list[tuple[str, str]]:
        """(column, reason) for every column that will not be a feature, the target included."""
        return [(c.name, f"{c.role}: {c.why}") for c in self.columns if not c.feature]

    def offending_lines(self) -> list[str]:
        """One sentence per column holding values that do not parse as its kind."""
        out = []
        for c in self.columns:
            if c.offending:
                what = "dates" if c.kind == "datetime" else "numbers"
                n = sum(c.offending.values())
                out.append(f"'{c.name}': {n} value(s) are not {what}: {_spellings(c.offending)} (rows quarantined)")
        return out

    def marker_lines(self) -> list[str]:
        """One sentence per column in which missing-value markers were read as missing."""
        return [f"'{c.name}': read as missing: {_spellings(c.markers)}" for c in self.columns if c.markers]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = self.features
        out["not_used"] = [{"column": n, "reason": r} for n, r in self.not_used]
        return out

    def summary_lines(self) -> list[str]:
        """Short lines for the CLI summary, each starting with a 10-character label."""
        counts: dict[str, int] = {}
        for c in self.columns:
            if c.feature:
                key = _FAMILY.get(c.kind, c.kind)
                counts[key] = counts.get(key, 0) + 1
        parts = ", ".join(f"{n} {k}" for k, n in counts.items())
        unused = ", ".join(f"{c.name} ({c.role}: {c.why})" for c in self.columns if not c.feature and c.role != "target")
        lines = [f"{'Columns':10s} {len(self.features)} features ({parts or 'none'})"
                 + (f"; not used: {unused}" if unused else "")]
        lines += [f"{'Markers' if i == 0 else '':10s} {m}" for i, m in enumerate(self.marker_lines())]
        lines += [f"{'Bad values' if i == 0 else '':10s} {m}" for i, m in enumerate(self.offending_lines())]
        if self.malformed:
            shown = "; ".join(self.malformed[:3]) + (f"; +{len(self.malformed) - 3} more" if len(self.malformed) > 3 else "")
            lines.append(f"{'Malformed':10s} {len(self.malformed)} line(s) quarantined: {shown}")
        lines += [f"{'Note' if i == 0 else '':10s} {n}" for i, n in enumerate(self.notes)]
        return lines

    def to_markdown(self) -> str:
        """A Markdown report (a Prefect artifact): the column table, then what is not used and why."""
        rows = "\n".join(
            f"| `{c.name}` | {c.role} | {'yes' if c.feature else 'no'} | {c.kind} | {c.nulls:,} | {c.unique:,} | "
            f"{_md(c.why)} |" for c in self.columns
        )
        md = [f"# Data profile\n\n{self.rows:,} rows, {len(self.columns)} columns, {len(self.features)} features.\n",
              "| column | role | feature | kind | nulls | unique | why |", "| --- | --- | --- | --- | --- | --- | --- |",
              rows, ""]
        unused = [(n, r) for n, r in self.not_used if self.by_name[n].role != "target"]
        if unused:
            md += ["## Not used as features", "", *[f"- `{n}`: {_md(r)}" for n, r in unused], ""]
        for title, lines in [("Values that do not parse", self.offending_lines()),
                             ("Read as missing", self.marker_lines()), ("Malformed lines (quarantined)", self.malformed),
                             ("Notes", self.notes)]:
            if lines:
                md += [f"## {title}", "", *[f"- {_md(x)}" for x in lines], ""]
        return "\n".join(md)

    def follow_contract(self, columns: Mapping[str, tuple[Role, Kind]], source: str) -> DataProfile:
        """The profile as a given contract decides it (name -> (role, kind)), e.g. the champion's."""
        out = []
        for c in self.columns:
            if c.name not in columns:
                new = ColumnProfile(**{**asdict(c), "role": "ignored", "feature": False,
                                       "why": f"not in {source}"})
            else:
                role, kind = columns[c.name]
                why = c.why if (role, kind) == (c.role, c.kind) else f"as in {source} (here: {c.role}, {c.kind}: {c.why})"
                new = ColumnProfile(**{**asdict(c), "role": role, "kind": kind, "feature": role in FEATURE_ROLES,
                                       "why": why})
            out.append(new)
        return DataProfile(self.rows, out, list(self.malformed), list(self.notes))


def _spellings(counts: Mapping[str, int], limit: int = 6) -> str:
    items = sorted(counts.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{str(k)[:40]!r} x{n}" for k, n in items[:limit])
    return text + (f", +{len(items) - limit} more" if len(items) > limit else "")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def is_text_like(s: pd.Series) -> bool:
    """Object or string columns: the ones that can hold markers and numbers spelt as text."""
    return s.dtype == object or isinstance(s.dtype, pd.StringDtype)


def as_numbers(s: pd.Series) -> pd.Series:
    """Numbers spelt as text parsed to floats; what does not parse becomes NaN."""
    if pd.api.types.is_bool_dtype(s):
        return s.astype(float)
    if pd.api.types.is_numeric_dtype(s):
        return s.astype(float)
    return pd.to_numeric(s.astype(object), errors="coerce").astype(float)


def as_dates(s: pd.Series) -> pd.Series:
    """Timestamps spelt as text parsed (mixed formats allowed); what does not parse becomes NaT."""
    if pd.api.types.is_datetime64_any_dtype(s):
        return s
    return pd.to_datetime(s.astype(object), errors="coerce", format="mixed")


def numeric_kind(values: pd.Series) -> Kind:
    """'integer' for integer columns (or whole-number floats with more than two values), else 'numeric'."""
    if pd.api.types.is_integer_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return "integer"
    v = as_numbers(values).dropna()
    if len(v) and np.all(np.mod(v.to_numpy(dtype=float), 1) == 0) and v.nunique() > 2:
        return "integer"
    return "numeric"


def _unparsed(s: pd.Series, parsed: pd.Series) -> dict[str, int]:
    bad = s[parsed.isna() & s.notna()]
    return {str(k): int(n) for k, n in bad.astype(str).value_counts().items()}


def _monotonic_unique(values: pd.Series, rows: int) -> bool:
    v = values.dropna()
    if rows < ID_MIN_ROWS or len(v) != rows or v.nunique() != rows:
        return False
    if not np.all(np.mod(v.to_numpy(dtype=float), 1) == 0):
        return False
    return bool(v.is_monotonic_increasing or v.is_monotonic_decreasing)


def _decide(name: str, s: pd.Series, rows: int, max_categories: int) -> tuple[Role, str, Kind, dict[str, int]]:
    """Inferred (role, why, kind, offending values) of a column that is neither configured nor declared."""
    present = s.dropna()
    if present.empty:
        return "ignored", "all values are missing", "text", {}
    unique = int(present.nunique())
    unnamed = bool(_INDEX_NAME.match(str(name)))
    if pd.api.types.is_bool_dtype(s):
        if unique == 1:
            return "ignored", f"constant (every value is {present.iloc[0]!r})", "text", {}
        return "feature", "true/false values", "boolean", {}
    if pd.api.types.is_datetime64_any_dtype(s):
        if unique == 1:
            return "ignored", f"constant (every value is {present.iloc[0]})", "text", {}
        return "feature", "timestamps", "datetime", {}
    offending: dict[str, int] = {}
    numbers = None
    why_num = "numbers"
    share = 0.0
    if pd.api.types.is_numeric_dtype(s):
        numbers = s.astype(float)
    else:
        probe = present.iloc[:: max(1, len(present) // 2000)]  # a spread-out sample first: parsing all is slow
        share = float(as_numbers(probe).notna().mean())
        parsed = as_numbers(s) if share >= 0.5 else None
        if parsed is not None:
            share = float(parsed.notna().sum()) / len(present)
        if parsed is not None and share >= MOSTLY:
            numbers, offending = parsed, _unparsed(s, parsed)
            if offending:
                why_num = f"numbers ({share:.1%} of the values parse; the rest are listed and quarantined)"
    if numbers is not None:
        kept = numbers.dropna()
        if kept.nunique() == 1 and not offending:
            return "ignored", f"constant (every value is {kept.iloc[0]:g})", "text", {}
        if _monotonic_unique(numbers, rows):
            why = "unique per row, monotonic" + (" (an unnamed column: a saved row index)" if unnamed else "")
            return "id", why, "integer", {}
        if unnamed and kept.nunique() == rows:
            return "id", "an unnamed column, unique per row (a saved row index)", "integer", {}
        return "feature", why_num, numeric_kind(s if pd.api.types.is_numeric_dtype(s) else numbers), offending
    text = present.astype(str)
    sample = text.iloc[:: max(1, len(text) // 2000)]
    if sample.str.match(_DATE_LIKE).mean() >= MOSTLY and text.str.match(_DATE_LIKE).mean() >= MOSTLY:
        parsed = as_dates(s)
        if parsed.notna().sum() >= MOSTLY * len(present):
            bad = _unparsed(s, parsed)
            if parsed.dropna().nunique() == 1 and not bad:
                return "ignored", f"constant (every value is {present.iloc[0]!r})", "text", {}
            return "feature", "date-like strings", "datetime", bad
    if unique == 1:
        return "ignored", f"constant (every value is {str(present.iloc[0])[:40]!r})", "text", {}
    if unique == rows and (unnamed or (unique > max_categories and bool(text.str.match(_TOKEN).all()))):
        why = "an unnamed column, unique per row (a saved row index)" if unnamed else "unique per row, like an identifier"
        return "id", why, "text", {}
    if unique <= max_categories:
        return "feature", f"{unique} distinct values", "categorical", {}
    why = f"{unique:,} distinct values (more than validation.max_categories = {max_categories})"
    if share >= 0.5:
        why += f"; {share:.0%} parse as numbers: declare it numeric to keep it and quarantine the rest"
    return "ignored", why, "text", {}


def _id_kind(s: pd.Series) -> Kind:
    """An identifier's kind: integer when its values are numbers, else text."""
    return "integer" if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s) else "text"


def _declared(name: str, s: pd.Series, declared: str) -> tuple[Role, str, Kind, dict[str, int]]:
    why = f"declared {declared} in columns"
    if declared in {"numeric", "integer"}:
        return "feature", why, declared, _unparsed(s, as_numbers(s))
    if declared == "datetime":
        return "feature", why, "datetime", _unparsed(s, as_dates(s))
    if declared in {"categorical", "boolean"}:
        return "feature", why, declared, {}
    if declared == "id":
        return "id", why, _id_kind(s), {}
    return "ignored", why, "text", {}  # text or drop


def profile_frame(
    df: pd.DataFrame,
    target: str,
    task: str,
    max_categories: int = 50,
    id_column: str | None = None,
    timestamp_column: str | None = None,
    declared: Mapping[str, str] | None = None,
    markers: Mapping[str, dict[str, int]] | None = None,
    removed: Mapping[str, str] | None = None,
    malformed: list[str] | None = None,
) -> DataProfile:
    """Decide every column's role: configured roles first, then declared types, then inference.

    `markers` are the missing-value spellings already read as missing per column; `removed` names
    columns taken out before (drop_columns, declared drop) with the reason, so the profile lists them.
    A declared type for a column the data lacks is the loader's error (mlops.core.data.check_frame).
    """
    declared = dict(declared or {})
    rows = len(df)
    cols: list[ColumnProfile] = []
    for name in df.columns:
        s = df[name]
        key = str(name)
        if key.startswith(INTERNAL_PREFIX):
            continue  # the pipeline's own bookkeeping (e.g. a retraining file's new-row marker)
        if key == target:
            kind = "categorical" if task == "classification" else numeric_kind(s)
            role, why, offending = "target", "the target", {}
        elif key == timestamp_column:
            role, why, kind, offending = "timestamp", "timestamp_column in the config", "datetime", {}
        elif key == id_column:
            role, why, kind, offending = "id", "id_column in the config", _id_kind(s), {}
        elif key in declared:
            role, why, kind, offending = _declared(key, s, declared[key])
        else:
            role, why, kind, offending = _decide(key, s, rows, max_categories)
        found = dict((markers or {}).get(key, {}))
        if found and role != "target":
            why += f"; {sum(found.values())} missing-value marker(s) read as missing"
        cols.append(ColumnProfile(
            name=key, role=role, why=why, kind=kind, nulls=int(s.isna().sum()), unique=int(s.nunique()),
            feature=role in FEATURE_ROLES, dtype=str(s.dtype), declared=declared.get(key),
            markers=found, offending=offending,
        ))
    for name, why in (removed or {}).items():
        cols.append(ColumnProfile(name=name, role="ignored", why=why, kind="text", nulls=0, unique=0, feature=False,
                                  declared=declared.get(name)))
    return DataProfile(rows, cols, list(malformed or []))


def profile_batch(df: pd.DataFrame, cfg: PipelineConfig, markers: Mapping[str, dict[str, int]] | None = None,
                  removed: Mapping[str, str] | None = None, malformed: list[str] | None = None) -> DataProfile:
    """`profile_frame` with the config's target, task, category limit, id and timestamp columns and declared types."""
    return profile_frame(df, cfg.target, cfg.task, cfg.validation.max_categories, cfg.id_column,
                         cfg.timestamp_column, cfg.columns, markers, removed, malformed)
