"""One JSON state file shared by processes on one machine: every read-modify-write holds an exclusive
`fcntl` lock, every write is atomic (a temporary file, fsync, rename), a missing file reads as a default.

The lock lives on a sibling `<name>.lock` file because the state file itself is replaced on each write.
Used by the monitor's window state and the retrain policy; works wherever `flock` works (Linux, macOS).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from mlops.core.errors import MLOpsError

T = TypeVar("T")


def _same(raw: Any) -> Any:
    return raw


@dataclass
class Transaction(Generic[T]):
    """The state inside `LockedJsonFile.transaction`: change `data` in place or replace it."""

    data: T


class LockedJsonFile(Generic[T]):
    """A JSON document in one file, read and changed under an exclusive lock.

    `parse` turns the decoded JSON into `T` (raising ValueError, KeyError, TypeError or AttributeError
    when it is not valid), `dump` turns `T` back into JSON-able data, `default` is the state of a missing file.
    `what` names the file in errors ("monitor state"), `fix` says what to do with an invalid one,
    `holder` who may be holding a lock that does not come free within `timeout_seconds` (0: do not wait).
    """

    def __init__(self, path: str | Path, what: str, default: Callable[[], T], *,
                 parse: Callable[[Any], T] = _same, dump: Callable[[T], Any] = _same,
                 fix: str = "move it aside to start from a fresh state", holder: str = "process",
                 timeout_seconds: float = 30.0, error: type[MLOpsError] = MLOpsError) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.what, self.default, self.parse, self.dump = what, default, parse, dump
        self.fix, self.holder, self.timeout_seconds, self.error = fix, holder, timeout_seconds, error

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the exclusive lock (waiting up to `timeout_seconds`); closing the descriptor releases it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.timeout_seconds
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise self.error(f"{self.what} {self.path} stayed locked for {self.timeout_seconds:g} s; "
                                         f"is another {self.holder} stuck?") from None
                    time.sleep(0.01)
            yield
        finally:
            os.close(fd)

    def _read_unlocked(self) -> T:
        if not self.path.exists():
            return self.default()
        try:
            return self.parse(json.loads(self.path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self.error(f"{self.what} {self.path} is not valid ({exc}); {self.fix}") from None

    def _write_unlocked(self, data: T) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(self.dump(data), fh, indent=2, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def read(self) -> T:
        """The current state (the default when the file does not exist yet)."""
        with self.locked():
            return self._read_unlocked()

    @contextmanager
    def transaction(self) -> Iterator[Transaction[T]]:
        """Exclusive read-modify-write: the state is written back when the block ends without an error."""
        with self.locked():
            tx = Transaction(self._read_unlocked())
            yield tx
            self._write_unlocked(tx.data)
