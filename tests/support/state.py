"""A temporary state folder for flow tests: MLOPS_HOME and a SQLite MLflow store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def state_folder(state: Path) -> Iterator[Path]:
    """MLOPS_HOME and a SQLite MLflow store in `state` for the duration (module-scoped fixtures use it)."""
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        uri = f"sqlite:///{state / 'mlflow.db'}"
        mp.setenv("MLOPS_HOME", str(state))
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLOPS_ARTIFACT_ROOT", (state / "mlartifacts").as_uri())
        mlflow.set_tracking_uri(uri)
        try:
            yield state
        finally:
            mlflow.set_tracking_uri(None)
