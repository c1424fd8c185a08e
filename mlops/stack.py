"""The local stack supervisor behind `mlops up` / `mlops down`: every server of the system on loopback.

`up` starts:

1. `prefect server start` (SQLite under the state folder, telemetry off, API basic auth when
   PREFECT_SERVER_API_AUTH_STRING is set),
2. `mlflow server` (SQLite back end, artifacts served by the server from the state folder, basic
   auth when asked for),
3. the model server and 4. the webhook bridge,
5. once Prefect answers: the process work pool, `prefect deploy --all` of a rendered copy of the
   deployments file, the alert and crash-detection automations,
6. `prefect worker start` on the pool (after marking runs whose process died with an earlier worker
   as Crashed, which frees the training concurrency slot).

1-4 start together (none of their health checks needs another), then 5-6; `up` returns when every
one is healthy (`parallel=False` starts them one by one instead, as a baseline for the benchmark).
Each process runs in its own session (process group), writes to `$MLOPS_HOME/logs/<name>.log`, and
is recorded with its start time in `$MLOPS_HOME/stack.json`; `down` stops exactly those processes
(and what they started), never anything found by name. Nothing here runs at import.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.errors import MLOpsError

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = ("prefect", "mlflow", "worker", "model-server", "webhook-bridge")
LABELS = {
    "prefect": "Prefect server",
    "mlflow": "MLflow server",
    "worker": "Prefect worker",
    "model-server": "model server",
    "webhook-bridge": "webhook bridge",
}
# option name and environment variable of each port, for messages
PORT_SETTINGS = {
    "prefect": ("--prefect-port", "MLOPS_PREFECT_PORT", 4200),
    "mlflow": ("--mlflow-port", "MLOPS_MLFLOW_PORT", 5000),
    "model-server": ("--serve-port", "MLOPS_SERVE_PORT", 8000),
    "webhook-bridge": ("--webhook-port", "MLOPS_WEBHOOK_PORT", 4300),
}
STEP_TITLES = {
    "prefect": "starting the Prefect server",
    "mlflow": "starting the MLflow server",
    "deploy": "creating the work pool and deploying the flows",
    "automations": "installing alert and crash-detection automations",
    "worker": "starting the Prefect worker",
    "model-server": "starting the model server",
    "webhook-bridge": "starting the webhook bridge",
}
PID_FILE = "stack.json"
LOCK_FILE = "stack.lock"
SECRETS_FILE = "webhook_secrets.env"
ENV_PLACEHOLDER = re.compile(r"{{\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*}}")

Echo = Callable[[str], None]


# Prefect server settings when its database is SQLite (the user's environment wins). SQLite has one
# write lock; by default the event persister writes every 20 events, and a run-deployment action
# whose insert collides with that write gets 503 and is retried by Prefect's client 2 s later, which
# is most of the webhook -> flow run tail. Writing events on a timer instead makes those collisions
# rare; the UI's event feed then trails by up to the interval (flow runs, logs and artifacts do not).
SQLITE_PREFECT_SETTINGS = {
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "5000",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "10",
}


class StackError(MLOpsError):
    """The stack cannot start or stop as asked (port taken, already running, a server unhealthy)."""


# ---- options ----------------------------------------------------------------------------------


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a port number; set it to an integer such as {default}") from None


def _truthy(raw: str | None) -> bool:
    return (raw or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class StackOptions:
    """Where the stack keeps its state, which ports it binds, and what it deploys."""

    state_dir: Path
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    serve_port: int = 8000
    webhook_port: int = 4300
    config_path: Path = Path("configs/default.yaml")
    prefect_file: Path = Path("deployments/prefect/local.yaml")
    webhooks_config: Path = Path("configs/webhooks.yaml")
    project_dir: Path = REPO
    components: tuple[str, ...] = COMPONENTS
    alert_url: str | None = None
    mlflow_basic_auth: bool = False
    schedules: bool = True
    serve_poll_seconds: float | None = None
    worker_poll_seconds: float = 2.0
    parallel: bool = True
    timeout: float = 120.0
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> StackOptions:
        """Options from MLOPS_* variables, then explicit overrides (None means "not given")."""
        env = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {
            "state_dir": Path(env.get("MLOPS_HOME", ".mlops")),
            "host": env.get("MLOPS_HOST", "127.0.0.1"),
            "prefect_port": _env_int(env, "MLOPS_PREFECT_PORT", 4200),
            "mlflow_port": _env_int(env, "MLOPS_MLFLOW_PORT", 5000),
            "serve_port": _env_int(env, "MLOPS_SERVE_PORT", 8000),
            "webhook_port": _env_int(env, "MLOPS_WEBHOOK_PORT", 4300),
            "alert_url": env.get("MLOPS_ALERT_WEBHOOK_URL") or None,
            "mlflow_basic_auth": _truthy(env.get("MLOPS_MLFLOW_BASIC_AUTH")),
            "environ": env,
        }
        if env.get("MLOPS_CONFIG"):
            values["config_path"] = Path(env["MLOPS_CONFIG"])
        given = {k for k, v in overrides.items() if v is not None} | ({"config_path"} if "config_path" in values else set())
        values.update({k: v for k, v in overrides.items() if v is not None})
        opts = cls(**values)
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

    def url(self, component: str) -> str | None:
        port = {"prefect": self.prefect_port, "mlflow": self.mlflow_port, "model-server": self.serve_port,
                "webhook-bridge": self.webhook_port}.get(component)
        host = f"[{self.client_host}]" if ":" in self.client_host else self.client_host
        return f"http://{host}:{port}" if port else None

    @property
    def api_url(self) -> str:
        return f"{self.url('prefect')}/api"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def port_of(self, component: str) -> int | None:
        return {"prefect": self.prefect_port, "mlflow": self.mlflow_port, "model-server": self.serve_port,
                "webhook-bridge": self.webhook_port}.get(component)


# ---- process bookkeeping ----------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, start time in clock ticks) of a live process from /proc, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # the command name is in parentheses and may contain spaces; fields after it are fixed
    rest = raw[raw.rfind(")") + 2:].split()
    try:
        return rest[0], int(rest[1]), int(rest[2]), int(rest[19])
    except (IndexError, ValueError):
        return None


def proc_start_ticks(pid: int) -> int | None:
    st = proc_stat(pid)
    return st[3] if st else None


@dataclass
class ProcessRecord:
    """One process the stack started: enough to find it again, and only it."""

    name: str
    pid: int
    start_ticks: int | None
    cmd: list[str]
    log: str
    url: str | None = None
    started_at: str = ""

    def alive(self) -> bool:
        """True while this very process runs (a reused pid has another start time; a zombie is dead)."""
        st = proc_stat(self.pid)
        if st is None or st[0] in ("Z", "X"):
            return False
        return self.start_ticks is None or st[3] == self.start_ticks


@dataclass
class StackState:
    state_dir: str
    started_at: str
    urls: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    work_pool: str | None = None
    deployments: list[str] = field(default_factory=list)
    supervisor_pid: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> StackState:
        raw = json.loads(text)
        procs = {k: ProcessRecord(**v) for k, v in raw.pop("processes", {}).items()}
        return cls(processes=procs, **raw)

    def running(self) -> dict[str, ProcessRecord]:
        return {k: p for k, p in self.processes.items() if p.alive()}


def pid_file(state_dir: Path) -> Path:
    return state_dir / PID_FILE


def read_state(state_dir: Path) -> StackState | None:
    path = pid_file(state_dir)
    try:
        return StackState.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise StackError(f"the pid file {path} is not valid ({exc}); stop any stack processes by hand and "
                         "delete it") from None


def write_state(state: StackState) -> None:
    path = pid_file(Path(state.state_dir))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(state.to_json())
    os.replace(tmp, path)


@contextlib.contextmanager
def stack_lock(state_dir: Path) -> Iterator[None]:
    """One `up` or `down` at a time per state folder."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(f"another `mlops up` or `mlops down` is working on {state_dir}; wait for it "
                             "to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (children first), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = proc_stat(int(entry.name))
        if st:
            children.setdefault(st[1], []).append(int(entry.name))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def kill_tree(record: ProcessRecord, sig: int = signal.SIGTERM, grace: float = 15.0) -> bool:
    """Stop a recorded process, its process group and the groups of everything it started.

    Returns False when the record's process was already gone. Only the recorded process (checked by
    start time) and its descendants are signalled.
    """
    if not record.alive():
        _reap(record.pid)
        return False
    family = [record.pid, *descendants(record.pid)]
    groups = {record.pid}
    for p in family:
        st = proc_stat(p)
        if st and st[2] not in (0, 1, os.getpgrp()):
            groups.add(st[2])
    start_ticks = {p: proc_start_ticks(p) for p in family}

    def still(p: int) -> bool:
        st = proc_stat(p)
        return st is not None and st[0] not in ("Z", "X") and st[3] == start_ticks[p]

    def signal_all(s: int) -> None:
        for g in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(g, s)
        for p in family:  # members that left their group (setsid) but are still ours
            if still(p):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, s)

    signal_all(sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for p in family:
            _reap(p)
        if not any(still(p) for p in family):
            return True
        time.sleep(0.1)
    signal_all(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(still(p) for p in family):
        for p in family:
            _reap(p)
        time.sleep(0.05)
    return True


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
    for name in opts.components:
        port = opts.port_of(name)
        if port is not None and port_taken(opts.host, port):
            option, env, _ = PORT_SETTINGS[name]
            taken.append(f"port {port} on {opts.host} ({LABELS[name]}) is already taken by another program; stop "
                         f"it or choose another port with {option} or {env}")
    if taken:
        raise StackError("; ".join(taken))


# ---- environment ------------------------------------------------------------------------------


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
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.startswith("#"):
                stored[key.removeprefix("export ").strip()] = value.strip()
    out: dict[str, str] = {}
    changed = False
    for name in wanted:
        if opts.environ.get(name):
            out[name] = opts.environ[name]
            continue
        if name not in stored:
            stored[name] = secrets.token_hex(32)
            changed = True
        out[name] = stored[name]
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# Webhook secrets generated by `mlops up` (source this file to sign deliveries).\n")
            fh.writelines(f"export {k}={v}\n" for k, v in sorted(stored.items()))
    return out


def _private_secret(path: Path) -> str:
    """A random secret kept in a mode-600 file, made on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def base_env(opts: StackOptions) -> dict[str, str]:
    """The environment every stack process gets: where state lives, where the servers are, quiet."""
    env = dict(opts.environ)
    # A client-side API URL or profile from the user's shell must not redirect the stack.
    for key in ("PREFECT_API_URL", "PREFECT_PROFILE", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    state = opts.state_dir
    env.update({
        "MLOPS_HOME": str(state),
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_API_URL": opts.api_url,
        "MLFLOW_TRACKING_URI": str(opts.url("mlflow")),
        # new experiments keep their artifacts behind the MLflow server (--serve-artifacts)
        "MLOPS_ARTIFACT_ROOT": env.get("MLOPS_ARTIFACT_ROOT") or "mlflow-artifacts:/",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
        "EVIDENTLY_DISABLE_TELEMETRY": "1",
        "PYTHONUNBUFFERED": "1",
        "GIT_PYTHON_REFRESH": "quiet",
    })
    auth = env.get("PREFECT_SERVER_API_AUTH_STRING")
    if auth and not env.get("PREFECT_API_AUTH_STRING"):
        env["PREFECT_API_AUTH_STRING"] = auth  # clients (deploy, worker, flows, bridge) log in with it
    if opts.mlflow_basic_auth:
        user, password = env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD")
        if not user or not password:
            raise StackError("MLflow basic auth is on (MLOPS_MLFLOW_BASIC_AUTH / --mlflow-basic-auth) but "
                             "MLFLOW_TRACKING_USERNAME or MLFLOW_TRACKING_PASSWORD is not set; set both")
        import importlib.util

        if importlib.util.find_spec("flask_wtf") is None:
            raise StackError("MLflow basic auth needs the Flask-WTF package, which is not installed; run "
                             "`pip install 'mlflow[auth]==3.17.2'` (or turn basic auth off)")
    return env


def prefect_auth_header(env: Mapping[str, str]) -> dict[str, str]:
    import base64

    auth = env.get("PREFECT_API_AUTH_STRING")
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}


# ---- the deployments file ---------------------------------------------------------------------


@dataclass
class RenderedDeployments:
    path: Path
    names: list[str]
    work_pools: list[str]
    skipped: list[str]


def _pipeline_config(opts: StackOptions) -> Any:
    from mlops.config import load_config

    return load_config(opts.config_path)


def render_deployments(opts: StackOptions, model_name: str, monitor_cron: str | None,
                       out_dir: Path | None = None) -> RenderedDeployments:
    """A copy of the deployments file with this stack's config, model and cron filled in.

    Deployments whose flow file does not exist are left out (and named in `skipped`); a
    `{{ $VAR }}` placeholder whose variable is not set is an error naming it.
    """
    import yaml

    src = opts.prefect_file
    try:
        raw = yaml.safe_load(src.read_text()) or {}
    except OSError as exc:
        raise StackError(f"cannot read the deployments file {src} ({exc.strerror}); give another with "
                         "--prefect-file") from None
    except yaml.YAMLError as exc:
        raise StackError(f"the deployments file {src} is not valid YAML ({exc})") from None
    fill = {
        "MLOPS_PROJECT_DIR": str(opts.project_dir),
        "MLOPS_CONFIG": str(opts.config_path),
        "MLOPS_MODEL_NAME": model_name,
        "MLOPS_MONITOR_CRON": monitor_cron or "0 * * * *",
    }
    kept, skipped, pools = [], [], []
    for dep in raw.get("deployments") or []:
        entry = str(dep.get("entrypoint", ""))
        file_part = entry.rsplit(":", 1)[0]
        if not file_part or not (opts.project_dir / file_part).is_file():
            skipped.append(f"{dep.get('name')} ({file_part or 'no entrypoint'} not found)")
            continue
        params = dep.setdefault("parameters", {}) or {}
        dep["parameters"] = params
        if "config_path" in params:
            params["config_path"] = str(opts.config_path)
        if "model_name" in params:
            params["model_name"] = model_name
        for sched in dep.get("schedules") or []:
            if entry.endswith(":monitor") and monitor_cron and "cron" in sched:
                sched["cron"] = monitor_cron
            if not opts.schedules:
                sched["active"] = False
        pool = (dep.get("work_pool") or {}).get("name")
        if pool and pool not in pools:
            pools.append(pool)
        kept.append(dep)
    raw["deployments"] = kept
    raw.pop("definitions", None)  # anchors are resolved by now
    missing: set[str] = set()

    def resolve(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if not isinstance(value, str):
            return value

        def one(m: re.Match[str]) -> str:
            got = fill.get(m.group(1)) or opts.environ.get(m.group(1))
            if not got:
                missing.add(m.group(1))
            return got or m.group(0)

        return ENV_PLACEHOLDER.sub(one, value)

    raw = resolve(raw)
    if missing:
        raise StackError(f"the deployments file {src} uses {', '.join('$' + m for m in sorted(missing))}, which "
                         "is not set; export it and run again")

    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    text = yaml.dump(raw, Dumper=NoAliases, sort_keys=False, width=120)
    out_dir = out_dir or (opts.state_dir / "deploy")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "prefect.yaml"
    out.write_text(f"# Rendered by `mlops up` from {src}; edit that file, not this one.\n" + text)
    for p in pools:
        if ENV_PLACEHOLDER.search(p):
            raise StackError(f"the work pool name {p!r} in {src} must be literal")
    return RenderedDeployments(out, [str(d.get("name")) for d in kept], pools, skipped)


# ---- the supervisor ---------------------------------------------------------------------------


def _is_flow_process(pid: int) -> bool:
    """True while `pid` is a live Prefect flow-run process (not gone, not a zombie, not a reused pid)."""
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"prefect" in cmdline


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


@dataclass
class Launched:
    """A process just started, watched by a thread until it answers its health check.

    Watching starts at launch, so a server that comes up while `up` waits on another is timed right.
    """

    def __init__(self, record: ProcessRecord, probe: Callable[[], bool], what: str, timeout: float) -> None:
        import threading

        self.record, self.probe, self.what, self.timeout = record, probe, what, timeout
        self.t0 = time.monotonic()
        self.seconds: float | None = None
        self.error: StackError | None = None
        self._done = threading.Event()
        self._stop = threading.Event()
        threading.Thread(target=self._watch, name=f"watch-{record.name}", daemon=True).start()

    def _watch(self) -> None:
        rec, deadline = self.record, self.t0 + self.timeout
        try:
            while time.monotonic() < deadline and not self._stop.is_set():
                if not rec.alive():
                    self.error = StackError(f"the {self.what} exited while starting; last lines of {rec.log}:\n"
                                            f"{tail(Path(rec.log))}")
                    return
                try:
                    if self.probe():
                        self.seconds = time.monotonic() - self.t0
                        return
                except Exception:  # noqa: BLE001 - not up yet, whatever the reason
                    pass
                time.sleep(0.25)
            self.error = StackError(f"the {self.what} was not healthy within {self.timeout:.0f} s; last lines of "
                                    f"{rec.log}:\n{tail(Path(rec.log))}")
        finally:
            self._done.set()

    def wait(self) -> float:
        """Seconds from launch to healthy; the exit or timeout as a StackError."""
        try:
            self._done.wait()
        except BaseException:
            self._stop.set()
            raise
        if self.error is not None:
            raise self.error
        assert self.seconds is not None
        return self.seconds


class Supervisor:
    """Starts the stack's processes one by one, recording each in the pid file as it starts."""

    def __init__(self, opts: StackOptions, echo: Echo | None = None) -> None:
        self.opts = opts
        self.echo = echo or (lambda _m: None)
        self.env = base_env(opts)
        self.state = StackState(state_dir=str(opts.state_dir), started_at=_now(), supervisor_pid=os.getpid())
        self.bin = Path(sys.executable).parent

    # -- helpers --
    def log_path(self, name: str) -> Path:
        return self.opts.logs_dir / f"{name}.log"

    def spawn(self, name: str, cmd: list[str], env: dict[str, str], url: str | None) -> ProcessRecord:
        log = self.log_path(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"\n=== {_now()} mlops up: {shlex.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(cmd, cwd=self.opts.project_dir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        rec = ProcessRecord(name=name, pid=proc.pid, start_ticks=proc_start_ticks(proc.pid), cmd=cmd, log=str(log),
                            url=url, started_at=_now())
        self.state.processes[name] = rec
        if url:
            self.state.urls[name] = url
        write_state(self.state)
        return rec

    def run_step(self, name: str, cmd: list[str], env: dict[str, str], timeout: float) -> str:
        """A one-shot command (deploy, work pool); its output goes to logs/<name>.log."""
        log = self.log_path(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            res = subprocess.run(cmd, cwd=self.opts.project_dir, env=env, stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StackError(f"`{shlex.join(cmd[:4])} ...` did not finish within {timeout:.0f} s; see "
                             f"{log}") from None
        with open(log, "a") as fh:
            fh.write(f"\n=== {_now()} mlops up: {shlex.join(cmd)} (exit {res.returncode})\n{res.stdout}{res.stderr}")
        if res.returncode != 0:
            raise StackError(f"`{' '.join(cmd[1:4])}` failed (exit {res.returncode}); last lines of {log}:\n"
                             + "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:]))
        return res.stdout

    def wait_healthy(self, launched: Launched) -> float:
        """Seconds from launch until the probe passes; an exit or the timeout is a StackError."""
        return launched.wait()

    def watch(self, rec: ProcessRecord, probe: Callable[[], bool], what: str) -> Launched:
        return Launched(rec, probe, what, self.opts.timeout)

    def http_ok(self, url: str, auth: tuple[str, str] | None = None, headers: dict[str, str] | None = None) -> bool:
        import httpx

        return httpx.get(url, timeout=2.0, auth=auth, headers=headers).status_code == 200

    def api(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        resp = httpx.request(method, f"{self.opts.api_url}{path}", headers=prefect_auth_header(self.env),
                             timeout=15.0, **kw)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.json() if resp.content else None

    # -- components --
    def launch_prefect(self) -> Launched:
        o, env = self.opts, dict(self.env)
        home = o.state_dir / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        if not (env.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or env.get("PREFECT_API_DATABASE_CONNECTION_URL")):
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
            for key, value in SQLITE_PREFECT_SETTINGS.items():
                env.setdefault(key, value)
        env.setdefault("PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT", "false")
        env.setdefault("PREFECT_UI_API_URL", o.api_url)
        cmd = [str(self.bin / "prefect"), "server", "start", "--host", o.host, "--port", str(o.prefect_port)]
        rec = self.spawn("prefect", cmd, env, o.url("prefect"))
        return self.watch(rec, lambda: self.http_ok(f"{o.api_url}/health"), "Prefect server")

    def launch_mlflow(self) -> Launched:
        o, env = self.opts, dict(self.env)
        store = o.state_dir / "mlflow.db"
        artifacts = o.state_dir / "mlartifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        backend = env.get("MLOPS_MLFLOW_BACKEND_STORE_URI") or f"sqlite:///{store}"
        destination = env.get("MLOPS_MLFLOW_ARTIFACTS_DESTINATION") or str(artifacts)
        cmd = [str(self.bin / "mlflow"), "server", "--backend-store-uri", backend, "--serve-artifacts",
               "--artifacts-destination", destination, "--default-artifact-root", "mlflow-artifacts:/",
               "--host", o.host, "--port", str(o.mlflow_port), "--workers", env.get("MLOPS_MLFLOW_WORKERS", "1")]
        if o.mlflow_basic_auth:
            ini = o.state_dir / "mlflow" / "basic_auth.ini"
            ini.parent.mkdir(parents=True, exist_ok=True)
            ini.write_text(
                "[mlflow]\n"
                "default_permission = READ\n"
                f"database_uri = sqlite:///{o.state_dir / 'mlflow' / 'basic_auth.db'}\n"
                f"admin_username = {env['MLFLOW_TRACKING_USERNAME']}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
            if not env.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):  # CSRF key: kept across restarts, private
                env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = _private_secret(ini.parent / "flask_secret_key")
            env.setdefault("MLFLOW_AUTH_ADMIN_PASSWORD", env["MLFLOW_TRACKING_PASSWORD"])
            cmd += ["--app-name", "basic-auth"]
        rec = self.spawn("mlflow", cmd, env, o.url("mlflow"))
        return self.watch(rec, lambda: self.http_ok(f"{o.url('mlflow')}/health"), "MLflow server")

    def deploy(self, model_name: str, monitor_cron: str | None) -> float:
        t0 = time.monotonic()
        rendered = render_deployments(self.opts, model_name, monitor_cron)
        for skipped in rendered.skipped:
            self.echo(f"  skipped deployment {skipped}")
        if not rendered.names:
            raise StackError(f"no deployment in {self.opts.prefect_file} has its flow file; nothing to deploy")
        prefect = str(self.bin / "prefect")
        for pool in rendered.work_pools:
            if self.api("GET", f"/work_pools/{pool}") is None:
                self.run_step("deploy", [prefect, "--no-prompt", "work-pool", "create", pool, "--type", "process"],
                              self.env, timeout=120)
        self.state.work_pool = rendered.work_pools[0] if rendered.work_pools else None
        self.run_step("deploy", [prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(rendered.path)],
                      self.env, timeout=300)
        found = self.api("POST", "/deployments/filter",
                         json={"deployments": {"name": {"any_": rendered.names}}, "limit": 200}) or []
        have = {d["name"] for d in found}
        lost = [n for n in rendered.names if n not in have]
        if lost:
            raise StackError(f"`prefect deploy` did not create deployment(s) {', '.join(lost)}; see "
                             f"{self.log_path('deploy')}")
        self.state.deployments = rendered.names
        write_state(self.state)
        return time.monotonic() - t0

    def configure_automations(self) -> None:
        """Alerts (when a webhook URL is given or the block exists) and crash detection, via mlops.alerts."""
        cmd = [sys.executable, "-m", "mlops.alerts", "--crash-detection"]
        if self.opts.alert_url:
            cmd += ["--url", self.opts.alert_url]
        out = self.run_step("automations", cmd, self.env, timeout=120)
        for line in out.strip().splitlines():
            self.echo(f"  {line}")

    def recover_orphaned_runs(self) -> list[str]:
        """Mark runs of our pool whose process died with an earlier worker as Crashed.

        A killed worker leaves its run Running and holding the deployment's concurrency slot, so
        every new training would be cancelled until the lease expires. Only runs whose recorded
        process (`infrastructure_pid`, the pid the process worker started on this machine) no longer
        exists, or is now some other program, are touched.
        """
        pool = self.state.work_pool
        if not pool:
            return []
        runs = self.api("POST", "/flow_runs/filter", json={
            "flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING", "CANCELLING"]}}},
            "work_pools": {"name": {"any_": [pool]}}, "limit": 200,
        }) or []
        me = socket.gethostname()
        fixed = []
        for run in runs:
            infra = str(run.get("infrastructure_pid") or "")
            host, _, pid = infra.rpartition(":")
            if not pid.isdigit() or host not in ("", me) or _is_flow_process(int(pid)):
                continue
            self.api("POST", f"/flow_runs/{run['id']}/set_state", json={
                "state": {"type": "CRASHED", "name": "Crashed",
                          "message": "its process is gone (the worker stopped while it ran); marked Crashed "
                                     "by `mlops up`"},
                "force": True,
            })
            fixed.append(str(run.get("name") or run["id"]))
        return fixed

    def launch_worker(self) -> Launched:
        o, env = self.opts, dict(self.env)
        pool = self.state.work_pool
        if not pool:
            raise StackError("no work pool to start a worker on; run the deploy step first")
        for name in self.recover_orphaned_runs():
            self.echo(f"  marked flow run {name} Crashed (its process died with an earlier worker)")
        env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
        # flow runs log at INFO so the Prefect UI shows what each stage did
        env["PREFECT_LOGGING_LEVEL"] = o.environ.get("MLOPS_FLOW_LOG_LEVEL", "INFO")
        env.setdefault("PREFECT_WORKER_QUERY_SECONDS", f"{o.worker_poll_seconds:g}")
        env.setdefault("PREFECT_WORKER_PREFETCH_SECONDS", "5")
        worker_name = f"{pool}-{socket.gethostname()}"
        cmd = [str(self.bin / "prefect"), "worker", "start", "--pool", pool, "--type", "process",
               "--name", worker_name]
        rec = self.spawn("worker", cmd, env, None)

        def online() -> bool:
            workers = self.api("POST", f"/work_pools/{pool}/workers/filter", json={"limit": 50}) or []
            return any(w.get("name") == worker_name and w.get("status") == "ONLINE" for w in workers)

        return self.watch(rec, online, "Prefect worker")

    def launch_model_server(self) -> Launched:
        o = self.opts
        config_path = o.config_path
        cmd = [sys.executable, "-m", "deployments.model_server", "--config", str(config_path),
               "--host", o.host, "--port", str(o.serve_port), "--log-level", "warning"]
        if o.serve_poll_seconds is not None:
            cmd += ["--poll-seconds", f"{o.serve_poll_seconds:g}"]
        rec = self.spawn("model-server", cmd, dict(self.env), o.url("model-server"))
        return self.watch(rec, lambda: self.http_ok(f"{o.url('model-server')}/health"), "model server")

    def launch_bridge(self) -> Launched:
        o = self.opts
        env = {**self.env, **load_webhook_secrets(o)}
        cmd = [sys.executable, "-m", "deployments.webhook_bridge", "--config", str(o.webhooks_config),
               "--host", o.host, "--port", str(o.webhook_port), "--prefect-api-url", o.api_url,
               "--state-dir", str(o.state_dir / "webhooks"), "--log-level", "warning"]
        rec = self.spawn("webhook-bridge", cmd, env, o.url("webhook-bridge"))
        return self.watch(rec, lambda: self.http_ok(f"{o.url('webhook-bridge')}/health"), "webhook bridge")


@dataclass
class UpResult:
    state: StackState
    timings: dict[str, float]
    total_seconds: float


def up(opts: StackOptions, echo: Echo | None = None) -> UpResult:
    """Start the stack and return once every component is healthy; on failure stop what was started."""
    say = echo or (lambda _m: None)
    unknown = [c for c in opts.components if c not in COMPONENTS]
    if unknown:
        raise StackError(f"unknown component(s) {', '.join(unknown)}; choose from {', '.join(COMPONENTS)}")
    try:
        cfg = _pipeline_config(opts)
    except MLOpsError as exc:
        raise StackError(str(exc)) from None
    t_start = time.monotonic()
    with stack_lock(opts.state_dir):
        existing = read_state(opts.state_dir)
        if existing is not None:
            alive = existing.running()
            if alive:
                pids = ", ".join(f"{n} {p.pid}" for n, p in alive.items())
                raise StackError(f"the stack is already running from {opts.state_dir} ({pids}); run `mlops down` "
                                 "first, or `mlops stack-status` to see it")
            pid_file(opts.state_dir).unlink(missing_ok=True)
            say(f"removed a stale pid file (none of its processes runs): {pid_file(opts.state_dir)}")
        check_ports(opts)
        sup = Supervisor(opts, say)
        write_state(sup.state)
        timings: dict[str, float] = {}
        try:
            _bring_up(sup, cfg, set(opts.components), opts.parallel, timings, say)
        except BaseException:
            _stop_all(sup.state, say, grace=10.0)
            pid_file(opts.state_dir).unlink(missing_ok=True)
            raise
        write_state(sup.state)
    return UpResult(sup.state, timings, time.monotonic() - t_start)


def _bring_up(sup: Supervisor, cfg: Any, want: set[str], parallel: bool, timings: dict[str, float],
              say: Echo) -> None:
    """Start the wanted components in dependency order.

    Parallel (the default): every server that needs nothing else starts at once (Prefect, MLflow,
    model server, bridge: their health checks do not call each other); deploy, automations and the
    worker follow as soon as Prefect answers. Sequential: one after the other, each healthy first.
    """
    launchers: dict[str, Callable[[], Launched]] = {
        "prefect": sup.launch_prefect, "mlflow": sup.launch_mlflow,
        "model-server": sup.launch_model_server, "webhook-bridge": sup.launch_bridge,
    }
    pending: dict[str, Launched] = {}

    def wait(name: str) -> None:
        if name in pending:
            timings[name] = sup.wait_healthy(pending.pop(name))
            say(f"  {LABELS[name]} ready in {timings[name]:.1f} s")

    def launch(name: str) -> None:
        if name in want:
            say(f"{STEP_TITLES[name]} ...")
            pending[name] = launchers[name]()
            if not parallel:
                wait(name)

    def timed(name: str, fn: Callable[[], object]) -> None:
        say(f"{STEP_TITLES[name]} ...")
        t0 = time.monotonic()
        fn()
        timings[name] = time.monotonic() - t0

    for name in ("prefect", "mlflow", "model-server", "webhook-bridge") if parallel else ("prefect", "mlflow"):
        launch(name)
    if "worker" in want:
        wait("prefect")
        timed("deploy", lambda: sup.deploy(cfg.registry.model_name, cfg.monitoring.schedule_cron))
        timed("automations", sup.configure_automations)
        say(f"{STEP_TITLES['worker']} ...")
        pending["worker"] = sup.launch_worker()
        wait("worker")
    if not parallel:
        launch("model-server")
        launch("webhook-bridge")
    for name in list(pending):
        wait(name)


def _stop_all(state: StackState, say: Echo, grace: float) -> list[str]:
    stopped = []
    for name in reversed(list(state.processes)):
        rec = state.processes[name]
        if kill_tree(rec, signal.SIGTERM, grace=grace):
            stopped.append(name)
            say(f"stopped {LABELS.get(name, name)} (pid {rec.pid})")
    return stopped


def down(state_dir: Path, echo: Echo | None = None, grace: float = 15.0) -> list[str]:
    """Stop the processes recorded in the pid file (and what they started); returns their names."""
    say = echo or (lambda _m: None)
    state_dir = state_dir.expanduser().resolve()
    with stack_lock(state_dir):
        state = read_state(state_dir)
        if state is None:
            say(f"nothing to stop: no stack is recorded in {state_dir}")
            return []
        stopped = _stop_all(state, say, grace)
        if not stopped:
            say("nothing was running; removed the stale pid file")
        pid_file(state_dir).unlink(missing_ok=True)
        return stopped


@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool | None
    url: str | None
    detail: str = ""


def status(state_dir: Path) -> list[ComponentStatus]:
    """What the pid file records, whether each process runs, and whether it answers its health check."""
    import httpx

    state_dir = state_dir.expanduser().resolve()
    state = read_state(state_dir)
    if state is None:
        return []
    out = []
    env = dict(os.environ)
    env.setdefault("PREFECT_API_AUTH_STRING", env.get("PREFECT_SERVER_API_AUTH_STRING", ""))
    for name, rec in state.processes.items():
        running = rec.alive()
        healthy: bool | None = None
        detail = ""
        if running and rec.url:
            path = {"prefect": "/api/health", "mlflow": "/health", "model-server": "/ready",
                    "webhook-bridge": "/health"}.get(name, "/")
            try:
                resp = httpx.get(rec.url + path, timeout=2.0)
                healthy = resp.status_code == 200 or (name == "model-server" and resp.status_code == 503)
                if name == "model-server" and resp.status_code == 503:
                    detail = "up, no champion loaded yet"
            except httpx.HTTPError as exc:
                healthy, detail = False, type(exc).__name__
        elif running and name == "worker" and state.work_pool:
            prefect = state.processes.get("prefect")
            try:
                resp = httpx.post(f"{prefect.url}/api/work_pools/{state.work_pool}/workers/filter",
                                  json={"limit": 50}, headers=prefect_auth_header(env), timeout=2.0)
                if resp.status_code == 401:
                    detail = f"pool {state.work_pool} (set PREFECT_API_AUTH_STRING to check it)"
                else:
                    resp.raise_for_status()
                    healthy = any(w.get("status") == "ONLINE" for w in resp.json())
                    detail = f"pool {state.work_pool}"
            except (httpx.HTTPError, ValueError, AttributeError) as exc:
                healthy, detail = False, type(exc).__name__
        out.append(ComponentStatus(name, rec.pid, running, healthy, rec.url, detail))
    return out


def log_file(state_dir: Path, component: str) -> Path:
    if component not in COMPONENTS + ("deploy", "automations"):
        raise StackError(f"no log named {component!r}; choose from {', '.join(COMPONENTS + ('deploy', 'automations'))}")
    return state_dir.expanduser().resolve() / "logs" / f"{component}.log"


def kill_component(state_dir: Path, component: str, sig: int = signal.SIGKILL) -> bool:
    """Kill one recorded component and what it started (for failure drills: a worker dying mid-run)."""
    state = read_state(state_dir.expanduser().resolve())
    rec = state.processes.get(component) if state else None
    if rec is None:
        raise StackError(f"the stack in {state_dir} has no {component}")
    return kill_tree(rec, sig, grace=5.0)


def restart_component(opts: StackOptions, component: str, echo: Echo | None = None) -> float:
    """Start one component again (after it died), recording it in the pid file; returns seconds to healthy."""
    with stack_lock(opts.state_dir):
        state = read_state(opts.state_dir)
        if state is None:
            raise StackError(f"no stack is recorded in {opts.state_dir}; run `mlops up`")
        rec = state.processes.get(component)
        if rec is not None and rec.alive():
            raise StackError(f"the {LABELS.get(component, component)} is still running (pid {rec.pid})")
        sup = Supervisor(opts, echo)
        sup.state = state
        launchers: dict[str, Callable[[], Launched]] = {
            "prefect": sup.launch_prefect,
            "mlflow": sup.launch_mlflow,
            "worker": sup.launch_worker,
            "model-server": sup.launch_model_server,
            "webhook-bridge": sup.launch_bridge,
        }
        if component not in launchers:
            raise StackError(f"unknown component {component!r}; choose from {', '.join(COMPONENTS)}")
        return sup.wait_healthy(launchers[component]())
