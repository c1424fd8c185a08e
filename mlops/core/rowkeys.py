"""Row identity: hashes of rows that do not depend on how a file stored them, the marker of new rows in
a retraining file, duplicates among appended rows, and the share of a window already seen in training.

A value hashes alike whatever its dtype: 3, 3.0, "3" and True/"true" (as 1) are one value; a
timestamp is one value at any precision, time zone (as UTC) or as ISO text; every missing value
(None, NaN, NaT, pd.NA) is one null. So a row read back from CSV, Parquet or the prediction log, or
cast to the data contract, keeps its hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.contract import DataContract

# the retraining file marks the rows the champion never trained on; the training flow strips it
NEW_ROW_COLUMN = "_mlops_new_row"
HASHES_ARTIFACT = "reference/train_row_hashes.npz"

_MIX = np.uint64(0x9E3779B97F4A7C15)
_NULL = np.uint64(0x6E756C6C)  # every missing value, whatever the dtype
_TIME_TAG = np.uint64(0x74696D65)
_DECIMALS = 9  # floats written with 15 significant digits (spreadsheets) still match


def _floats(x: np.ndarray) -> np.ndarray:
    """Hashes of float values: -0.0 is 0.0, rounded so a text round trip keeps them."""
    x = np.round(np.asarray(x, dtype=np.float64), _DECIMALS) + 0.0
    return pd.util.hash_array(np.nan_to_num(x, nan=0.0).view(np.uint64))


def _times(s: pd.Series) -> np.ndarray:
    """Hashes of timestamps as UTC nanoseconds, whatever the unit or time zone."""
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert(None)
    ns = s.astype("datetime64[ns]").to_numpy().view(np.int64).astype(np.uint64)
    return pd.util.hash_array(ns) ^ _TIME_TAG


def _parses_as_time(present: pd.Series) -> bool:
    """Every value of a text column is a timestamp (tried on a few first, so plain text costs little)."""
    try:
        head = pd.to_datetime(present.head(20), errors="coerce", format="mixed", utc=True)
        if head.isna().any():
            return False
        return bool(pd.to_datetime(present, errors="coerce", format="mixed", utc=True).notna().all())
    except (ValueError, TypeError, OverflowError):
        return False


def _text_hashes(obj: pd.Series, null: np.ndarray) -> np.ndarray:
    """Hashes of an object column: numbers (and true/false) as numbers, timestamps as times, the rest as text."""
    text = obj.map(lambda v: v if v is None else str(v))
    lower = text.str.strip().str.lower()
    num = pd.to_numeric(obj.where(~lower.isin(["true", "false"]), None), errors="coerce")
    num = num.mask(lower == "true", 1.0).mask(lower == "false", 0.0)
    is_num = num.notna().to_numpy()
    if (is_num | null).all():
        return _floats(num.to_numpy(dtype=np.float64))
    present = obj[~null & ~is_num]
    if not is_num.any() and _parses_as_time(present):
        return _times(pd.to_datetime(obj, errors="coerce", format="mixed", utc=True))
    out = pd.util.hash_array(text.fillna("").to_numpy(dtype=object))
    return np.where(is_num, _floats(num.to_numpy(dtype=np.float64)), out) if is_num.any() else out


def _distinct_text_hashes(obj: pd.Series, null: np.ndarray) -> np.ndarray:
    """`_text_hashes`, worked out once per distinct value (a category repeats a few values over many rows); each
    value's hash depends on that value alone. Nulls are left for the caller to set."""
    try:
        codes, distinct = pd.factorize(obj)
    except TypeError:  # values that cannot be told apart by hashing (lists, dicts): one by one
        return _text_hashes(obj, null)
    if not len(distinct):
        return np.zeros(len(obj), dtype=np.uint64)
    return _text_hashes(pd.Series(distinct, dtype=object), np.zeros(len(distinct), dtype=bool))[codes]


def column_hashes(s: pd.Series) -> np.ndarray:
    """One uint64 per value of a column, equal for equal values of any dtype (see the module doc)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    null = s.isna().to_numpy()
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        out = _floats(pd.to_numeric(s, errors="coerce").astype(np.float64).to_numpy())
    elif pd.api.types.is_datetime64_any_dtype(s):
        out = _times(s)
    else:
        out = _distinct_text_hashes(s.astype(object).where(~null, None), null)
    out = np.asarray(out, dtype=np.uint64).copy()
    out[null] = _NULL
    return out


def row_hashes(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """One uint64 per row over `columns` (taken in sorted order, so column order does not matter)."""
    h = np.full(len(frame), np.uint64(0x5BD1E995), dtype=np.uint64)
    for name in sorted(columns):
        tag = pd.util.hash_array(np.array([str(name)], dtype=object))[0]
        h = (h ^ (column_hashes(frame[name]) + tag)) * _MIX
        h ^= h >> np.uint64(31)
    return h


# ---------------------------------------------------------------------------------------------
# new rows in a retraining file


def pop_new_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The frame without the new-row marker, and the rows it marks new (None when there is no marker)."""
    if NEW_ROW_COLUMN not in frame.columns:
        return frame, None
    flag = frame[NEW_ROW_COLUMN]
    if not pd.api.types.is_bool_dtype(flag):  # read back from CSV as text or numbers
        flag = flag.astype(str).str.strip().str.lower().isin(["true", "1", "1.0"])
    rest = frame.drop(columns=[NEW_ROW_COLUMN])
    return rest, rest.loc[flag.fillna(False).astype(bool).to_numpy()].reset_index(drop=True)


def new_row_mask(frame: pd.DataFrame, new_rows: pd.DataFrame, id_column: str | None) -> np.ndarray:
    """Which rows of `frame` are among `new_rows`: by the id column, else by the values of the columns both hold.

    Matching by value survives validation (rows cast to the contract, bad rows quarantined); a row
    whose values validation changed is not matched, so it trains rather than being held out.
    """
    if id_column and id_column in frame.columns and id_column in new_rows.columns:
        columns = [id_column]
    else:
        columns = sorted(set(frame.columns) & set(new_rows.columns))
    if not len(frame) or not len(new_rows) or not columns:
        return np.zeros(len(frame), dtype=bool)
    return np.isin(row_hashes(frame, columns), row_hashes(new_rows, columns))


def deduplicate(frame: pd.DataFrame, id_column: str | None, columns: list[str],
                is_new: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray | None, int, str]:
    """Drop repeated rows, keeping the last: by the id column, else by a hash of `columns` (exact re-sent rows).

    With `is_new`, a new row that repeats an original row (same id or same values) is no longer new:
    the champion trained on it. Returns the rows, their new flags, how many were dropped and by what.
    """
    if id_column and id_column in frame.columns:
        key = frame[id_column].astype(str).where(frame[id_column].notna(), None).to_numpy(dtype=object)
        by = f"same {id_column}"
    else:
        key = row_hashes(frame, [c for c in columns if c in frame.columns])
        by = "identical inputs and target"
    keys = pd.Series(key)
    new = None
    if is_new is not None:
        seen_before = keys.isin(set(keys[~is_new]))
        new = np.asarray(is_new, dtype=bool) & ~seen_before.to_numpy()
    keep = ~keys.duplicated(keep="last").to_numpy()
    if id_column and id_column in frame.columns:
        keep |= keys.isna().to_numpy()  # rows without an id are not duplicates of each other
    dropped = int((~keep).sum())
    return frame.loc[keep].reset_index(drop=True), None if new is None else new[keep], dropped, by


# ---------------------------------------------------------------------------------------------
# rows seen in training


def hash_columns(contract: DataContract, excluded: list[str] | None = None) -> list[str]:
    """The input columns a training row is recognised by: no id (often dropped or hashed when logged),
    no column the prediction log hashes or drops (`excluded`, the sensitive columns)."""
    skip = set(excluded or []) | {contract.id_column}
    return [c for c in contract.input_columns if c not in skip]


@dataclass
class RowHashSet:
    """The sorted, distinct hashes of the training rows' input columns, kept with a model version."""

    columns: list[str]
    hashes: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame, columns: list[str]) -> RowHashSet:
        present = [c for c in columns if c in frame.columns]
        return cls(present, np.unique(row_hashes(frame, present)))

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            np.savez_compressed(fh, hashes=self.hashes, columns=np.array(self.columns, dtype=str))
        return path

    @classmethod
    def load(cls, path: Path) -> RowHashSet:
        with np.load(path, allow_pickle=False) as z:
            return cls([str(c) for c in z["columns"]], np.asarray(z["hashes"], dtype=np.uint64))


def save_training_hashes(train: pd.DataFrame, contract: DataContract, excluded: list[str] | None,
                         path: Path) -> Path:
    """Write the hash set of the rows a version trains on (the artifact `HASHES_ARTIFACT`)."""
    return RowHashSet.of(train, hash_columns(contract, excluded)).save(path)


def seen_in_training(frame: pd.DataFrame, known: RowHashSet | None, version: str | None = None) -> dict[str, Any]:
    """The share of a window's rows whose inputs the model trained on; unknown (None) when it cannot be told."""
    who = f"v{version}" if version else "the champion"
    out: dict[str, Any] = {"share": None, "rows": len(frame), "seen_rows": None, "reason": ""}
    if known is None:
        out["reason"] = f"unknown: {who} keeps no training row hashes (trained before they were stored)"
        return out
    missing = [c for c in known.columns if c not in frame.columns]
    hashed = [c for c in known.columns if c in set(frame.attrs.get("hashed_columns") or [])]
    if missing or hashed:
        why = f"column(s) {missing} are not in the window" if missing else f"column(s) {hashed} are hashed in the log"
        out["reason"] = f"unknown: {why}, so rows cannot be matched with {who}'s training rows"
        return out
    if not len(frame):
        out["reason"] = "unknown: the window has no rows"
        return out
    seen = int(np.isin(row_hashes(frame, known.columns), known.hashes).sum())
    share = seen / len(frame)
    out.update(share=share, seen_rows=seen,
               reason=f"{seen:,} of {len(frame):,} rows ({share:.1%}) repeat rows {who} trained on")
    return out
