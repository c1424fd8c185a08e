"""Where state lives: one folder (default `.mlops/`) holds the MLflow store, Prefect's home,
quarantine files, the prediction log and reports. Nothing here runs at import."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    tracking_uri: str
    artifact_root: str

    @property
    def quarantine_dir(self) -> Path:
        return self.state_dir / "quarantine"

    @property
    def prediction_log_dir(self) -> Path:
        return self.state_dir / "predictions"

    @property
    def reports_dir(self) -> Path:
        return self.state_dir / "reports"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def monitor_state_path(self) -> Path:
        return self.state_dir / "monitor_state.json"


def get_settings() -> Settings:
    """Read settings from the environment (MLOPS_HOME, MLFLOW_TRACKING_URI)."""
    state = Path(os.environ.get("MLOPS_HOME", ".mlops")).resolve()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state / 'mlflow.db'}"
    artifacts = os.environ.get("MLOPS_ARTIFACT_ROOT") or (state / "mlartifacts").as_uri()
    return Settings(state_dir=state, tracking_uri=uri, artifact_root=artifacts)


def configure_environment(settings: Settings | None = None) -> Settings:
    """Prepare the process for a local run: state folder, quiet Prefect, MLflow store.

    Called by entry points (CLI, flow scripts), never at import.
    """
    s = settings or get_settings()
    s.state_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLOPS_HOME", str(s.state_dir))
    os.environ.setdefault("MLFLOW_TRACKING_URI", s.tracking_uri)
    os.environ.setdefault("PREFECT_HOME", str(s.state_dir / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    quiet_libraries()
    return s


def quiet_libraries() -> None:
    """Keep library chatter (GX temp dirs, MLflow registration notes) off the console."""
    import logging

    for name in ("great_expectations", "mlflow", "alembic", "distributed", "evidently", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, UserErrorFilter) for f in logger.filters):
            logger.addFilter(UserErrorFilter())


class UserErrorFilter:
    """A user's mistake (bad data, bad config) is one sentence, not a traceback: drop exc_info for MLOpsError."""

    def filter(self, record: object) -> bool:
        from mlops.core.errors import MLOpsError

        exc = getattr(record, "exc_info", None)
        if exc and len(exc) > 1 and isinstance(exc[1], MLOpsError):
            record.exc_info = None  # type: ignore[attr-defined]
            record.exc_text = None  # type: ignore[attr-defined]
        return True
