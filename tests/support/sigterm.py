"""A test run stopped with SIGTERM (a CI timeout) ends like Ctrl-C: pytest stops the running test and runs
every fixture's finalizer, so the servers the fixtures started (the e2e stack, MLflow, model servers) are
stopped instead of left running. Installed by tests/conftest.py; `-p tests.support.sigterm` installs it in
a pytest run that does not load that conftest."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import pytest


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # a second SIGTERM must not cut the finalizers short; a SIGKILL after it is what the reaper is for
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"stopped by signal {signum} (SIGTERM)")


def install() -> None:
    """Turn SIGTERM into KeyboardInterrupt in this process (only the main thread can set a handler)."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _interrupt)


def pytest_configure(config: pytest.Config) -> None:
    install()
