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
writes a file per flush. Each record is first appended to the process's journal (mlops.serving.journal)
with one `write` call, so it has reached the operating system before the response is sent and a crash
of the server loses no accepted row; the journal is replayed when a server starts or the log is read.
A full queue drops the record and counts it; a request is never blocked or failed by logging. Bad values are isolated per value: one that cannot be hashed is logged as
`!unhashable`, one that cannot be stored (e.g. a lone UTF-16 surrogate in a string) as `!unstorable`,
both counted (`LogStats.replaced_values`); the rest of its row and of the batch is written. If a flush
still fails, its records are written one by one so only the records that fail are lost. Files appear atomically (written under a dot-name, then renamed) and their
names are unique per process, so several workers can share the folder.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sys
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.errors import DataError
from mlops.core.settings import get_settings
from mlops.serving.journal import JOURNAL_DIR, Segment, concat_values, encode_frame, pack_record, recover

log = logging.getLogger("mlops.serving.predictlog")

HASH_KEY_ENV = "MLOPS_LOG_HASH_KEY"
META_COLUMNS = ("request_id", "request_row", "logged_at", "model_name", "model_version", "log_source")
OUTPUT_PREFIXES = ("prediction", "proba_")
UNHASHABLE = "!unhashable"  # logged in place of a sensitive value the HMAC cannot take
UNSTORABLE = "!unstorable"  # logged in place of a value Parquet cannot hold (not valid UTF-8 text)
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


def hash_key_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The HMAC key of hashed columns (MLOPS_LOG_HASH_KEY) in `environ`, default the process environment."""
    key = get_settings(environ).log_hash_key
    return key.get_secret_value().encode("utf-8") if key else None


@dataclass
class Redactor:
    """Drops or hashes the sensitive input columns."""

    columns: frozenset[str] = frozenset()
    mode: str = "hash"
    key: bytes | None = None
    replaced: int = 0  # values logged as UNHASHABLE so far

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

    def column(self, name: str, values: Sequence[Any]) -> Sequence[Any] | None:
        """The values to write for an input column: as given, hashed, or None (dropped).

        A value that cannot be hashed becomes `UNHASHABLE` (counted in `replaced`), never an error."""
        if name not in self.columns:
            return values
        if self.mode == "hash":
            assert self.key is not None
            return [self._hash(v) for v in values]
        return None

    def _hash(self, v: Any) -> str | None:
        try:
            return hash_value(v, self.key or b"")
        except Exception:  # noqa: BLE001 - e.g. a lone surrogate has no UTF-8 form
            self.replaced += 1
            return UNHASHABLE

    def apply(self, inputs: dict[str, Sequence[Any]]) -> dict[str, Sequence[Any]]:
        if not self.columns:
            return inputs
        out: dict[str, Sequence[Any]] = {}
        for name, values in inputs.items():
            if name not in self.columns:
                out[name] = values
            elif self.mode == "hash":
                assert self.key is not None
                out[name] = [self._hash(v) for v in values]
        return out


@dataclass
class LogStats:
    queued_rows: int = 0
    written_rows: int = 0
    written_files: int = 0
    dropped_rows: int = 0
    dropped_records: int = 0
    write_errors: int = 0
    replaced_values: int = 0  # values logged as a marker (UNHASHABLE, UNSTORABLE); their rows are kept
    last_error: str | None = None
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "files"}


class PredictionLogWriter:
    """Batches log records into Parquet files; `submit` never blocks and never raises.

    Once started, each submitted record is also appended to this process's journal (mlops.serving.journal)
    before `submit` returns, so a crash of the process loses no accepted row; `start` (and reading the log)
    replays what a stopped process left in its journal."""

    def __init__(self, folder: str | Path, redactor: Redactor | None = None, max_queue_rows: int = 100_000,
                 flush_rows: int = 20_000, flush_seconds: float = 5.0, keep_file_names: int = 100,
                 journal: bool = True) -> None:
        self.folder = Path(folder)
        self.redactor = redactor or Redactor()
        self.max_queue_rows = max_queue_rows
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.keep_file_names = keep_file_names
        self.journal = journal
        self.stats = LogStats()
        self._queue: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._segment: Segment | None = None

    # -- request side -----------------------------------------------------------------------------

    def submit(self, record: LogRecord) -> bool:
        """Queue a record for writing (and append it to the journal); False (and counted) when the queue is full."""
        try:
            if self.stats.queued_rows + record.n > self.max_queue_rows:
                with self._lock:
                    self.stats.dropped_rows += record.n
                    self.stats.dropped_records += 1
                return False
            packed = self._packed(record)
            frame = encode_frame(packed) if self._segment is not None else None
            with self._lock:
                if self.stats.queued_rows + record.n > self.max_queue_rows:
                    self.stats.dropped_rows += record.n
                    self.stats.dropped_records += 1
                    return False
                if frame is not None and self._segment is not None:
                    self._journal(frame)
                self._queue.append(packed)
                self.stats.queued_rows += record.n
                wake = self.stats.queued_rows >= self.flush_rows
            if wake:
                self._wake.set()
            return True
        except Exception:  # noqa: BLE001 - logging must never fail a request
            return False

    def _journal(self, frame: bytes) -> None:
        """Append one frame to the open segment (the caller holds the lock); a failure is counted, not raised."""
        assert self._segment is not None
        try:
            self._segment.write(frame)
        except OSError as exc:
            self.stats.write_errors += 1
            self.stats.last_error = f"journal: {type(exc).__name__}: {exc}"[:300]

    def _packed(self, r: LogRecord) -> tuple[Any, ...]:
        """The record redacted (nothing sensitive reaches the journal or a file) and packed."""
        if self.redactor.columns:
            before = self.redactor.replaced
            r = replace(r, inputs=self.redactor.apply(r.inputs))
            replaced = self.redactor.replaced - before
            if replaced:
                with self._lock:
                    self.stats.replaced_values += replaced
        return pack_record(r)

    # -- writer side --------------------------------------------------------------------------------

    def start(self) -> PredictionLogWriter:
        if self._thread is None:
            self.recover()
            if self.journal:
                try:
                    self._segment = Segment(self.folder / JOURNAL_DIR, self._header())
                except OSError as exc:
                    log.error("prediction log journal cannot be opened under %s (%s); rows wait in memory until "
                              "written", self.folder, exc)
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
            self._thread.start()
        return self

    def _header(self) -> tuple[Any, ...]:
        return ("mlops-prediction-journal", 1, self.redactor.hashed, self.redactor.dropped)

    def recover(self) -> int:
        """Write what stopped processes left in their journals; the rows replayed (never raises)."""
        try:
            return recover(self.folder, self._replay)
        except Exception:  # noqa: BLE001 - the server serves, the segments stay for the next try
            log.exception("prediction log: replaying the journal under %s failed", self.folder)
            return 0

    def _replay(self, header: tuple[Any, ...], records: list[tuple[Any, ...]], segment: str) -> int:
        meta = (list(header[2]), list(header[3])) if len(header) >= 4 else None
        self._write_packed(records, key=segment, isolate=True, meta=meta, recovering=True)
        return sum(p[6] for p in records)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread after writing what is queued."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush(final=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self, final: bool = False) -> list[Path]:
        """Write everything queued now (from the writer thread, or at shutdown); its journal segment is
        deleted once the rows are in files (a new one takes the records that arrive meanwhile)."""
        with self._lock:
            packed = list(self._queue)
            self._queue.clear()
            self.stats.queued_rows = 0
            old = self._segment
            if old is not None and (packed or final):
                self._segment = None if final else self._new_segment(old)
        key = old.id if old is not None and old is not self._segment else None
        try:
            return self._write_packed(packed, key=key, isolate=True) if packed else []
        finally:
            if key is not None and old is not None:
                old.discard()

    def _new_segment(self, old: Segment) -> Segment | None:
        try:
            return Segment(self.folder / JOURNAL_DIR, self._header())
        except OSError as exc:
            self.stats.write_errors += 1
            self.stats.last_error = f"journal: {type(exc).__name__}: {exc}"[:300]
            return None

    def _lost(self, packed: list[tuple[Any, ...]]) -> None:
        exc = sys.exc_info()[1]
        rows = sum(p[6] for p in packed)
        with self._lock:
            self.stats.write_errors += 1
            self.stats.dropped_rows += rows
            self.stats.dropped_records += len(packed)
            self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
        log.exception("prediction log write failed; %d rows lost", rows)

    def write(self, records: Iterable[LogRecord]) -> list[Path]:
        """Write records synchronously (batch scoring uses this directly): one file per day and column set."""
        return self._write_packed([self._packed(r) for r in records])

    def _write_packed(self, packed: list[tuple[Any, ...]], key: str | None = None, isolate: bool = False,
                      meta: tuple[list[str], list[str]] | None = None, recovering: bool = False) -> list[Path]:
        """One file per (day, shape, columns) group, named `...-<key>-<group>` when `key` is given. `isolate`:
        a group that fails is written record by record, so only the records that fail are lost (counted)."""
        groups: dict[tuple[int, bool, tuple[str, ...], tuple[str, ...]], list[tuple[Any, ...]]] = {}
        for p in packed:
            groups.setdefault((int(p[2] // 86400), p[0], p[8], p[10]), []).append(p)
        paths = []
        with self._write_lock:
            for g, ((day, single, in_names, out_names), items) in enumerate(groups.items()):
                date = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")
                name = f"{key}-{g}" if key else None
                if not isolate:
                    paths.append(self._write_group(date, single, in_names, out_names, items, name, meta, recovering))
                    continue
                try:
                    paths.append(self._write_group(date, single, in_names, out_names, items, name, meta, recovering))
                except Exception:  # noqa: BLE001 - isolate the records that fail; the server keeps serving
                    if len(items) == 1:
                        self._lost(items)
                        continue
                    for r, one in enumerate(items):  # one record at a time: only the ones that fail are lost
                        try:
                            paths.append(self._write_group(date, single, in_names, out_names, [one],
                                                           f"{name}-r{r}" if name else None, meta, recovering))
                        except Exception:  # noqa: BLE001
                            self._lost([one])
        return paths

    def _write_group(self, day: str, single: bool, in_names: tuple[str, ...], out_names: tuple[str, ...],
                     items: list[tuple[Any, ...]], key: str | None = None,
                     meta_lists: tuple[list[str], list[str]] | None = None, recovering: bool = False) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = self.folder / f"date={day}"
        if recovering and key is not None:  # written before the crash: keep that file, do not repeat its rows
            done = sorted(folder.glob(f"part-*-{key}.parquet"))
            if done:
                return done[0]
        count = len(items)
        micros = (np.fromiter((p[2] for p in items), np.float64, count) * 1e6).astype(np.int64)
        if single:  # one row per record: transpose the row tuples in C
            total = count
            rows = np.zeros(count, dtype=np.int64)
            ins: list[Any] = list(zip(*[p[9] for p in items], strict=True)) or [()] * len(in_names)
            outs: list[Any] = list(zip(*[p[11] for p in items], strict=True)) or [()] * len(out_names)

            def meta(k: int) -> Any:
                return [p[k] for p in items]
        else:
            n = [p[6] for p in items]
            total = sum(n)
            rows = np.concatenate([p[7] for p in items]) if count > 1 else items[0][7]
            micros = np.repeat(micros, n)
            ins = [concat_values([p[9][j] for p in items]) for j in range(len(in_names))]
            outs = [np.concatenate([np.asarray(p[11][j]) for p in items]) if count > 1 else np.asarray(items[0][11][j])
                    for j in range(len(out_names))]

            def meta(k: int) -> Any:
                return np.repeat(np.array([p[k] for p in items], dtype=object), n)
        cols: dict[str, Any] = {
            "request_id": pa.array(meta(1), pa.string()),
            "request_row": pa.array(rows, pa.int64()),
            "logged_at": pa.array(micros, pa.timestamp("us", tz="UTC")),
            "model_name": pa.array(meta(3), pa.string()),
            "model_version": pa.array(meta(4), pa.string()),
            "log_source": pa.array(meta(5), pa.string()),
        }
        replaced = 0
        for name, values in zip(in_names, ins, strict=True):  # already redacted when packed
            cols[input_column_name(name)], bad = _arrow_array(values)
            replaced += bad
        for name, values in zip(out_names, outs, strict=True):
            arr = np.asarray(values)
            if arr.dtype == object:
                cols[name], bad = _arrow_array(arr.tolist())
                replaced += bad
            else:
                cols[name] = pa.array(arr)
        assert all(len(c) == total for c in cols.values())
        table = pa.table(cols)
        hashed, dropped = meta_lists if meta_lists is not None else (self.redactor.hashed, self.redactor.dropped)
        meta_kv = {HASHED_META: json.dumps(hashed).encode(), DROPPED_META: json.dumps(dropped).encode()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta_kv})
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"part-{stamp}-{key}.parquet" if key else f"part-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = folder / f".{name}.tmp"
        pq.write_table(table, tmp)
        final = folder / name
        os.replace(tmp, final)
        with self._lock:
            self.stats.written_rows += total
            self.stats.written_files += 1
            self.stats.replaced_values += replaced
            self.stats.files.append(str(final))
            del self.stats.files[:-self.keep_file_names]
        return final


def input_column_name(name: str) -> str:
    """Inputs keep their names unless one collides with a log column."""
    if name in META_COLUMNS or name.startswith(OUTPUT_PREFIXES):
        return f"input.{name}"
    return name


def _arrow_array(values: Any) -> tuple[Any, int]:
    """The values as an Arrow array, and how many were replaced by `UNSTORABLE` to make that possible."""
    import pyarrow as pa

    try:
        return pa.array(values, from_pandas=True), 0
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
        pass
    out: list[str | None] = []
    bad = 0
    for v in values:
        if v is None or (isinstance(v, float) and v != v):
            out.append(None)
            continue
        text = v if isinstance(v, str) else str(v)
        try:
            text.encode("utf-8")
        except UnicodeError:
            bad += 1
            text = UNSTORABLE
        out.append(text)
    return pa.array(out, pa.string()), bad


# ---------------------------------------------------------------------------------------------
# reading


def _as_utc(t: Any) -> pd.Timestamp | None:
    if t is None:
        return None
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def list_log_files(folder: str | Path, since: Any = None, until: Any = None) -> list[Path]:
    """Log files whose date partition can hold rows in [since, until); rows a crashed server left in its
    journal are written to files first (monitoring and readers see them)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    PredictionLogWriter(root, journal=False).recover()
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
