"""Import modules on a background thread while the main thread waits on other work.

The training flow's main thread spends the search blocked on joblib's worker processes, holding no
GIL; what registration and the plots need later (skops, MLflow's scikit-learn flavour, matplotlib,
about a second of imports) is imported then instead of on the critical path. A failure here is
ignored: the module is imported again, and fails properly, where it is used.
"""

from __future__ import annotations

import importlib
import threading


def preload(*modules: str) -> threading.Thread:
    """Start importing `modules` in a daemon thread; returns the thread (join it to wait)."""

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 - imported again where it is used
                continue

    thread = threading.Thread(target=run, name="mlops-preload", daemon=True)
    thread.start()
    return thread
