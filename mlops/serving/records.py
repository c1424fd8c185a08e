"""Request bodies -> validated columns, checked against the data contract in plain Python.

The same rules as the batch contract check (mlops.core.validation), applied per request: every input
column present (the id column may be left out), no unknown fields, numbers are JSON numbers and
finite, categories known, values inside the contract's ranges (configurable), nulls only where the
contract allows them. A request that breaks a rule gets one `RequestError` naming the row and field;
nothing here ever raises anything else for bad input.

The null budget of a record: the contract allows nulls per column (a fraction of rows), which says
nothing about one record; a record with every field null would be scored as the imputed "average"
row. So a record may hold nulls in at most half of the model's required input columns (the id
column does not count); more is a 422 naming every null field (`MAX_NULL_SHARE`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson

from mlops.core.contract import OPTIONAL_ROLES, DataContract

MAX_ERRORS = 10
MAX_NULL_SHARE = 0.5  # a record with nulls in more than this share of its required inputs is refused
_FMAX = 1.7976931348623157e308
NUMERIC, CATEGORY, TEXT, DATETIME, ID_INT = 1, 2, 3, 4, 5


class RequestError(Exception):
    """A bad request: HTTP status, one sentence, and the offending field and row when known."""

    def __init__(self, status: int, message: str, field: str | None = None, row: int | None = None,
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.row = row
        self.errors = errors or []

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            out["field"] = self.field
        if self.row is not None:
            out["row"] = self.row
        if self.errors and "fields" in self.errors[0]:
            out["fields"] = self.errors[0]["fields"]
        if len(self.errors) > 1:
            out["errors"] = self.errors
        return out


@dataclass
class Batch:
    """Validated rows as columns of plain Python values, in contract order.

    numeric columns hold floats (nan for null), categorical and text columns str or None,
    datetime columns naive UTC datetimes or None. Batch scoring (mlops.serving.batchcheck) may hand a
    categorical column of many rows over as Arrow strings instead (fastpath.CategoryBlock reads both).
    """

    columns: dict[str, list[Any]]
    n: int


@dataclass(frozen=True)
class Rule:
    name: str
    kind: int
    required: bool
    nullable: bool
    lo: float | None = None
    hi: float | None = None
    allowed: frozenset[str] | None = None
    patterns: tuple[re.Pattern[str], ...] = field(default_factory=tuple)
    integer: bool = False  # a column of whole numbers: 3.5 breaks the contract as "x" does


def _bound(a: float | None, b: float | None, pick: Any) -> float | None:
    vals = [v for v in (a, b) if v is not None]
    return float(pick(vals)) if vals else None


def build_rules(contract: DataContract, enforce_ranges: bool = True) -> list[Rule]:
    """One rule per input column (everything but the target), with the config's expectations folded in."""
    exps: dict[str, list[dict[str, Any]]] = {}
    for e in contract.expectations:
        exps.setdefault(e["column"], []).append(e)
    rules = []
    for c in contract.columns:
        if c.role == "target":
            continue
        mine = exps.get(c.name, [])
        nullable = c.max_null_fraction > 0 and not any(e["type"] == "not_null" for e in mine)
        lo = hi = None
        allowed: frozenset[str] | None = None
        if c.role == "id":
            kind = ID_INT if c.kind == "integer" else TEXT
        elif c.kind in {"numeric", "integer"}:
            kind = NUMERIC
            if enforce_ranges:
                lo, hi = c.min, c.max
        elif c.kind == "datetime":
            kind = DATETIME
        elif c.kind in {"categorical", "boolean"}:
            kind = CATEGORY
            if enforce_ranges and c.allowed:
                allowed = frozenset(c.allowed)
        else:
            kind = TEXT
        patterns: list[re.Pattern[str]] = []
        for e in mine:
            if e["type"] == "between" and kind == NUMERIC:
                lo = _bound(lo, e.get("min"), max)
                hi = _bound(hi, e.get("max"), min)
            elif e["type"] == "in_set":
                values = frozenset(str(v) for v in e.get("values") or [])
                allowed = values if allowed is None else allowed & values
            elif e["type"] == "regex" and e.get("pattern"):
                patterns.append(re.compile(e["pattern"]))
        rules.append(Rule(c.name, kind, required=c.role not in OPTIONAL_ROLES, nullable=nullable, lo=lo, hi=hi,
                          allowed=allowed, patterns=tuple(patterns),
                          integer=kind == NUMERIC and c.kind == "integer"))
    return rules


def parse_json(body: bytes) -> Any:
    """Parse a JSON body with orjson; on failure, say why, and name the field when it is NaN/Infinity."""
    if not body or not body.strip():
        raise RequestError(400, "the request body is empty; send JSON records")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        fast_error = f"the body is not valid JSON: {exc.msg} at char {exc.pos}"
    # orjson refuses NaN/Infinity outright; the standard parser accepts them, so the validator
    # can name the field that holds one.
    try:
        text = body.decode("utf-8")
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestError(400, fast_error) from None


class Validator:
    """Checks records against the contract and turns them into a Batch."""

    def __init__(self, contract: DataContract, enforce_ranges: bool = True, target: str | None = None) -> None:
        self.contract = contract
        self.rules = build_rules(contract, enforce_ranges)
        self.names = [r.name for r in self.rules]
        self.known = frozenset(self.names)
        self.required = frozenset(r.name for r in self.rules if r.required)
        self.target = target if target is not None else contract.target
        required_count = sum(1 for r in self.rules if r.required)
        # nulls allowed in one record: at most MAX_NULL_SHARE of the required inputs
        self.null_budget = int(required_count * MAX_NULL_SHARE)

    # -- request shapes -------------------------------------------------------------------------

    def records_from_payload(self, payload: Any) -> list[Any]:
        """`/predict` bodies: one record, a list of records, or {"records": [...]}."""
        if isinstance(payload, list):
            return payload
        if isinstance(payload, dict):
            if "records" in payload and "records" not in self.known:
                records = payload["records"]
                extra = [k for k in payload if k != "records"]
                if extra:
                    raise RequestError(422, f"unknown field '{extra[0][:80]}' next to 'records'", field=extra[0][:80])
                if not isinstance(records, list):
                    raise RequestError(422, "'records' must be a list of objects", field="records")
                return records
            return [payload]
        raise RequestError(422, "the body must be a JSON object (one record), a list of records, or "
                                "{\"records\": [...]}")

    def records_from_mlflow(self, payload: Any) -> list[Any] | dict[str, list[Any]]:
        """`/invocations` bodies in MLflow's scoring protocol; returns records or columns."""
        if not isinstance(payload, dict):
            raise RequestError(400, "the body must be a JSON object with one of the keys 'dataframe_split', "
                                    "'dataframe_records', 'inputs' or 'instances'")
        keys = [k for k in ("dataframe_split", "dataframe_records", "inputs", "instances") if k in payload]
        extra = [k for k in payload if k not in {"dataframe_split", "dataframe_records", "inputs", "instances",
                                                 "params"}]
        if len(keys) != 1:
            raise RequestError(400, "the body must hold exactly one of 'dataframe_split', 'dataframe_records', "
                                    f"'inputs' or 'instances' (got {sorted(map(str, payload))[:6]})")
        if extra:
            raise RequestError(400, f"unknown key '{str(extra[0])[:80]}' in the scoring request", field=str(extra[0])[:80])
        key = keys[0]
        data = payload[key]
        if key == "dataframe_records":
            if not isinstance(data, list):
                raise RequestError(422, "'dataframe_records' must be a list of objects", field=key)
            return data
        if key == "dataframe_split":
            return self._split_to_records(data)
        # inputs / instances: records, a column mapping, or rows of values in contract order
        if isinstance(data, dict):
            return self._columns_to_records(data, key)
        if isinstance(data, list):
            if data and all(isinstance(r, list) for r in data):
                return self._split_to_records({"columns": self.names_for_positional(data), "data": data})
            return data
        raise RequestError(422, f"'{key}' must be a list of records, a mapping of column to values, or a list of rows",
                           field=key)

    def names_for_positional(self, rows: list[list[Any]]) -> list[str]:
        width = len(rows[0]) if rows else 0
        if width == len(self.names):
            return self.names
        if width == len(self.required):
            return [n for n in self.names if n in self.required]
        raise RequestError(422, f"rows without column names must hold {len(self.required)} values in contract order "
                                f"({', '.join(n for n in self.names if n in self.required)[:300]}); got {width}")

    def _split_to_records(self, data: Any) -> list[Any]:
        if not isinstance(data, dict):
            raise RequestError(422, "'dataframe_split' must be an object with 'columns' and 'data'",
                               field="dataframe_split")
        extra = [k for k in data if k not in {"columns", "data", "index"}]
        if extra:
            raise RequestError(422, f"unknown key '{str(extra[0])[:80]}' in 'dataframe_split'", field=str(extra[0])[:80])
        columns, rows = data.get("columns"), data.get("data")
        if not isinstance(rows, list):
            raise RequestError(422, "'dataframe_split.data' must be a list of rows", field="data")
        if columns is None and rows and isinstance(rows[0], list):
            columns = self.names_for_positional(rows)
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise RequestError(422, "'dataframe_split.columns' must be a list of column names", field="columns")
        if len(set(columns)) != len(columns):
            raise RequestError(422, "'dataframe_split.columns' names a column twice", field="columns")
        out = []
        width = len(columns)
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                raise RequestError(422, f"row {i} of 'dataframe_split.data' must be a list of {width} values",
                                   field="data", row=i)
            out.append(dict(zip(columns, row, strict=True)))
        return out

    def _columns_to_records(self, data: dict[str, Any], key: str) -> list[Any]:
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if not lists:
            return [data]  # one record given as scalars
        lengths = {len(v) for v in lists.values()}
        if len(lengths) != 1 or len(lists) != len(data):
            raise RequestError(422, f"every column in '{key}' must be a list of the same length", field=key)
        n = lengths.pop()
        return [{k: data[k][i] for k in data} for i in range(n)]

    # -- the contract check ---------------------------------------------------------------------

    def validate(self, records: list[Any], max_rows: int, null_budget: bool = True) -> Batch:
        """Check records against the contract (and, unless `null_budget` is False, each record's null
        budget) and return them as columns; RequestError naming the rows and fields otherwise."""
        n = len(records)
        if n == 0:
            raise RequestError(422, "the request holds no rows; send at least one record")
        if n > max_rows:
            raise RequestError(413, f"the request holds {n} rows; the limit is {max_rows} per request "
                                    "(split it, or use batch scoring)", field="rows")
        cols: dict[str, list[Any]] = {name: [] for name in self.names}
        errors: list[dict[str, Any]] = []
        required, known, rules = self.required, self.known, self.rules
        # (name, fast numeric bounds or None, append, rule): a finite float inside the bounds (a whole one
        # in an integer column) is the common case and is taken without a call; the rest goes through _convert
        plan = [(r.name, (r.lo if r.lo is not None else -_FMAX, r.hi if r.hi is not None else _FMAX, r.integer)
                 if r.kind == NUMERIC else None, cols[r.name].append, r) for r in rules]
        for i, rec in enumerate(records):
            if type(rec) is not dict:
                errors.append({"row": i, "field": None, "message": f"row {i} is not a JSON object of column values"})
                if len(errors) >= MAX_ERRORS:
                    break
                continue
            keys = rec.keys()
            if not (required <= keys and known >= keys):
                self._structure_errors(rec, i, errors)
                if len(errors) >= MAX_ERRORS:
                    break
                continue
            nulls = 0
            for name, bounds, append, rule in plan:
                v = rec.get(name)
                if bounds is not None and type(v) is float and bounds[0] <= v <= bounds[1] and (
                        not bounds[2] or v.is_integer()):
                    append(v)  # NaN and +-inf fail the comparison and take the slow path
                    continue
                if v is None and rule.required:
                    nulls += 1
                try:
                    append(_convert(rule, v))
                except _Bad as bad:
                    errors.append({"row": i, "field": name, "message": f"row {i}, field '{name}': {bad}"})
                    append(None)
                    if len(errors) >= MAX_ERRORS:
                        break
            if nulls > self.null_budget and null_budget and len(errors) < MAX_ERRORS:
                self._null_budget_error(rec, i, nulls, errors)
            if len(errors) >= MAX_ERRORS:
                break
        if errors:
            first = errors[0]
            more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
            raise RequestError(422, first["message"] + more, field=first["field"], row=first["row"], errors=errors)
        return Batch(cols, n)

    def _null_budget_error(self, rec: dict[Any, Any], i: int, nulls: int, errors: list[dict[str, Any]]) -> None:
        names = [r.name for r in self.rules if r.required and rec.get(r.name) is None]
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        message = (f"row {i} has {nulls} of {len(self.required)} input fields null ({shown}); at most "
                   f"{self.null_budget} may be null")
        errors.append({"row": i, "field": names[0], "fields": names, "message": message})

    def _structure_errors(self, rec: dict[Any, Any], i: int, errors: list[dict[str, Any]]) -> None:
        for k in rec:
            if k not in self.known:
                name = str(k)[:80]
                why = ("is the model's target, not an input" if k == self.target
                       else f"is not an input of this model (expected: {', '.join(self.names)[:300]})")
                errors.append({"row": i, "field": name, "message": f"row {i}: unknown field '{name}' {why}"})
        for name in self.names:
            if name in self.required and name not in rec:
                errors.append({"row": i, "field": name, "message": f"row {i}: missing field '{name}' required by "
                                                                  "the data contract"})


class _Bad(Exception):
    pass


def _convert(rule: Rule, v: Any) -> Any:
    kind = rule.kind
    if v is None:
        if not rule.nullable and rule.required:
            raise _Bad("null is not allowed here by the data contract")
        return math.nan if kind == NUMERIC else None
    t = type(v)
    if kind == NUMERIC:
        if t is float:
            if v != v or v in (math.inf, -math.inf):
                raise _Bad(f"{v!r} is not a finite number")
        elif t is int:
            try:
                v = float(v)
            except OverflowError:
                raise _Bad("the number is too large") from None
            if v in (math.inf, -math.inf):
                raise _Bad("the number is too large")
        else:
            raise _Bad(f"expected a number, got {_json_type(v)}")
        if rule.integer and not v.is_integer():
            raise _Bad(f"{v!r} is not a whole number; the data contract expects an integer")
        if rule.lo is not None and v < rule.lo:
            raise _Bad(f"{v:g} is below the contract's minimum {rule.lo:g}")
        if rule.hi is not None and v > rule.hi:
            raise _Bad(f"{v:g} is above the contract's maximum {rule.hi:g}")
        return v
    if kind == CATEGORY:
        if t is str:
            s = v
        elif t is bool:
            s = str(v)
        elif t is int:
            s = str(v)
        elif t is float:
            if v != v or v in (math.inf, -math.inf):
                raise _Bad(f"{v!r} is not a category")
            s = str(int(v)) if v.is_integer() else str(v)
        else:
            raise _Bad(f"expected a category (string), got {_json_type(v)}")
        if rule.allowed is not None and s not in rule.allowed:
            listed = ", ".join(sorted(rule.allowed)[:12])
            raise _Bad(f"unknown category {s[:80]!r} (known: {listed})")
        _check_patterns(rule, s)
        return s
    if kind == DATETIME:
        if t is not str:
            raise _Bad(f"expected an ISO 8601 timestamp string, got {_json_type(v)}")
        return parse_timestamp(v)
    if kind == ID_INT:
        if t is int:
            return v
        if t is float and v.is_integer():
            return int(v)
        if t is str:
            return v
        raise _Bad(f"expected an id (integer or string), got {_json_type(v)}")
    # free text
    if t is str:
        s = v
    elif t in (int, float, bool):
        if t is float and (v != v or v in (math.inf, -math.inf)):
            raise _Bad(f"{v!r} is not a valid value")
        s = str(v)
    else:
        raise _Bad(f"expected a string, got {_json_type(v)}")
    _check_patterns(rule, s)
    return s


def _check_patterns(rule: Rule, s: str) -> None:
    for p in rule.patterns:
        if not p.search(s):
            raise _Bad(f"{s[:80]!r} does not match the pattern {p.pattern!r}")


def parse_timestamp(s: str) -> datetime:
    """An ISO 8601 timestamp as a naive UTC datetime (offsets converted, as the batch path does)."""
    if len(s) > 64:
        raise _Bad("the timestamp is too long")
    try:
        ts = datetime.fromisoformat(s)
    except ValueError:
        raise _Bad(f"{s[:40]!r} is not an ISO 8601 timestamp (e.g. 2025-01-31T13:45:00)") from None
    if not 1678 <= ts.year <= 2261:  # checked before the offset too: 0001-01-01T00:00+01:00 has no UTC time
        raise _Bad(f"{s[:40]!r} is outside the supported years 1678-2261")
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    if not 1678 <= ts.year <= 2261:  # the span of pandas' nanosecond timestamps
        raise _Bad(f"{s[:40]!r} is outside the supported years 1678-2261")
    return ts


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def records_from_frame(df: Any) -> list[dict[str, Any]]:
    """Rows of a DataFrame as the JSON records a client sends (timestamps as ISO strings, nulls as None)."""
    import numpy as np
    import pandas as pd

    out_cols: dict[str, list[Any]] = {}
    for c in df.columns:
        s = df[c]
        if pd.api.types.is_datetime64_any_dtype(s):
            vals = [None if pd.isna(v) else v.isoformat() for v in s]
        elif pd.api.types.is_bool_dtype(s):
            vals = [bool(v) for v in s]
        elif pd.api.types.is_integer_dtype(s):
            vals = s.to_numpy().tolist() if not s.isna().any() else [None if pd.isna(v) else int(v) for v in s]
        elif pd.api.types.is_float_dtype(s):
            arr = s.to_numpy(dtype=float, na_value=np.nan)
            vals = [None if v != v else v for v in arr.tolist()]
        else:
            vals = [None if _isna(v) else _plain(v) for v in s.tolist()]
        out_cols[str(c)] = vals
    names = list(out_cols)
    return [dict(zip(names, row, strict=True)) for row in zip(*out_cols.values(), strict=True)]


def _isna(v: Any) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _plain(v: Any) -> Any:
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if hasattr(v, "item"):
        return v.item()
    return v
