"""The prediction log's journal: each accepted record appended to a file before its response is sent.

The writer (mlops.serving.predictlog.PredictionLogWriter) batches records into Parquet files every few
seconds; until then they live in memory, where a crash of the process would lose them. So each record is
also appended, already redacted, to this process's journal segment (`<log>/.journal/<pid>-<id>.seg`)
with one `write` call before `submit` returns: from then on it is in the operating system's hands and a
`kill -9` of the server loses nothing. A flush starts a new segment and deletes the old one once its
records are in Parquet files, whose names carry the segment's id and the group's number, so a segment
replayed after a crash mid-flush writes only the files that are missing.

A segment is locked (`flock`) by the process writing it; the lock dies with the process. Whoever opens
the log next (a server starting, or monitoring reading the log) replays the segments nobody holds and
deletes them. Not fsync'ed per request: a power loss or kernel crash can lose what the kernel had not
yet written back (on Linux, by default, up to about 30 seconds of records).

Frames are length-prefixed pickles of plain values (str, float, int, None, datetimes, numpy arrays), read
back by an unpickler that refuses any other type; a frame cut short by the crash ends the segment.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pickle
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("mlops.serving.predictlog")

JOURNAL_DIR = ".journal"
SUFFIX = ".seg"
_LEN = struct.Struct("<Q")
_ALLOWED = {
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"),
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "timedelta"), ("datetime", "timezone"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a journal frame holds a {module}.{name}; only plain values are replayed")


class Segment:
    """One open, locked journal file of this process."""

    def __init__(self, folder: Path, header: tuple[Any, ...]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.path = folder / f"{self.id}{SUFFIX}"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.records = 0
        self.append(header)

    def append(self, packed: tuple[Any, ...]) -> None:
        self.write(encode_frame(packed))

    def write(self, frame: bytes) -> None:
        """One frame (`encode_frame`) appended with one write call: in the kernel's hands when this returns."""
        _write_all(self.fd, frame)
        self.records += 1

    def discard(self) -> None:
        """Its records are in Parquet files: delete it (then release the lock)."""
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)

    def release(self) -> None:
        """Close it without deleting (a flush failed): the next start or read replays it."""
        os.close(self.fd)


def encode_frame(packed: tuple[Any, ...]) -> bytes:
    """A packed record as a journal frame: its length, then its pickle."""
    data = pickle.dumps(packed, protocol=5)
    return _LEN.pack(len(data)) + data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_frames(data: bytes) -> list[tuple[Any, ...]]:
    """The whole frames of a segment; a frame cut short (the process died mid-write) ends it."""
    frames = []
    pos = 0
    while pos + _LEN.size <= len(data):
        (size,) = _LEN.unpack_from(data, pos)
        end = pos + _LEN.size + size
        if end > len(data):
            break
        frames.append(_PlainUnpickler(io.BytesIO(data[pos + _LEN.size:end])).load())
        pos = end
    return frames


def recover(folder: Path, write: Callable[[tuple[Any, ...], list[tuple[Any, ...]], str], int]) -> int:
    """Replay every segment under `folder/.journal` that no live process holds; returns the rows replayed.

    `write(header, records, segment_id)` writes the records as the writer would (skipping the files that
    already exist) and returns their rows; the segment is deleted once it returns."""
    jdir = folder / JOURNAL_DIR
    if not jdir.is_dir():
        return 0
    rows = 0
    for path in sorted(jdir.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process is writing it
            try:
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    continue  # replayed and deleted by another process meanwhile
            except FileNotFoundError:
                continue
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read()
            try:
                frames = read_frames(data)
            except Exception as exc:  # noqa: BLE001 - a damaged segment is kept aside, not replayed
                log.error("prediction log journal %s cannot be read (%s); kept as %s.bad", path, exc, path.name)
                os.replace(path, path.with_name(path.name + ".bad"))
                continue
            if len(frames) > 1:
                rows += write(frames[0], frames[1:], path.stem)
                log.warning("prediction log: replayed %d records of %s left by a process that stopped", len(frames) - 1,
                            path.name)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return rows


# ---------------------------------------------------------------------------------------------
# the packed form of a record: what the writer queues and the journal holds


def concat_values(parts: list[Any]) -> Any:
    if len(parts) == 1:
        return parts[0]
    out: list[Any] = []
    for part in parts:
        out.extend(part)
    return out


def first_value(values: Any) -> Any:
    v = values.iloc[0] if hasattr(values, "iloc") else values[0]
    return v.item() if isinstance(v, np.generic) else v


def pack_record(r: Any) -> tuple[Any, ...]:
    """A queued record as a tuple of plain values, tuples and numpy arrays.

    Lists, dicts and dataclass instances stay tracked by the cyclic garbage collector; thousands of
    them waiting in the queue make every full collection scan them (hundreds of milliseconds with the
    event loop stopped). Tuples of plain values are untracked after their first young collection.
    A one-row record keeps its values as one row tuple, so the writer transposes rows in C.

    Layout: (single, request id, logged_at, model name, version, source, n, rows, input names,
    inputs, output names, outputs).
    """
    if r.n == 1 and r.rows is None and r.row_offset == 0:
        return (True, r.request_id, r.logged_at, r.model_name, r.model_version, r.source, 1, None,
                tuple(r.inputs), tuple([v[0] if type(v) is list else first_value(v) for v in r.inputs.values()]),
                tuple(r.outputs), tuple(first_value(v) for v in r.outputs.values()))
    rows = (np.asarray(r.rows, dtype=np.int64) if r.rows is not None
            else np.arange(r.row_offset, r.row_offset + r.n, dtype=np.int64))
    return (False, r.request_id, r.logged_at, r.model_name, r.model_version, r.source, r.n, rows,
            tuple(r.inputs), tuple(v if isinstance(v, np.ndarray | pd.Series) else tuple(v) for v in r.inputs.values()),
            tuple(r.outputs), tuple(np.asarray(v) for v in r.outputs.values()))
