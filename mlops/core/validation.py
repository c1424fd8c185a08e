"""Validate a batch against the data contract with Great Expectations 1.x (ephemeral context).

Structural failures (missing column, wrong type, no rows, a null burst) stop the run with one clear
sentence. Row-level failures (a user rule broken, a value of the wrong type, and, unless the caller
keeps them, a value outside the observed range or an unknown category) send the row to quarantine
with the expectations it broke; the good rows go on. Kept out-of-observed values are counted per
column: a drift signal, not broken data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlops.core.config import PipelineConfig
from mlops.core.contract import DataContract, checking_contract, coerce_to_contract, evolve_contract
from mlops.core.data import MalformedRow, drop_unlabelled
from mlops.core.errors import DataError
from mlops.core.expectations import Engine, run_suite
from mlops.core.profile import DataProfile, profile_batch

QUARANTINE_REASON_COLUMN = "_quarantine_reasons"


@dataclass
class ValidationOutcome:
    good: pd.DataFrame
    quarantined: pd.DataFrame
    batch_failures: list[str] = field(default_factory=list)
    checked: int = 0
    expectations: int = 0
    # kept rows with a value outside the contract's observed range or categories, per column (keep mode)
    outside_observed: dict[str, int] = field(default_factory=dict)
    rows_outside_observed: int = 0
    # rows left out before validation because their target is blank: not checked, not broken data
    unlabelled: int = 0

    @property
    def quarantine_fraction(self) -> float:
        return len(self.quarantined) / self.checked if self.checked else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rows_checked": self.checked,
            "rows_accepted": len(self.good),
            "rows_quarantined": len(self.quarantined),
            "quarantine_fraction": round(self.quarantine_fraction, 6),
            "expectations": self.expectations,
            "batch_failures": self.batch_failures,
            "rows_outside_observed": self.rows_outside_observed,
            "outside_observed": dict(self.outside_observed),
            "rows_unlabelled": self.unlabelled,
        }


def rows_line(summary: dict[str, Any]) -> str:
    """A data outcome summary (`ValidationOutcome.summary()`, as a training result carries it) in a few words.

    Summaries recorded before rows without a label were counted have no `rows_unlabelled`: none is said."""
    text = f"{summary['rows_accepted']:,} rows accepted, {summary['rows_quarantined']:,} quarantined"
    unlabelled = int(summary.get("rows_unlabelled") or 0)
    if unlabelled:
        text += f", {unlabelled:,} row{'' if unlabelled == 1 else 's'} without a label left out"
    return text


def _describe(cfg: Any) -> str:
    kw = {k: v for k, v in cfg.kwargs.items() if k not in {"batch_id", "result_format"} and v is not None}
    col = kw.pop("column", None)
    if "value_set" in kw and len(kw["value_set"]) > 8:
        kw["value_set"] = f"<{len(kw['value_set'])} values>"
    args = ", ".join(f"{k}={v}" for k, v in kw.items())
    return f"{cfg.type}({col}{', ' if col and args else ''}{args})"


def build_suite(contract: DataContract, need_target: bool = True,
                observed: bool = True) -> tuple[list[Any], set[int]]:
    """Great Expectations expectations for the contract, and the positions of the row-level ones.

    `observed=False` leaves out the observed ranges and categories: only structure and user rules.
    """
    import great_expectations as gx

    E = gx.expectations
    exps: list[Any] = [E.ExpectTableRowCountToBeBetween(min_value=1)]
    row_level: set[int] = set()

    def add(e: Any, row: bool) -> None:
        if row:
            row_level.add(len(exps))
        exps.append(e)

    for c in contract.columns:
        if c.role == "target" and not need_target:
            continue
        add(E.ExpectColumnToExist(column=c.name), False)
        if c.role == "ignored":
            continue  # kept as an input, not used: nothing more to expect of it
        if c.role == "target":
            add(E.ExpectColumnValuesToNotBeNull(column=c.name), True)
            continue
        if c.kind in {"numeric", "integer"} and c.role != "id":
            add(E.ExpectColumnValuesToBeInTypeList(column=c.name, type_list=["float64", "float32", "int64", "int32"]), False)
            if observed and c.min is not None and c.max is not None:
                add(E.ExpectColumnValuesToBeBetween(column=c.name, min_value=c.min, max_value=c.max), True)
        elif observed and c.kind == "categorical" and c.allowed:
            add(E.ExpectColumnValuesToBeInSet(column=c.name, value_set=list(c.allowed)), True)
        if c.max_null_fraction < 1.0:
            add(E.ExpectColumnValuesToNotBeNull(column=c.name, mostly=max(0.0, 1.0 - c.max_null_fraction)), False)
    for e in contract.expectations:
        col = e["column"]
        if col == contract.target and not need_target:
            continue
        kind = e["type"]
        if kind == "between":
            add(E.ExpectColumnValuesToBeBetween(column=col, min_value=e.get("min"), max_value=e.get("max")), True)
        elif kind == "in_set":
            add(E.ExpectColumnValuesToBeInSet(column=col, value_set=list(e["values"])), True)
        elif kind == "not_null":
            add(E.ExpectColumnValuesToNotBeNull(column=col), True)
        elif kind == "unique":
            add(E.ExpectColumnValuesToBeUnique(column=col), True)
        elif kind == "regex":
            add(E.ExpectColumnValuesToMatchRegex(column=col, regex=e["pattern"]), True)
    return exps, row_level


OutsideObserved = Literal["quarantine", "keep"]


def validate_batch(df: pd.DataFrame, contract: DataContract, need_target: bool = True,
                   outside_observed: OutsideObserved = "quarantine", engine: Engine = "columns") -> ValidationOutcome:
    """Run the contract's expectation suite on a batch and split it into good and quarantined rows.

    `outside_observed="keep"`: a value outside the observed range or categories does not quarantine
    its row (only structure and the user's rules do); such values are counted per column instead.
    The suite is evaluated column by column in one pass (mlops.core.expectations, time linear in cells);
    `engine="gx"` runs it all through Great Expectations instead (same outcome, cost columns x cells).
    """
    coerced = coerce_to_contract(df.reset_index(drop=True), contract, need_target=need_target)
    frame = coerced.frame
    exps, row_level = build_suite(contract, need_target, observed=outside_observed == "quarantine")
    results = run_suite(frame, exps, engine)

    failures = coerced.row_failures
    batch_failures: list[str] = []
    for pos, r in enumerate(results):
        if r.success:
            continue
        cfg = r.expectation_config
        if r.exception_info and r.exception_info.get("raised_exception"):
            batch_failures.append(f"{_describe(cfg)} could not run: {r.exception_info.get('exception_message')}")
        elif pos in row_level or cfg.type in {"expect_column_values_to_be_between", "expect_column_values_to_be_in_set"}:
            reason = _describe(cfg)
            for idx in r.result.get("unexpected_index_list") or []:
                failures.setdefault(int(idx), []).append(reason)
        else:
            observed = r.result.get("observed_value", r.result.get("unexpected_percent"))
            detail = f" (observed {observed:.4g}%)" if isinstance(observed, float) else (f" (observed {observed})" if observed is not None else "")
            batch_failures.append(f"{_describe(cfg)} failed{detail}")
    if batch_failures:
        raise DataError(f"data breaks the contract: {batch_failures[0]}" + (f" (+{len(batch_failures) - 1} more)" if len(batch_failures) > 1 else ""))

    bad_idx = sorted(failures)
    mask = frame.index.isin(bad_idx)
    quarantined = df.reset_index(drop=True).loc[mask].copy()
    quarantined[QUARANTINE_REASON_COLUMN] = ["; ".join(dict.fromkeys(failures[i])) for i in bad_idx]
    good = frame.loc[~mask].reset_index(drop=True)
    per_column, rows = count_outside_observed(good, contract) if outside_observed == "keep" else ({}, 0)
    return ValidationOutcome(good, quarantined, [], len(frame), len(exps), per_column, rows)


def count_outside_observed(frame: pd.DataFrame, contract: DataContract) -> tuple[dict[str, int], int]:
    """Per column, the rows of a (coerced) frame outside the contract's observed range or categories, and
    how many rows have at least one such value."""
    per_column: dict[str, int] = {}
    any_row = np.zeros(len(frame), dtype=bool)
    for c in contract.columns:
        if c.name not in frame.columns or c.role not in {"feature", "target"}:
            continue
        s = frame[c.name]
        if c.kind in {"numeric", "integer"} and c.min is not None and c.max is not None:
            v = pd.to_numeric(s, errors="coerce").astype(float)
            out = ((v < c.min) | (v > c.max)).to_numpy()
        elif c.kind == "categorical" and c.allowed:
            out = (s.notna() & ~s.astype(object).map(str).isin(c.allowed)).to_numpy()
        else:
            continue
        if out.any():
            per_column[c.name] = int(out.sum())
            any_row |= out
    return per_column, int(any_row.sum())


def add_malformed(outcome: ValidationOutcome, malformed: Sequence[MalformedRow]) -> ValidationOutcome:
    """The outcome with malformed source rows (wrong field count) added to the quarantine, each with its reason.

    They count as checked rows, so they weigh on max_quarantine_fraction like any other bad row.
    """
    if not malformed:
        return outcome
    columns = [c for c in outcome.quarantined.columns if c != QUARANTINE_REASON_COLUMN] or list(outcome.good.columns)
    records = [{c: m.record().get(c) for c in columns} | {QUARANTINE_REASON_COLUMN: m.reason} for m in malformed]
    rows = pd.DataFrame.from_records(records, columns=[*columns, QUARANTINE_REASON_COLUMN])
    frames = [f for f in (outcome.quarantined, rows) if not f.empty]
    quarantined = pd.concat(frames, ignore_index=True) if len(frames) > 1 else rows
    return replace(outcome, quarantined=quarantined, checked=outcome.checked + len(malformed))


def write_quarantine(outcome: ValidationOutcome, folder: Path, name: str = "quarantined.csv") -> Path | None:
    """Write the quarantined rows, each with the expectations it broke; None when nothing was quarantined."""
    if outcome.quarantined.empty:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    outcome.quarantined.to_csv(path, index=False)
    return path


def enforce_quarantine_limit(outcome: ValidationOutcome, limit: float, where: Path | None) -> None:
    """Stop when more rows broke the contract than `limit` allows: one sentence with the reasons met most
    often and, when the rows were written (`where`), the quarantine file."""
    if outcome.quarantine_fraction > limit:
        see = f"; see {where}" if where is not None else ""
        raise DataError(
            f"{len(outcome.quarantined)} of {outcome.checked} rows ({outcome.quarantine_fraction:.1%}) broke the data "
            f"contract, above the allowed {limit:.1%}{_top_reasons(outcome.quarantined)}{see}"
        )


def _top_reasons(quarantined: pd.DataFrame, n: int = 3) -> str:
    """`: most often <reason> (count), ...` from the quarantined rows' reasons; empty when there are none."""
    if quarantined.empty or QUARANTINE_REASON_COLUMN not in quarantined.columns:
        return ""
    reasons = quarantined[QUARANTINE_REASON_COLUMN].astype(str).str.split("; ").explode()
    # a reason may quote the value it met ("...: 'abc'"); counted by the expectation, the data is not quoted
    counts = reasons.str.split(": ", n=1).str[0].value_counts()
    return ": most often " + ", ".join(f"{r} ({k})" for r, k in counts.head(n).items())


@dataclass
class TrainingBatch:
    """A training batch checked: the outcome, the contract inferred from the rows kept (its `changes` are
    the diff from the previous contract) and the quarantine file (None when no row was set aside)."""

    outcome: ValidationOutcome
    contract: DataContract
    quarantine_file: Path | None = None


def validate_training_batch(df: pd.DataFrame, previous: DataContract | None, cfg: PipelineConfig,
                            profile: DataProfile | None = None, malformed: Sequence[MalformedRow] = (),
                            quarantine_dir: Path | None = None) -> TrainingBatch:
    """Check a training batch against the previous contract (the champion's; None the first time) and
    the config's rules, quarantine what breaks structure or a user rule (written under `quarantine_dir`
    when given), stop above `max_quarantine_fraction`, and evolve the contract from the rows kept.

    Rows without a label (a blank target: missing, empty or one of the config's `na_values`) are left out
    first and counted (`outcome.unlabelled`): they are not broken, so they are not quarantined and do not
    weigh on `max_quarantine_fraction`; a batch where no row has a label is a DataError. A target that is
    present but wrong (text in a numeric target, a value a rule forbids) is quarantined like any bad value.

    Values outside the previous contract's observed ranges or categories are kept and counted. The batch
    is profiled once: `profile` (the loader's), else here; the check and the new contract see the same
    roles, and the contract is evolved once, from the rows kept.
    """
    df, unlabelled = drop_unlabelled(df, cfg)
    if profile is None:
        profile = profile_batch(df, cfg)
    checking = checking_contract(previous, df, cfg, profile)
    checked = replace(validate_batch(df, checking, outside_observed="keep"), unlabelled=unlabelled)
    outcome = add_malformed(checked, malformed)
    path = write_quarantine(outcome, quarantine_dir) if quarantine_dir is not None else None
    enforce_quarantine_limit(outcome, cfg.validation.max_quarantine_fraction, path)
    contract, _ = evolve_contract(previous, outcome.good, cfg, profile)
    return TrainingBatch(outcome, contract, path)
