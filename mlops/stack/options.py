"""What the local stack is asked to run: its options and ports, and the environment and secrets its
processes get (what it deploys from `prefect.yaml` is planned in deployments/plan.py).

Used by mlops/stack/supervisor.py (the supervisor) and mlops/cli/stack.py; nothing here starts a process.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from mlops.core.errors import MLOpsError, SettingsError
from mlops.core.settings import TELEMETRY_OFF, Settings, read_secret

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("prefect", "mlflow", "worker", "model-server", "webhook-bridge")
LABELS = {
    "prefect": "Prefect server",
    "mlflow": "MLflow server",
    "worker": "Prefect worker",
    "model-server": "model server",
    "webhook-bridge": "webhook bridge",
    # the production profile's extra processes (not choosable with --only: the profile decides them)
    "postgres": "PostgreSQL server",
    "worker-2": "Prefect worker 2",
}
# `--profile`: local (SQLite files, one worker) or production (PostgreSQL, served artifacts, two workers)
PROFILES = ("local", "production")
PG_PORT_DEFAULT = 5433  # one above PostgreSQL's own, so a system server on 5432 is left alone
# option name, environment variable and default of each port, for messages
def _port(field: str) -> tuple[str, int]:
    """A port's environment variable and default, from the one settings object."""
    info = Settings.model_fields[field]
    return str(info.alias), int(info.default)


PORT_SETTINGS = {
    "prefect": ("--prefect-port", *_port("prefect_port")),
    "mlflow": ("--mlflow-port", *_port("mlflow_port")),
    "model-server": ("--serve-port", *_port("serve_port")),
    "webhook-bridge": ("--webhook-port", *_port("webhook_port")),
    "postgres": ("--pg-port", "MLOPS_PG_PORT", PG_PORT_DEFAULT),
}
SECRETS_FILE = "webhook_secrets.env"
HASH_KEY_FILE = "log_hash_key"  # the prediction log's HMAC key (MLOPS_LOG_HASH_KEY), mode 600
# the options `mlops up` records in the pid file, so `mlops restart` starts a component the same way
RECORDED_OPTIONS = ("host", "prefect_port", "mlflow_port", "serve_port", "webhook_port", "config_path", "prefect_file",
                    "webhooks_config", "project_dir", "mlflow_basic_auth", "mlflow_jobs", "serve_poll_seconds",
                    "worker_poll_seconds", "timeout", "profile", "pg_port", "workers")


class StackError(MLOpsError):
    """The stack cannot start or stop as asked (port taken, already running, a server unhealthy)."""


def _settings(environ: Mapping[str, str]) -> Settings:
    try:
        return Settings.from_env(environ)
    except SettingsError as exc:
        raise StackError(str(exc)) from None


# ---- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackOptions:
    """Where the stack keeps its state, which ports it binds, and what it deploys."""

    state_dir: Path
    host: str = "127.0.0.1"
    prefect_port: int = PORT_SETTINGS["prefect"][2]
    mlflow_port: int = PORT_SETTINGS["mlflow"][2]
    serve_port: int = PORT_SETTINGS["model-server"][2]
    webhook_port: int = PORT_SETTINGS["webhook-bridge"][2]
    config_path: Path = Path("configs/default.yaml")
    prefect_file: Path = Path("prefect.yaml")
    webhooks_config: Path = Path("configs/webhooks.yaml")
    project_dir: Path = REPO
    components: tuple[str, ...] = COMPONENTS
    alert_url: str | None = None
    mlflow_basic_auth: bool = False
    mlflow_jobs: bool = False  # MLflow's job-execution workers (GenAI scorers, prompt optimisation): off unless asked
    schedules: bool = True
    serve_poll_seconds: float | None = None
    worker_poll_seconds: float = 2.0
    parallel: bool = True
    timeout: float = 120.0
    profile: str = "local"
    pg_port: int = PG_PORT_DEFAULT  # the production profile's own PostgreSQL server
    workers: int = 0  # process workers on the pool; 0: the profile's (1 local, 2 production)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False, compare=False)

    @cached_property
    def settings(self) -> Settings:
        """The variables of `environ`, typed (the stack reads every variable through this)."""
        return _settings(self.environ)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> StackOptions:
        """Options from MLOPS_* variables, then explicit overrides (None means "not given")."""
        env = dict(os.environ if environ is None else environ)
        s = _settings(env)
        values: dict[str, Any] = {
            "state_dir": s.state_dir,
            "host": s.host,
            "prefect_port": s.prefect_port,
            "mlflow_port": s.mlflow_port,
            "serve_port": s.serve_port,
            "webhook_port": s.webhook_port,
            "alert_url": s.alert_webhook_url.get_secret_value() if s.alert_webhook_url else None,
            "mlflow_basic_auth": s.mlflow_basic_auth,
            "environ": env,
        }
        if s.config_path is not None:
            values["config_path"] = s.config_path
        values.update(_profile_variables(env))
        given = {k for k, v in overrides.items() if v is not None} | ({"config_path"} if "config_path" in values else set())
        values.update({k: v for k, v in overrides.items() if v is not None})
        opts = cls(**values)
        if opts.profile not in PROFILES:
            raise StackError(f"unknown profile {opts.profile!r}; choose {' or '.join(PROFILES)}")
        project = opts.project_dir.resolve()

        def place(name: str, p: Path) -> Path:
            # a path the user gave is relative to where they are; a default, to the project
            p = p.expanduser()
            return p if p.is_absolute() else ((Path.cwd() if name in given else project) / p).resolve()

        return replace(
            opts,
            state_dir=opts.state_dir.expanduser().resolve(),
            project_dir=project,
            config_path=place("config_path", opts.config_path),
            prefect_file=place("prefect_file", opts.prefect_file),
            webhooks_config=place("webhooks_config", opts.webhooks_config),
        )

    @property
    def client_host(self) -> str:
        """The address clients use: loopback when the servers listen on every interface."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    def port_of(self, component: str) -> int | None:
        return {"prefect": self.prefect_port, "mlflow": self.mlflow_port, "model-server": self.serve_port,
                "webhook-bridge": self.webhook_port, "postgres": self.pg_port}.get(component)

    @property
    def production(self) -> bool:
        return self.profile == "production"

    @property
    def external_mlflow(self) -> str | None:
        """MLOPS_MLFLOW_TRACKING_URL (production profile): an MLflow server the stack uses instead of starting one."""
        url = self.environ.get("MLOPS_MLFLOW_TRACKING_URL", "").strip()
        return url.rstrip("/") if self.production and url else None

    @property
    def worker_names(self) -> tuple[str, ...]:
        """The records of the stack's workers: `worker`, then `worker-2`, ... (2 on the production profile)."""
        count = self.workers or (2 if self.production else 1)
        return ("worker", *(f"worker-{i}" for i in range(2, count + 1)))

    @property
    def processes(self) -> tuple[str, ...]:
        """Every process this stack runs, in start order (components expanded by the profile)."""
        out: list[str] = ["postgres"] if self.needs_postgres else []
        for name in self.components:
            if name == "worker":
                out += self.worker_names
            elif not (name == "mlflow" and self.external_mlflow):
                out.append(name)
        return tuple(out)

    @property
    def needs_postgres(self) -> bool:
        """True when the production profile must run its own PostgreSQL (a back end without a URL given)."""
        if not self.production:
            return False
        s = self.settings
        prefect = "prefect" in self.components and s.prefect_database_url is None
        mlflow = "mlflow" in self.components and not self.external_mlflow and s.mlflow_backend_store_uri is None
        return prefect or mlflow

    @property
    def mlflow_url(self) -> str:
        """Where every client finds MLflow: the external server, else the stack's own."""
        return self.external_mlflow or str(self.url("mlflow"))

    def url(self, component: str) -> str | None:
        port = None if component == "postgres" else self.port_of(component)
        host = f"[{self.client_host}]" if ":" in self.client_host else self.client_host
        return f"http://{host}:{port}" if port else None

    @property
    def api_url(self) -> str:
        return f"{self.url('prefect')}/api"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def record(self) -> dict[str, Any]:
        """The options `mlops restart` needs to start a component as `up` did (no secrets, no environment)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in ((k, getattr(self, k)) for k in RECORDED_OPTIONS)}

    @classmethod
    def from_record(cls, state_dir: Path, recorded: Mapping[str, Any],
                    environ: Mapping[str, str] | None = None) -> StackOptions:
        """Options as `up` recorded them in the pid file (older files: from the environment), for `restart`."""
        known = {k: Path(v) if k.endswith(("_path", "_file", "_config", "_dir")) else v
                 for k, v in recorded.items() if k in RECORDED_OPTIONS and v is not None}
        env = dict(os.environ if environ is None else environ)
        return replace(cls.from_env(env, state_dir=state_dir), **known)


def _profile_variables(env: Mapping[str, str]) -> dict[str, Any]:
    """`--profile`, `--pg-port` and `--workers` from MLOPS_STACK_PROFILE, MLOPS_PG_PORT, MLOPS_WORKERS.

    Read here, not in mlops.core.settings, because only the stack uses them; a bad value is one sentence.
    """
    out: dict[str, Any] = {}
    if profile := env.get("MLOPS_STACK_PROFILE", "").strip():
        out["profile"] = profile
    for name, key in (("MLOPS_PG_PORT", "pg_port"), ("MLOPS_WORKERS", "workers")):
        raw = env.get(name, "").strip()
        if raw:
            if not raw.isdigit():
                raise StackError(f"{name}={raw!r} is not a whole number; set it to one such as "
                                 f"{PG_PORT_DEFAULT if key == 'pg_port' else 2}")
            out[key] = int(raw)
    return out


# ---- ports ------------------------------------------------------------------------------------


def port_taken(host: str, port: int) -> bool:
    """True when something already listens on (host, port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise StackError(f"cannot bind {host}:{port} ({exc.strerror}); check --host / MLOPS_HOST") from None
    return False


def check_ports(opts: StackOptions) -> None:
    """Fail before starting anything when a port the stack needs is taken, naming each one."""
    taken = []
    for name in opts.processes:
        port = opts.port_of(name)
        if port is not None and port_taken(opts.host, port):
            option, env, _ = PORT_SETTINGS[name]
            taken.append(f"port {port} on {'127.0.0.1' if name == 'postgres' else opts.host} ({LABELS[name]}) is "
                         f"already taken by another program; stop it or choose another port with {option} or {env}")
    if taken:
        raise StackError("; ".join(taken))


# ---- environment and secrets ------------------------------------------------------------------

# Prefect server settings when its database is SQLite (the user's environment wins). SQLite has one
# write lock; by default the event persister writes every 20 events, and a run-deployment action
# whose insert collides with that write gets 503 and is retried by Prefect's client 2 s later, which
# is most of the webhook -> flow run tail. Writing events on a timer instead makes those collisions
# rare; the UI's event feed then trails by up to the interval (flow runs, logs and artifacts do not).
SQLITE_PREFECT_SETTINGS = {
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "5000",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "10",
}
QUEUED_RUN_RETRY_SECONDS = "3"  # PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS, both profiles
# A queued run (deployment concurrency, ENQUEUE) is rejected back to Scheduled, QUEUED_RUN_RETRY_SECONDS ahead,
# each time the worker proposes it, and each rejection is a database write. A worker prefetching further ahead
# than that proposed every queued run on every poll: 201 rejected proposals for 7 runs in one webhook burst, a
# write stream under which SQLite starved the automation's run creation. Prefetching less than the retry lets a
# queued run rest between proposals.
WORKER_PREFETCH_SECONDS = "1"  # PREFECT_WORKER_PREFETCH_SECONDS
# The Prefect server's own client (the one its automations' actions call the API with) retries a 503 this
# many times, backing off 2, 4, ... 128 s (about 4 minutes in all), instead of Prefect's 5 (about a minute).
# On SQLite a burst of writes can answer a webhook's run-deployment action 503 for over a minute; when the
# retries run out the action fails and the delivery starts no run.
SERVER_CLIENT_RETRIES = "7"  # PREFECT_CLIENT_MAX_RETRIES in the server's environment, both profiles


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (mode 600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def load_webhook_secrets(opts: StackOptions) -> dict[str, str]:
    """Each webhook source's secret: from the environment, else generated once into the state folder.

    A generated secret lives in `$MLOPS_HOME/webhook_secrets.env` (mode 600) so senders on this machine
    can sign with it; in production set the variables yourself.
    """
    import yaml

    try:
        raw = yaml.safe_load(opts.webhooks_config.read_text()) or {}
    except OSError as exc:
        raise StackError(f"cannot read the webhook sources file {opts.webhooks_config} ({exc.strerror}); "
                         "give another with --webhooks-config") from None
    wanted = [str(s.get("secret_env")) for s in (raw.get("sources") or {}).values()
              if isinstance(s, dict) and s.get("secret_env")]
    path = opts.state_dir / SECRETS_FILE
    stored: dict[str, str] = {}
    if path.exists():
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.startswith("#"):
                stored[key.removeprefix("export ").strip()] = value.strip()
    out: dict[str, str] = {}
    changed = False
    for name in wanted:
        if given := read_secret(name, opts.environ):
            out[name] = given
            continue
        if name not in stored:
            stored[name] = secrets.token_hex(32)
            changed = True
        out[name] = stored[name]
    if changed:
        _write_private(path, "# Webhook secrets generated by `mlops up` (source this file to sign deliveries).\n"
                       + "".join(f"export {k}={v}\n" for k, v in sorted(stored.items())))
    return out


def private_secret(path: Path) -> str:
    """A random secret kept in a mode-600 file, made on first use (an existing file is made private again)."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return path.read_text().strip()
    value = secrets.token_hex(32)
    _write_private(path, value + "\n")
    return value


def load_log_hash_key(opts: StackOptions) -> str:
    """The prediction log's hash key: MLOPS_LOG_HASH_KEY when set, else generated once into
    `$MLOPS_HOME/log_hash_key` (mode 600) and kept, so hashed ids stay joinable across restarts.

    Without a key the model server would drop the sensitive columns instead of hashing them.
    """
    given = opts.settings.log_hash_key
    return given.get_secret_value() if given else private_secret(opts.state_dir / HASH_KEY_FILE)


def base_env(opts: StackOptions) -> dict[str, str]:
    """The environment every stack process gets: where state lives, where the servers are, quiet."""
    env = dict(opts.environ)
    # A client-side API URL or profile from the user's shell must not redirect the stack.
    for key in ("PREFECT_API_URL", "PREFECT_PROFILE", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    state, s = opts.state_dir, opts.settings
    env.update({
        "MLOPS_HOME": str(state),
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_API_URL": opts.api_url,
        "MLFLOW_TRACKING_URI": opts.mlflow_url,
        # new experiments keep their artifacts behind the MLflow server (--serve-artifacts)
        "MLOPS_ARTIFACT_ROOT": s.artifact_root_override or "mlflow-artifacts:/",
        **TELEMETRY_OFF,
        "PYTHONUNBUFFERED": "1",
    })
    auth = s.prefect_client_auth_string
    if auth:
        env["PREFECT_API_AUTH_STRING"] = auth  # clients (deploy, worker, flows, bridge) log in with it
    if opts.mlflow_basic_auth:
        if not s.mlflow_tracking_username or not s.mlflow_tracking_password:
            raise StackError("MLflow basic auth is on (MLOPS_MLFLOW_BASIC_AUTH / --mlflow-basic-auth) but "
                             "MLFLOW_TRACKING_USERNAME or MLFLOW_TRACKING_PASSWORD is not set; set both")
        import importlib.util

        if importlib.util.find_spec("flask_wtf") is None:
            raise StackError("MLflow basic auth needs the Flask-WTF package, which is not installed; run "
                             "`pip install 'mlflow[auth]==3.17.2'` (or turn basic auth off)")
    return env


def prefect_auth_header(env: Mapping[str, str]) -> dict[str, str]:
    """The header a Prefect client with environment `env` sends (its auth string), none without one."""
    from mlops.webhooks.sinks import prefect_auth_headers

    return prefect_auth_headers(auth_string=_settings(env).prefect_client_auth_string)
