"""Every environment variable the project reads, in one typed object (pydantic-settings), and where
state lives: one folder (default `.mlops/`) holds the MLflow store, Prefect's home, quarantine
files, the prediction log and reports. Nothing here runs at import; docs/settings.md lists each
variable. Secrets are `SecretStr`: they never show in a repr, a log line or an error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from mlops.core.errors import MLOpsError, SettingsError

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


class Settings(BaseSettings):
    """The environment, read once per call of `get_settings()`; field aliases are the variable names."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, populate_by_name=True,
                                      frozen=True, extra="ignore")

    # -- where state lives (every command, the flows, the servers) --
    state_dir: Path = Field(Path(".mlops"), alias="MLOPS_HOME")
    mlflow_tracking_uri: str | None = Field(None, alias="MLFLOW_TRACKING_URI")
    artifact_root_override: str | None = Field(None, alias="MLOPS_ARTIFACT_ROOT")
    prefect_api_url: str | None = Field(None, alias="PREFECT_API_URL")
    code_version: str | None = Field(None, alias="MLOPS_CODE_VERSION")
    config_path: Path | None = Field(None, alias="MLOPS_CONFIG")
    # folders (os.pathsep-separated) that data files named at run time must resolve into; adds to the config's
    data_roots_env: str | None = Field(None, alias="MLOPS_DATA_ROOTS")

    # -- the local stack (`mlops up`) --
    host: str = Field("127.0.0.1", alias="MLOPS_HOST")
    prefect_port: int = Field(4200, alias="MLOPS_PREFECT_PORT")
    mlflow_port: int = Field(5000, alias="MLOPS_MLFLOW_PORT")
    serve_port: int = Field(8000, alias="MLOPS_SERVE_PORT")
    webhook_port: int = Field(4300, alias="MLOPS_WEBHOOK_PORT")
    alert_webhook_url: SecretStr | None = Field(None, alias="MLOPS_ALERT_WEBHOOK_URL")
    mlflow_basic_auth: bool = Field(False, alias="MLOPS_MLFLOW_BASIC_AUTH")
    mlflow_backend_store_uri: SecretStr | None = Field(None, alias="MLOPS_MLFLOW_BACKEND_STORE_URI")
    mlflow_artifacts_destination: str | None = Field(None, alias="MLOPS_MLFLOW_ARTIFACTS_DESTINATION")
    mlflow_workers: int = Field(1, ge=1, alias="MLOPS_MLFLOW_WORKERS")
    flow_log_level: str = Field("INFO", alias="MLOPS_FLOW_LOG_LEVEL")
    prefect_database_url: SecretStr | None = Field(
        None, validation_alias=AliasChoices("PREFECT_SERVER_DATABASE_CONNECTION_URL",
                                            "PREFECT_API_DATABASE_CONNECTION_URL"))
    prefect_server_auth_string: SecretStr | None = Field(None, alias="PREFECT_SERVER_API_AUTH_STRING")
    prefect_api_auth_string: SecretStr | None = Field(None, alias="PREFECT_API_AUTH_STRING")
    mlflow_tracking_username: str | None = Field(None, alias="MLFLOW_TRACKING_USERNAME")
    mlflow_tracking_password: SecretStr | None = Field(None, alias="MLFLOW_TRACKING_PASSWORD")
    mlflow_flask_secret_key: SecretStr | None = Field(None, alias="MLFLOW_FLASK_SERVER_SECRET_KEY")
    # each Prefect worker of the stack takes at most this many flow runs at once (None: no limit, Prefect's default)
    worker_limit: int | None = Field(None, ge=1, alias="MLOPS_WORKER_LIMIT")
    # `mlops up --dask`: a Dask scheduler and this many workers beside the stack (0: none)
    dask_workers: int = Field(0, ge=0, le=64, alias="MLOPS_DASK_WORKERS")
    dask_port: int = Field(8786, alias="MLOPS_DASK_PORT")
    dask_memory_limit: str = Field("2GiB", alias="MLOPS_DASK_MEMORY_LIMIT")

    # -- a Dask cluster the flows use (set by `mlops up --dask`, or by the user for their own cluster) --
    dask_address: str | None = Field(None, alias="MLOPS_DASK_ADDRESS")

    # -- the model server --
    serving_token: SecretStr | None = Field(None, alias="MLOPS_SERVING_TOKEN")
    serving_admin_token: SecretStr | None = Field(None, alias="MLOPS_SERVING_ADMIN_TOKEN")
    log_hash_key: SecretStr | None = Field(None, alias="MLOPS_LOG_HASH_KEY")
    # seals gate verdicts (mlops.registry.verdict); else $MLOPS_HOME/gate_key, made by the first training
    gate_key: SecretStr | None = Field(None, alias="MLOPS_GATE_KEY")
    # set by `python -m mlops.serving` for its uvicorn workers (not for users)
    serving_model: str | None = Field(None, alias="MLOPS_SERVING_MODEL")
    serving_alias: str = Field("champion", alias="MLOPS_SERVING_ALIAS")
    serving_config_json: str | None = Field(None, alias="MLOPS_SERVING_CONFIG_JSON")
    serving_log_dir: str = Field("default", alias="MLOPS_SERVING_LOG_DIR")
    serving_share_dir: str | None = Field(None, alias="MLOPS_SERVING_SHARE_DIR")

    @field_validator("state_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("mlflow_basic_auth", mode="before")
    @classmethod
    def _truthy(cls, value: Any) -> bool:
        return value if isinstance(value, bool) else str(value).strip().lower() in TRUE_WORDS

    @field_validator("prefect_port", "mlflow_port", "serve_port", "webhook_port", "dask_port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip().isdigit():
            raise ValueError("is not a port number")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings in `environ` (default: this process's environment); a bad value is one sentence."""
        try:
            if environ is None:
                return cls()
            return cls(_build_sources=((_MappingSource(cls, environ),), {}))
        except ValidationError as exc:
            raise SettingsError(_one_sentence(exc, environ if environ is not None else os.environ)) from None

    # -- derived places --
    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return self.artifact_root_override or (self.state_dir / "mlartifacts").as_uri()

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
    def inbox_dir(self) -> Path:
        """Where senders drop data files: always a data root (mlops.core.data.data_roots)."""
        return self.state_dir / "inbox"

    @property
    def data_roots(self) -> list[Path]:
        """The folders named in MLOPS_DATA_ROOTS."""
        return [Path(part).expanduser() for part in (self.data_roots_env or "").split(os.pathsep) if part.strip()]

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def monitor_state_path(self) -> Path:
        return self.state_dir / "monitor_state.json"

    @property
    def prefect_client_auth_string(self) -> str | None:
        """What clients log in to Prefect with: PREFECT_API_AUTH_STRING, else the server's own string."""
        auth = self.prefect_api_auth_string or self.prefect_server_auth_string
        return auth.get_secret_value() if auth else None


class _MappingSource(EnvSettingsSource):
    """The environment source over a given mapping (tests and the stack pass their own)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._mapping = dict(environ)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._mapping, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _one_sentence(exc: ValidationError, environ: Mapping[str, str]) -> str:
    """`NAME='value' is not ...; set it to ...` for the first bad variable (secrets are not echoed)."""
    err = exc.errors()[0]
    name = str(err["loc"][0]) if err["loc"] else "a setting"
    field = next((f for f in Settings.model_fields.values() if name in _names(f)), None)
    secret = field is None or "SecretStr" in str(field.annotation)  # unknown: hide it too
    shown = "<hidden>" if secret else repr(environ.get(name, ""))
    reason = str(err["msg"]).removeprefix("Value error, ")
    default = f" such as {field.default}" if field is not None and field.default is not None else ""
    if reason == "is not a port number":
        return f"{name}={shown} is not a port number; set it to an integer{default}"
    return f"{name}={shown} is not valid ({reason}); fix or unset it"


def _names(field: FieldInfo) -> set[str]:
    """The variable names of a field (its alias, or each of its alias choices)."""
    choices = field.validation_alias.choices if isinstance(field.validation_alias, AliasChoices) else []
    return {str(c) for c in choices} | ({field.alias} if field.alias else set())


def get_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the environment (see docs/settings.md)."""
    return Settings.from_env(environ)


def read_secret(name: str, environ: Mapping[str, str] | None = None) -> str:
    """A secret whose variable name is configured, not fixed (each webhook source's `secret_env`);
    empty when unset. The one place such a variable is read."""
    return (os.environ if environ is None else environ).get(name, "")


def configure_environment(settings: Settings | None = None) -> Settings:
    """Prepare the process for a local run: state folder, quiet Prefect, MLflow store.

    Called by entry points (CLI, flow scripts), never at import.
    """
    s = settings or get_settings()
    private_dir(s.state_dir)
    private_dir(s.state_dir / "prefect")
    if s.mlflow_tracking_uri is None:  # the default SQLite store: created private before MLflow opens it
        private_file(s.state_dir / "mlflow.db")
    os.environ.setdefault("MLOPS_HOME", str(s.state_dir))
    os.environ.setdefault("MLFLOW_TRACKING_URI", s.tracking_uri)
    os.environ.setdefault("PREFECT_HOME", str(s.state_dir / "prefect"))
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    quiet_libraries()
    return s


PRIVATE_DIR = 0o700  # the state folder holds stores, logs, keys and the prediction log: its owner's only
PRIVATE_FILE = 0o600


# The production profile's PostgreSQL runs as a system user of its own (it refuses root) from its cluster in
# this subfolder of the state folder (mlops.stack.postgres). While that folder belongs to another user, the state
# folder keeps the execute bit for others so that user can pass through it to its cluster: it cannot list the
# state folder, and everything in it stays its owner's only.
SERVER_FOLDER = "postgres"
TRAVERSE_ONLY = 0o011


def holds_server_folder(state_dir: Path) -> bool:
    """The state folder holds a server's folder owned by another user (see SERVER_FOLDER)."""
    try:
        return (state_dir / SERVER_FOLDER).stat().st_uid != os.getuid()
    except OSError:
        return False


def private_dir(path: Path) -> Path:
    """Create `path` (and its parents) if missing, and make it readable by its owner only (when it is ours).
    A folder holding a server's folder owned by another user keeps (never gains) the execute bit for others,
    whoever tightens it (the gate key's writer tightens the state folder too), so that user may pass through."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_DIR | (TRAVERSE_ONLY if holds_server_folder(path) else 0))
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty if missing (a SQLite database, a log) readable by its owner only; an existing one
    of ours is made so. SQLite gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, PRIVATE_FILE))
    except OSError:
        return path  # not ours to create: whoever opens it reports the problem
    _tighten(path, PRIVATE_FILE)
    return path


def private_opener(path: str, flags: int) -> int:
    """`open(..., opener=private_opener)`: a file created readable by its owner only."""
    return os.open(path, flags, PRIVATE_FILE)


def _tighten(path: Path, mode: int) -> None:
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o777 & ~mode:
            path.chmod(st.st_mode & 0o777 & mode)
    except OSError:
        pass  # a folder shared on purpose (another owner, a read-only mount) stays as it is


# Telemetry off and library chatter down, for every process the project starts (the stack's
# processes get TELEMETRY_OFF as well).
TELEMETRY_OFF = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
    "GIT_PYTHON_REFRESH": "quiet",
}
QUIET_ENV = {
    **TELEMETRY_OFF,
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # MLflow prints "View run / View experiment" links on stdout when a run ends on a tracking server
    # (they open its GenAI view); the summary prints the classic run link, and `--json` stdout stays JSON
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def quiet_libraries() -> None:
    """Keep library chatter (GX temp dirs, MLflow registration notes) off the console."""
    for name in ("great_expectations", "mlflow", "alembic", "distributed", "evidently", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, UserErrorFilter) for f in logger.filters):
            logger.addFilter(UserErrorFilter())


class UserErrorFilter:
    """A user's mistake (bad data, bad config) is one sentence, not a traceback: drop exc_info for MLOpsError."""

    def filter(self, record: object) -> bool:
        exc = getattr(record, "exc_info", None)
        if exc and len(exc) > 1 and isinstance(exc[1], MLOpsError):
            record.exc_info = None  # type: ignore[attr-defined]
            record.exc_text = None  # type: ignore[attr-defined]
            record.mlops_user_error = str(exc[1])  # type: ignore[attr-defined]  # the CLI's console says it once
        return True
