"""Validate a batch against the data contract with Great Expectations 1.x (ephemeral context).

Structural failures (missing column, wrong type, no rows, a null burst) stop the run with one clear
sentence. Row-level failures (a value out of range, an unknown category, a value of the wrong type)
send the row to quarantine with the expectations it broke; the good rows go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from mlops.core.contract import DataContract, coerce_to_contract
from mlops.core.data import MalformedRow
from mlops.core.errors import DataError

QUARANTINE_REASON_COLUMN = "_quarantine_reasons"


@dataclass
class ValidationOutcome:
    good: pd.DataFrame
    quarantined: pd.DataFrame
    batch_failures: list[str] = field(default_factory=list)
    checked: int = 0
    expectations: int = 0

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
        }


def _describe(cfg: Any) -> str:
    kw = {k: v for k, v in cfg.kwargs.items() if k not in {"batch_id", "result_format"} and v is not None}
    col = kw.pop("column", None)
    if "value_set" in kw and len(kw["value_set"]) > 8:
        kw["value_set"] = f"<{len(kw['value_set'])} values>"
    args = ", ".join(f"{k}={v}" for k, v in kw.items())
    return f"{cfg.type}({col}{', ' if col and args else ''}{args})"


def build_suite(contract: DataContract, need_target: bool = True) -> tuple[list[Any], set[int]]:
    """Great Expectations expectations for the contract, and the positions of the row-level ones."""
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
            if c.min is not None and c.max is not None:
                add(E.ExpectColumnValuesToBeBetween(column=c.name, min_value=c.min, max_value=c.max), True)
        elif c.kind == "categorical" and c.allowed:
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


def validate_batch(df: pd.DataFrame, contract: DataContract, need_target: bool = True) -> ValidationOutcome:
    """Run the contract's expectation suite on a batch and split it into good and quarantined rows."""
    import logging

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)

    coerced = coerce_to_contract(df.reset_index(drop=True), contract, need_target=need_target)
    frame = coerced.frame
    exps, row_level = build_suite(contract, need_target)

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        ctx.data_sources.add_pandas("mlops")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(name="data_contract", expectations=exps)
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})

    failures = coerced.row_failures
    batch_failures: list[str] = []
    for pos, r in enumerate(result.results):
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
    return ValidationOutcome(frame.loc[~mask].reset_index(drop=True), quarantined, [], len(frame), len(exps))


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
    if outcome.quarantine_fraction > limit:
        raise DataError(
            f"{len(outcome.quarantined)} of {outcome.checked} rows ({outcome.quarantine_fraction:.1%}) broke the data "
            f"contract, above the allowed {limit:.1%}; see {where}"
        )
