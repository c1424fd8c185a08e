"""Evaluate the data contract's Great Expectations suite in one pass over the columns, in time linear in cells.

Great Expectations' pandas engine filters the whole frame for every expectation it runs, so a suite of
three expectations per column costs columns x cells: a 1,000 x 5,000 batch took longer than 25 minutes.
Here each expectation the contract uses is computed on its own column with the same pandas operation
Great Expectations applies (its nulls left out as it leaves them out), so the unexpected rows, and so the
quarantined rows and their reasons, are the same; a null budget exceeded reports the percentage Great
Expectations reports. Anything else (an expectation or a column type this module does not cover, a failing
type, existence or row-count check, whose message is then Great Expectations' own) is run by Great
Expectations itself, on the few columns it names. `engine="gx"` runs the whole suite
through Great Expectations as before (kept for comparison: tests and bench/bench_validation.py).
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

Engine = Literal["columns", "gx"]
NUMERIC = {"float64", "float32", "int64", "int32"}


@dataclass
class Verdict:
    """What validate_batch reads of a Great Expectations validation result, for one expectation."""

    success: bool
    expectation_config: Any
    result: dict[str, Any] = field(default_factory=dict)
    exception_info: dict[str, Any] | None = None


def run_suite(frame: pd.DataFrame, exps: Sequence[Any], engine: Engine = "columns") -> list[Any]:
    """One verdict per expectation, in suite order (Great Expectations results or Verdicts)."""
    if engine == "gx":
        return run_gx(frame, exps)
    verdicts: list[Any] = [None] * len(exps)
    rest: list[int] = []
    for pos, e in enumerate(exps):
        cfg = e.configuration
        try:
            verdicts[pos] = _evaluate(frame, cfg.type, dict(cfg.kwargs), cfg)
        except Exception:  # noqa: BLE001 - an unusual column: Great Expectations says what happens
            verdicts[pos] = None
        if verdicts[pos] is None:
            rest.append(pos)
    if rest:
        names = list(dict.fromkeys(c for p in rest if (c := exps[p].configuration.kwargs.get("column")) in frame))
        sub = frame[names] if names else frame.iloc[:, :1]
        for pos, r in zip(rest, run_gx(sub, [exps[p] for p in rest]), strict=True):
            verdicts[pos] = r
    return verdicts


def run_gx(frame: pd.DataFrame, exps: Sequence[Any]) -> list[Any]:
    """The expectations run by Great Expectations 1.x on the frame (an ephemeral context), in suite order."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        ctx.data_sources.add_pandas("mlops")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(name="data_contract", expectations=list(exps))
    results = batch.validate(suite, result_format={"result_format": "COMPLETE"}).results
    return _in_suite_order(exps, results)


def _key(cfg: Any) -> tuple[str, str]:
    kw = {k: v for k, v in cfg.kwargs.items() if k not in {"batch_id", "result_format"}}
    return cfg.type, repr(sorted(kw.items(), key=lambda kv: kv[0]))


def _in_suite_order(exps: Sequence[Any], results: Sequence[Any]) -> list[Any]:
    """Great Expectations groups its results by column, so a rule added after the per-column ones comes back
    elsewhere; callers read results by suite position (which ones are row-level), so put them back."""
    slots: dict[tuple[str, str], list[int]] = {}
    for pos, e in enumerate(exps):
        slots.setdefault(_key(e.configuration), []).append(pos)
    ordered: list[Any] = [None] * len(exps)
    for r in results:
        ordered[slots[_key(r.expectation_config)].pop(0)] = r
    if any(r is None for r in ordered):  # pragma: no cover - every expectation has exactly one result
        raise RuntimeError("Great Expectations returned results that do not match the suite")
    return ordered


def _rows(frame: pd.DataFrame, cfg: Any, unexpected: np.ndarray) -> Verdict:
    """A map expectation's verdict: it fails when any row is unexpected, and says which."""
    idx = frame.index[unexpected]
    return Verdict(not len(idx), cfg, {"unexpected_index_list": idx.tolist(), "unexpected_count": len(idx)})


def _number(v: Any) -> bool:
    return v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_))


def _evaluate(frame: pd.DataFrame, kind: str, kw: dict[str, Any], cfg: Any) -> Verdict | None:  # noqa: C901, PLR0911
    """The verdict Great Expectations would give, computed on one column; None when it must say it itself."""
    if kind == "expect_table_row_count_to_be_between":
        ok = set(kw) == {"min_value"} and len(frame) >= kw["min_value"]
        return Verdict(True, cfg, {"observed_value": len(frame)}) if ok else None
    col = kw.get("column")
    if col not in frame.columns or not frame.columns.is_unique:
        return None
    s = frame[col]
    if kind == "expect_column_to_exist":
        return Verdict(True, cfg) if set(kw) == {"column"} else None
    if kind == "expect_column_values_to_be_in_type_list":
        ok = set(kw) == {"column", "type_list"} and isinstance(s.dtype, np.dtype) and s.dtype.name in NUMERIC \
            and s.dtype.name in kw["type_list"]
        return Verdict(True, cfg, {"observed_value": s.dtype.name}) if ok else None
    if kind == "expect_column_values_to_not_be_null":
        if not set(kw) <= {"column", "mostly"}:
            return None
        null = s.isna().to_numpy()
        if "mostly" not in kw:
            return _rows(frame, cfg, null)
        total, missing = len(s), int(null.sum())
        if total == 0 or (total - missing) / total >= kw["mostly"]:
            return Verdict(True, cfg, {"unexpected_count": missing})
        return Verdict(False, cfg, {"unexpected_count": missing, "unexpected_percent": missing / total * 100})
    present = s.notna().to_numpy()
    if kind == "expect_column_values_to_be_between":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        if not set(kw) <= {"column", "min_value", "max_value"} or not (_number(lo) and _number(hi)) \
                or (lo is None and hi is None) or (lo is not None and hi is not None and lo > hi) \
                or not (isinstance(s.dtype, np.dtype) and s.dtype.name in {"float64", "int64"}):
            return None
        v = s.to_numpy()
        inside = np.ones(len(v), dtype=bool)
        with np.errstate(invalid="ignore"):
            if lo is not None:
                inside &= lo <= v
            if hi is not None:
                inside &= v <= hi
        return _rows(frame, cfg, present & ~inside)
    if kind == "expect_column_values_to_be_in_set":
        if set(kw) != {"column", "value_set"} or kw["value_set"] is None:
            return None
        return _rows(frame, cfg, present & ~s.isin(kw["value_set"]).to_numpy(dtype=bool))
    if kind == "expect_column_values_to_be_unique":
        if set(kw) != {"column"}:
            return None
        unexpected = np.zeros(len(s), dtype=bool)
        unexpected[present] = s[present].duplicated(keep=False).to_numpy(dtype=bool)
        return _rows(frame, cfg, unexpected)
    if kind == "expect_column_values_to_match_regex":
        if set(kw) != {"column", "regex"}:
            return None
        unexpected = np.zeros(len(s), dtype=bool)
        unexpected[present] = ~s[present].astype(str).str.contains(kw["regex"]).to_numpy(dtype=bool)
        return _rows(frame, cfg, unexpected)
    return None
