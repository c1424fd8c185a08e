"""The contract check of a request of many records, column by column on arrays.

`check_records` gives exactly what `Validator.validate` gives (the same Batch values, the same
RequestError) at a fraction of the cost: the records are transposed into columns once (in C), each
column's types are read in one pass, and a column of the usual types is checked with numpy (finite,
inside the range, whole numbers where the contract says integer, known categories, nulls where
allowed, each record's null budget). A column of unusual types (ints in a category column, free text,
timestamps) goes through the row checker's own conversion, value by value, for that column only.
When anything is wrong, the request is handed to `Validator.validate`, row by row, so a bad request
gets the same 422 word for word whichever path it took.

Numeric columns come back as float64 arrays (NaN for null), the others as lists, as the row checker
gives them.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import numpy as np

from mlops.serving.records import CATEGORY, NUMERIC, TEXT, Batch, RequestError, Rule, Validator, _Bad, _convert

VECTOR_MIN_ROWS = 8  # below this the row checker is as fast
_NONE = type(None)
_PLAIN_NUMBERS = frozenset({float, int, _NONE})
_TEXT = frozenset({str, _NONE})


class _Fallback(Exception):
    """Something in the request breaks the contract (or is unusual): the row checker decides."""


def check_records(validator: Validator, records: list[Any], max_rows: int, null_budget: bool = True) -> Batch:
    """The records checked against the contract as columns; the same result as `validator.validate`."""
    n = len(records)
    if n < VECTOR_MIN_ROWS or n > max_rows:
        return validator.validate(records, max_rows, null_budget)
    try:
        return _check(validator, records, n, null_budget)
    except _Fallback:
        return validator.validate(records, max_rows, null_budget)


def _columns(validator: Validator, records: list[Any], n: int) -> list[tuple[Any, ...]]:
    names, required, known = validator.names, validator.required, validator.known
    width = len(names)
    full = True
    for rec in records:
        if type(rec) is not dict:
            raise _Fallback
        keys = rec.keys()
        if not (required <= keys and known >= keys):
            raise _Fallback
        if len(rec) != width:
            full = False
    if full:  # every record holds every column: transpose in C
        get = itemgetter(*names)
        rows = list(map(get, records)) if width > 1 else [(v,) for v in map(get, records)]
        return list(zip(*rows, strict=True))
    return [tuple(rec.get(name) for rec in records) for name in names]


def _check(validator: Validator, records: list[Any], n: int, null_budget: bool) -> Batch:
    cols: dict[str, Any] = {}
    nulls = np.zeros(n, dtype=np.int64)
    for rule, values in zip(validator.rules, _columns(validator, records, n), strict=True):
        types = set(map(type, values))
        missing = None
        if _NONE in types:
            missing = np.fromiter((v is None for v in values), dtype=bool, count=n)
            if rule.required:
                if not rule.nullable:
                    raise _Fallback
                nulls += missing
        if rule.kind == NUMERIC and types <= _PLAIN_NUMBERS:
            cols[rule.name] = _numbers(rule, values, missing)
        elif rule.kind in (CATEGORY, TEXT) and types <= _TEXT and not rule.patterns:
            if rule.allowed is not None and not (set(values) - {None}) <= rule.allowed:
                raise _Fallback
            cols[rule.name] = list(values)
        else:
            try:
                cols[rule.name] = [_convert(rule, v) for v in values]
            except _Bad:
                raise _Fallback from None
    if null_budget and n and int(nulls.max()) > validator.null_budget:
        raise _Fallback
    return Batch(cols, n)


def _numbers(rule: Rule, values: tuple[Any, ...], missing: np.ndarray | None) -> np.ndarray:
    """Finite floats (NaN for null) inside the rule's range, whole where the column is integer."""
    try:
        arr = np.array(values, dtype=np.float64)  # None becomes NaN; an int past float range raises
    except (OverflowError, TypeError, ValueError):
        raise _Fallback from None
    present = arr if missing is None else arr[~missing]
    if not np.isfinite(present).all():
        raise _Fallback  # a NaN or infinity sent as a value, or an int that rounds to infinity
    if rule.integer and (np.mod(present, 1) != 0).any():
        raise _Fallback
    if rule.lo is not None and (present < rule.lo).any():
        raise _Fallback
    if rule.hi is not None and (present > rule.hi).any():
        raise _Fallback
    return arr


__all__ = ["VECTOR_MIN_ROWS", "RequestError", "check_records"]
