"""What starting a process needs, written once: the garbage-collector settings around heavy imports,
and waiting until a server answers or a condition holds.

GC: a process that imports MLflow, scikit-learn, pandas and Prefect holds several hundred thousand
long-lived objects; cyclic collections during the imports walk them again and again for nothing, and
later full collections stall requests. `frozen_imports()` turns collection off while importing and
freezes the imported heap after (frozen objects are never scanned again); `freeze_heap()` does the
freezing alone (a server after loading a model, the CLI at exit). Used by the CLI, its private
Prefect API, the model server and infra validation's fresh process.

Waiting: `wait_until(probe, timeout, what)` is the one polling loop (servers of the stack, the CLI's
private API, the tests); `http_ok(url)` is the usual probe. Nothing here runs at import.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from mlops.core.errors import MLOpsError

T = TypeVar("T")


@contextlib.contextmanager
def frozen_imports() -> Iterator[None]:
    """Cyclic GC off inside the block; everything alive at its end is frozen, then GC is back on.

    Nesting is safe: an inner block leaves collection off when an outer one turned it off.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def freeze_heap(collect: bool = False) -> None:
    """Move everything alive now out of the collector's scans (after a `gc.collect()` when `collect`).

    Collect first when nobody waits (before a server's first model serves); not on a hot path, where
    a full collection would stall requests.
    """
    if collect:
        gc.collect()
    gc.freeze()


class WaitTimeout(MLOpsError):
    """What was waited for did not happen in time."""


class WaitAborted(MLOpsError):
    """The process waited on exited, or the wait was stopped."""


def wait_until(
    probe: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    gone: Callable[[], str | None] | None = None,
    stop: threading.Event | None = None,
    ignore: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] | None = None,
) -> T:
    """Call `probe()` every `interval` s until it returns something truthy, and return that.

    `what` is the failure as the start of a sentence ("the MLflow server was not healthy"): after
    `timeout` s the wait ends with `WaitTimeout("<what> within N s")`, plus `detail()` (a log tail)
    when given. `gone()`, checked before each try, returns a sentence once the thing waited on has
    died, which ends the wait with `WaitAborted(sentence)`; so does a set `stop` event. Exceptions of
    the `ignore` types from `probe` count as "not yet". The probe always runs at least once.
    """
    t0 = time.monotonic()
    while stop is None or not stop.is_set():
        if gone is not None and (reason := gone()):
            raise WaitAborted(reason)
        try:
            value = probe()
        except ignore:
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() - t0 >= timeout:
            extra = detail() if detail is not None else ""
            raise WaitTimeout(f"{what} within {timeout:.0f} s" + (f"; {extra}" if extra else ""))
        time.sleep(interval)
    raise WaitAborted(f"stopped waiting: {what}")


def poll(probe: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Call `probe()` until it returns something truthy or `timeout` s pass; return its last value.

    For callers that assert on the outcome themselves (tests: "the log has three rows").
    """
    deadline = time.monotonic() + timeout
    value = probe()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = probe()
    return value


def http_ok(url: str, timeout: float = 2.0, accept: frozenset[int] = frozenset({200}),
            headers: dict[str, str] | None = None) -> bool:
    """True when GET `url` answers with a status in `accept`; False when it answers otherwise or not at all."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout, headers=headers).status_code in accept
    except httpx.HTTPError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that nothing listened on a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
