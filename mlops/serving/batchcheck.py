"""A scoring chunk checked against the data contract column by column, and scored once by a compiled model.

`check_chunk` gives what `mlops.core.validation.validate_batch(chunk, contract, need_target=False)` gives for
a scoring contract (mlops.serving.chunks.scoring_contract): the same rows set aside, with the same reasons
in the same order (the coercion's type failures first, then each broken expectation in the suite's order,
named as Great Expectations names them), the same coerced frame. Each rule is one vectorised pass over
its column instead of a Great Expectations validation of the whole frame. A rule it does not cover
exactly (a regex, a range on a non-numeric column, a value set that is not all text, bounds that cannot
hold) returns None and the caller runs Great Expectations as before.

`Scorer` scores a coerced frame with the version's Pipeline compiled to numpy (mlops.serving.fastpath, as
the model server does): features built once, the trees walked once for both labels and probabilities.
It is checked against the Pipeline, bit for bit, on the first chunk it scores; if it differs (or the
Pipeline cannot be compiled) the Pipeline itself scores, as before.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.contract import DataContract, coerce_to_contract
from mlops.serving.fastpath import Unsupported, compile_fast_path
from mlops.serving.predictlog import output_columns
from mlops.serving.records import CATEGORY, DATETIME, NUMERIC, Batch, Validator

CHECK_ROWS = 2_000  # rows of the first chunk scored both ways before the compiled model is trusted
NUMBER_KINDS = frozenset({"numeric", "integer"})
TEXT_KINDS = frozenset({"categorical", "text", "boolean"})


@dataclass(frozen=True)
class _Rule:
    column: str
    op: str  # between | in_set | not_null
    reason: str
    lo: float | None = None
    hi: float | None = None
    values: tuple[str, ...] = ()


def _number(v: Any) -> float | None:
    return None if v is None else float(v)


def _between_reason(column: str, lo: float | None, hi: float | None) -> str:
    args = ", ".join(f"{k}={v}" for k, v in (("min_value", lo), ("max_value", hi)) if v is not None)
    return f"expect_column_values_to_be_between({column}, {args})"


def _in_set_reason(column: str, values: list[Any]) -> str:
    shown = f"<{len(values)} values>" if len(values) > 8 else str(values)
    return f"expect_column_values_to_be_in_set({column}, value_set={shown})"


def plan_rules(contract: DataContract) -> list[_Rule] | None:
    """The row-level rules of a scoring contract's suite in suite order (mlops.core.validation.build_suite
    with need_target=False), or None when one is not covered exactly."""
    rules: list[_Rule] = []
    by = contract.by_name
    for c in contract.columns:
        if c.role == "target":
            continue
        if c.role == "ignored":
            continue
        if c.kind in NUMBER_KINDS and c.role != "id":
            if c.min is not None and c.max is not None:
                lo, hi = float(c.min), float(c.max)
                if lo > hi:
                    return None
                rules.append(_Rule(c.name, "between", _between_reason(c.name, lo, hi), lo, hi))
        elif c.kind == "categorical" and c.allowed:
            if not all(isinstance(v, str) for v in c.allowed):
                return None
            rules.append(_Rule(c.name, "in_set", _in_set_reason(c.name, list(c.allowed)), values=tuple(c.allowed)))
        if c.max_null_fraction < 1.0:
            return None  # a whole-input null budget: scoring contracts have none
    for e in contract.expectations:
        col, kind = e["column"], e["type"]
        if col == contract.target:
            continue
        spec = by.get(col)
        if spec is None:
            return None
        if kind == "between":
            lo, hi = _number(e.get("min")), _number(e.get("max"))
            if spec.kind not in NUMBER_KINDS or (lo is None and hi is None) or (
                    lo is not None and hi is not None and lo > hi):
                return None
            rules.append(_Rule(col, "between", _between_reason(col, lo, hi), lo, hi))
        elif kind == "in_set":
            values = list(e["values"])
            if spec.kind not in TEXT_KINDS or not all(isinstance(v, str) for v in values):
                return None
            rules.append(_Rule(col, "in_set", _in_set_reason(col, values), values=tuple(values)))
        elif kind == "not_null":
            rules.append(_Rule(col, "not_null", f"expect_column_values_to_not_be_null({col})"))
        else:  # regex, unique, anything new: Great Expectations decides
            return None
    return rules


@dataclass
class Checked:
    frame: pd.DataFrame  # the whole chunk coerced to the contract, index 0..n-1
    bad: np.ndarray  # positions of the rows that broke the contract, ascending
    reasons: list[str]  # for each bad row, what it broke ("; "-joined, first occurrence first)


def check_chunk(chunk: pd.DataFrame, contract: DataContract) -> Checked | None:
    """The chunk coerced and checked; None when the contract holds a rule only Great Expectations can judge."""
    rules = plan_rules(contract)
    if rules is None:
        return None
    coerced = coerce_to_contract(chunk.reset_index(drop=True), contract, need_target=False)
    frame, failures = coerced.frame, coerced.row_failures
    for r in rules:
        s = frame[r.column]
        if r.op == "between":
            v = s.to_numpy(dtype=np.float64, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                inside = np.ones(len(v), dtype=bool)
                if r.lo is not None:
                    inside &= v >= r.lo
                if r.hi is not None:
                    inside &= v <= r.hi
            broke = ~inside & ~np.isnan(v)
        elif r.op == "in_set":
            broke = (s.notna() & ~s.isin(list(r.values))).to_numpy()
        else:
            broke = s.isna().to_numpy()
        for i in np.flatnonzero(broke):
            failures.setdefault(int(i), []).append(r.reason)
    bad = np.array(sorted(failures), dtype=np.int64)
    return Checked(frame, bad, ["; ".join(dict.fromkeys(failures[int(i)])) for i in bad])


# ---------------------------------------------------------------------------------------------
# scoring


def model_outputs(model: Any, X: pd.DataFrame, task: str) -> dict[str, Any]:
    """Predictions (and class probabilities for a classifier) as the prediction log names them."""
    pred = np.asarray(model.predict(X))
    proba = classes = None
    if task == "classification" and hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X))
        classes = list(getattr(model, "classes_", range(proba.shape[1])))
    return output_columns(pred, proba, classes)


class Scorer:
    """The version's model for a coerced frame: compiled to numpy when that gives the Pipeline's exact outputs."""

    def __init__(self, model: Any, contract: DataContract) -> None:
        self.model = model
        self.task = contract.task
        self.kinds = {r.name: r.kind for r in Validator(contract.without_target(), target=contract.target).rules}
        self.fast: Any = None
        self.checked = False
        self.classes = list(getattr(model, "classes_", [])) or None
        try:
            allowed = {c.name: list(c.allowed) for c in contract.columns if c.allowed}
            self.fast = compile_fast_path(model, self.kinds, allowed, self.task == "classification")
        except Unsupported:
            self.fast = None
        except Exception:  # noqa: BLE001 - any surprise only costs speed
            self.fast = None

    def _batch(self, X: pd.DataFrame) -> Any:
        cols: dict[str, Any] = {}
        n = len(X)
        for name, kind in self.kinds.items():
            if name not in X.columns:
                continue
            s = X[name]
            if kind == NUMERIC:
                cols[name] = s.to_numpy(dtype=np.float64, na_value=np.nan)
            elif kind == CATEGORY and n > 1 and _arrow_strings(s):
                cols[name] = s.array.__arrow_array__()  # looked up in Arrow (fastpath.CategoryBlock), no objects
            elif kind == CATEGORY:
                cols[name] = s.astype(object).where(s.notna(), None).to_numpy()
            elif kind == DATETIME:
                v = s.to_numpy(dtype="datetime64[ns]")
                cols[name] = v if n > 1 else [None if pd.isna(t) else pd.Timestamp(t).to_pydatetime() for t in v]
            else:
                cols[name] = s.to_numpy()
        return Batch(cols, n)

    def _fast(self, X: pd.DataFrame) -> dict[str, Any]:
        pred, proba = self.fast.predict(self._batch(X))
        if self.task != "classification":
            proba = None
        return output_columns(pred, proba, self.classes)

    def outputs(self, X: pd.DataFrame) -> dict[str, Any]:
        """Predictions (and class probabilities) as the prediction log names them."""
        if self.fast is None or len(X) == 0:
            return model_outputs(self.model, X, self.task)
        if not self.checked:
            head = X.iloc[:CHECK_ROWS]
            try:
                same = _same_outputs(self._fast(head), model_outputs(self.model, head, self.task))
            except Exception:  # noqa: BLE001 - the Pipeline decides
                same = False
            self.checked = True
            if not same:
                self.fast = None
                return model_outputs(self.model, X, self.task)
        return self._fast(X)


def _arrow_strings(s: pd.Series) -> bool:
    return isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow"


def _same_outputs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return list(a) == list(b) and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


_SCORERS: weakref.WeakKeyDictionary[Any, Scorer] = weakref.WeakKeyDictionary()


def scorer_for(model: Any, contract: DataContract) -> Scorer:
    """One Scorer per model object in this process (compiled and checked once, reused for every chunk)."""
    try:
        s = _SCORERS.get(model)
    except TypeError:  # not weak-referenceable: compile each time
        return Scorer(model, contract)
    if s is None:
        s = Scorer(model, contract)
        _SCORERS[model] = s
    return s
