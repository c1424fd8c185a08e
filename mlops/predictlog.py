"""The prediction log: one row per scored row, written off the request path, read by monitoring.

Layout: `$MLOPS_HOME/predictions/date=YYYY-MM-DD/part-<time>-<pid>-<random>.parquet`. Each row holds
the request id and the row's position in the request, when it was scored (UTC), the model name and
version that answered, where it came from (`api` or `batch`), the input columns under their own
names (as in the version's reference sample) and the outputs: `prediction`, plus `prediction_proba`
(probability of the second class) for binary classifiers or `proba_<class>` for more classes.

Sensitive columns (config `serving.sensitive_columns`) are dropped or replaced by a keyed HMAC-SHA256
before anything reaches disk; the key comes from the environment variable MLOPS_LOG_HASH_KEY (with
mode `hash` and no key, the columns are dropped instead, with a warning).

The server hands records to a `PredictionLogWriter`: a bounded queue drained by one thread that
writes a file per flush. A full queue drops the record and counts it; a request is never blocked
or failed by logging. Files appear atomically (written under a dot-name, then renamed) and their
names are unique per process, so several workers can share the folder.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.errors import DataError

log = logging.getLogger("mlops.predictlog")

HASH_KEY_ENV = "MLOPS_LOG_HASH_KEY"
META_COLUMNS = ("request_id", "request_row", "logged_at", "model_name", "model_version", "log_source")
OUTPUT_PREFIXES = ("prediction", "proba_")
HASHED_META = b"mlops.hashed_columns"
DROPPED_META = b"mlops.dropped_columns"


@dataclass
class LogRecord:
    """The rows of one request (or one batch-scoring chunk), kept as columns."""

    request_id: str
    logged_at: float
    model_name: str
    model_version: str
    inputs: dict[str, Sequence[Any]]
    outputs: dict[str, Sequence[Any] | np.ndarray]
    n: int
    source: str = "api"
    row_offset: int = 0
    rows: np.ndarray | None = None  # positions of the rows (batch scoring: in the input); else row_offset + i


def output_columns(predictions: np.ndarray, probabilities: np.ndarray | None,
                   classes: Sequence[Any] | None) -> dict[str, Any]:
    """The logged outputs, named as the reference sample names them."""
    out: dict[str, Any] = {"prediction": predictions}
    if probabilities is not None and classes is not None:
        if probabilities.shape[1] == 2:
            out["prediction_proba"] = probabilities[:, 1]
        else:
            for j, c in enumerate(classes):
                out[f"proba_{c}"] = probabilities[:, j]
    return out


def hash_value(value: Any, key: bytes) -> str | None:
    """The keyed HMAC-SHA256 (hex) of a value's text; None stays None. Used for logs and for joining labels."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()


def hash_key_from_env(environ: dict[str, str] | None = None) -> bytes | None:
    value = (environ if environ is not None else os.environ).get(HASH_KEY_ENV, "")
    return value.encode("utf-8") if value else None


@dataclass
class Redactor:
    """Drops or hashes the sensitive input columns."""

    columns: frozenset[str] = frozenset()
    mode: str = "hash"
    key: bytes | None = None

    def __post_init__(self) -> None:
        if self.columns and self.mode == "hash" and not self.key:
            log.warning("sensitive columns %s are dropped from the prediction log: mode 'hash' needs a key in %s",
                        sorted(self.columns), HASH_KEY_ENV)
            self.mode = "drop"

    @property
    def hashed(self) -> list[str]:
        return sorted(self.columns) if self.mode == "hash" else []

    @property
    def dropped(self) -> list[str]:
        return sorted(self.columns) if self.mode == "drop" else []

    def apply(self, inputs: dict[str, Sequence[Any]]) -> dict[str, Sequence[Any]]:
        if not self.columns:
            return inputs
        out: dict[str, Sequence[Any]] = {}
        for name, values in inputs.items():
            if name not in self.columns:
                out[name] = values
            elif self.mode == "hash":
                assert self.key is not None
                out[name] = [hash_value(v, self.key) for v in values]
        return out


@dataclass
class LogStats:
    queued_rows: int = 0
    written_rows: int = 0
    written_files: int = 0
    dropped_rows: int = 0
    dropped_records: int = 0
    write_errors: int = 0
    last_error: str | None = None
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "files"}


class PredictionLogWriter:
    """Batches log records into Parquet files; `submit` never blocks and never raises."""

    def __init__(self, folder: str | Path, redactor: Redactor | None = None, max_queue_rows: int = 100_000,
                 flush_rows: int = 20_000, flush_seconds: float = 5.0, keep_file_names: int = 100) -> None:
        self.folder = Path(folder)
        self.redactor = redactor or Redactor()
        self.max_queue_rows = max_queue_rows
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.keep_file_names = keep_file_names
        self.stats = LogStats()
        self._queue: deque[LogRecord] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()

    # -- request side -----------------------------------------------------------------------------

    def submit(self, record: LogRecord) -> bool:
        """Queue a record for writing; False (and counted) when the queue is full."""
        try:
            with self._lock:
                if self.stats.queued_rows + record.n > self.max_queue_rows:
                    self.stats.dropped_rows += record.n
                    self.stats.dropped_records += 1
                    return False
                self._queue.append(record)
                self.stats.queued_rows += record.n
                wake = self.stats.queued_rows >= self.flush_rows
            if wake:
                self._wake.set()
            return True
        except Exception:  # noqa: BLE001 - logging must never fail a request
            return False

    # -- writer side --------------------------------------------------------------------------------

    def start(self) -> PredictionLogWriter:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread after writing what is queued."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> list[Path]:
        """Write everything queued now (from the writer thread, or at shutdown)."""
        with self._lock:
            records = list(self._queue)
            self._queue.clear()
            self.stats.queued_rows = 0
        if not records:
            return []
        try:
            return self.write(records)
        except Exception as exc:  # noqa: BLE001 - count and carry on; the server keeps serving
            with self._lock:
                self.stats.write_errors += 1
                self.stats.dropped_rows += sum(r.n for r in records)
                self.stats.dropped_records += len(records)
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.exception("prediction log write failed; %d rows lost", sum(r.n for r in records))
            return []

    def write(self, records: Iterable[LogRecord]) -> list[Path]:
        """Write records synchronously (batch scoring uses this directly): one file per day and column set."""
        groups: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[LogRecord]] = {}
        for r in records:
            day = datetime.fromtimestamp(r.logged_at, UTC).strftime("%Y-%m-%d")
            groups.setdefault((day, tuple(r.inputs), tuple(r.outputs)), []).append(r)
        paths = []
        with self._write_lock:
            for (day, _, _), recs in groups.items():
                paths.append(self._write_group(day, recs))
        return paths

    def _write_group(self, day: str, recs: list[LogRecord]) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = [r.n for r in recs]
        total = sum(n)
        cols: dict[str, Any] = {
            "request_id": pa.array(np.repeat(np.array([r.request_id for r in recs], dtype=object), n), pa.string()),
            "request_row": pa.array(np.concatenate([np.asarray(r.rows, dtype=np.int64) if r.rows is not None
                                                    else np.arange(r.row_offset, r.row_offset + r.n) for r in recs]),
                                    pa.int64()),
            "logged_at": pa.array(np.repeat(np.array([int(r.logged_at * 1e6) for r in recs], dtype=np.int64), n),
                                  pa.timestamp("us", tz="UTC")),
            "model_name": pa.array(np.repeat(np.array([r.model_name for r in recs], dtype=object), n), pa.string()),
            "model_version": pa.array(np.repeat(np.array([r.model_version for r in recs], dtype=object), n),
                                      pa.string()),
            "log_source": pa.array(np.repeat(np.array([r.source for r in recs], dtype=object), n), pa.string()),
        }
        redacted = [self.redactor.apply(r.inputs) for r in recs]
        for name in redacted[0]:
            if len(redacted) == 1:
                cols[input_column_name(name)] = _arrow_array(redacted[0][name])
                continue
            values: list[Any] = []
            for red in redacted:
                values.extend(red[name])
            cols[input_column_name(name)] = _arrow_array(values)
        for name in recs[0].outputs:
            parts = [np.asarray(r.outputs[name]) for r in recs]
            arr = np.concatenate(parts) if len(parts) > 1 else parts[0]
            cols[name] = pa.array(arr.tolist()) if arr.dtype == object else pa.array(arr)
        assert all(len(c) == total for c in cols.values())
        table = pa.table(cols)
        meta = {HASHED_META: json.dumps(self.redactor.hashed).encode(),
                DROPPED_META: json.dumps(self.redactor.dropped).encode()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        folder = self.folder / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"part-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = folder / f".{name}.tmp"
        pq.write_table(table, tmp)
        final = folder / name
        os.replace(tmp, final)
        with self._lock:
            self.stats.written_rows += total
            self.stats.written_files += 1
            self.stats.files.append(str(final))
            del self.stats.files[:-self.keep_file_names]
        return final


def input_column_name(name: str) -> str:
    """Inputs keep their names unless one collides with a log column."""
    if name in META_COLUMNS or name.startswith(OUTPUT_PREFIXES):
        return f"input.{name}"
    return name


def _arrow_array(values: Any) -> Any:
    import pyarrow as pa

    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


# ---------------------------------------------------------------------------------------------
# reading


def _as_utc(t: Any) -> pd.Timestamp | None:
    if t is None:
        return None
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def list_log_files(folder: str | Path, since: Any = None, until: Any = None) -> list[Path]:
    """Log files whose date partition can hold rows in [since, until)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    lo, hi = _as_utc(since), _as_utc(until)
    files = []
    for part in sorted(root.glob("date=*")):
        day = part.name.removeprefix("date=")
        try:
            d = pd.Timestamp(day).date()
        except ValueError:
            continue
        if lo is not None and d < lo.date():
            continue
        if hi is not None and d > hi.date():
            continue
        files.extend(sorted(p for p in part.glob("*.parquet") if not p.name.startswith(".")))
    return files


def read_prediction_log(folder: str | Path, since: Any = None, until: Any = None) -> pd.DataFrame:
    """All logged rows with `since <= logged_at < until` (UTC), oldest first.

    A file that cannot be read (truncated, not Parquet) is skipped with a warning; the skipped
    paths are in `df.attrs["corrupt_files"]`. `df.attrs["hashed_columns"]` lists the inputs stored as
    keyed hashes (see `join_labels`).
    """
    import pyarrow.parquet as pq

    lo, hi = _as_utc(since), _as_utc(until)
    frames, corrupt, hashed = [], [], set()
    for path in list_log_files(folder, lo, hi):
        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a broken file
            log.warning("skipping unreadable prediction log file %s (%s)", path, type(exc).__name__)
            corrupt.append(str(path))
            continue
        meta = table.schema.metadata or {}
        if HASHED_META in meta:
            hashed.update(json.loads(meta[HASHED_META]))
        frames.append(table.to_pandas())
    frames = [f for f in frames if len(f)]
    if frames:
        df = pd.concat(frames, ignore_index=True, sort=False)
    else:
        df = pd.DataFrame({c: pd.Series(dtype="datetime64[us, UTC]" if c == "logged_at" else object)
                           for c in META_COLUMNS})
    if len(df):
        mask = pd.Series(True, index=df.index)
        if lo is not None:
            mask &= df["logged_at"] >= lo
        if hi is not None:
            mask &= df["logged_at"] < hi
        df = df.loc[mask].sort_values(["logged_at", "request_id", "request_row"], kind="stable").reset_index(drop=True)
    df.attrs["corrupt_files"] = corrupt
    df.attrs["hashed_columns"] = sorted(hashed)
    return df


def join_labels(log_df: pd.DataFrame, labels: pd.DataFrame, by: str = "request_id",
                hash_key: bytes | None = None) -> pd.DataFrame:
    """Logged rows that have a label, with the label columns added.

    `by="request_id"` joins on the request id (and `request_row` when the labels carry it; they must
    for requests of several rows). Any other `by` names an id column sent with each row; when the log
    holds that column hashed, the labels' ids are hashed with the same key (default from
    MLOPS_LOG_HASH_KEY) before joining. Later labels for the same key win.
    """
    if by not in labels.columns:
        raise DataError(f"the labels have no column '{by}' to join on")
    col = input_column_name(by) if by != "request_id" else by
    if col not in log_df.columns:
        raise DataError(f"the prediction log has no column '{by}' to join on (was it dropped as sensitive?)")
    keys = [col]
    right = labels.copy()
    if by != "request_id":
        right = right.rename(columns={by: col})
        if by in log_df.attrs.get("hashed_columns", []):
            key = hash_key or hash_key_from_env()
            if not key:
                raise DataError(f"column '{by}' is hashed in the prediction log; set {HASH_KEY_ENV} to the key used "
                                "when it was written")
            right[col] = [hash_value(v, key) for v in right[col]]
    elif "request_row" in labels.columns:
        keys.append("request_row")
    else:
        rows = log_df.groupby("request_id")["request_row"].nunique() if len(log_df) else pd.Series(dtype=int)
        if (rows > 1).any():
            raise DataError("some logged requests hold several rows; give the labels a 'request_row' column too")
    right = right.drop_duplicates(subset=keys, keep="last")
    left = log_df.copy()
    for k in keys:
        if k == "request_row":
            right[k] = pd.to_numeric(right[k]).astype("int64")
            left[k] = left[k].astype("int64")
        elif left[k].dtype != right[k].dtype:
            left[k] = left[k].astype(str)
            right[k] = right[k].astype(str)
    out = left.merge(right, on=keys, how="inner", suffixes=("", "_label"))
    out.attrs = dict(log_df.attrs)
    return out
