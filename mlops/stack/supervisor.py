"""The local stack behind `mlops up` / `mlops down`: every server of the system on loopback.

`up` starts `prefect server start`, `mlflow server`, the model server and the webhook bridge at once
(none of their health checks needs another); as soon as Prefect answers it creates the work pool,
runs `prefect deploy` on `prefect.yaml` with the variables that file reads, installs the alert and
crash-detection automations, and starts `prefect worker start` (after marking runs whose process
died with an earlier worker as Crashed). It returns when every process answers its health check and
the model server serves the champion, or MLflow says there is none yet (mlops/stack/readiness.py);
while it waits it says which component it waits for (`parallel=False` starts them one by one
instead, as a baseline for the benchmark). `restart_component` stops and starts one of them.
The production profile first starts its own PostgreSQL (mlops/stack/postgres.py) and puts Prefect's
database and MLflow's store on it (unless URLs are given), and runs two workers on the pool.

Each process runs in its own session, logs to `$MLOPS_HOME/logs/<name>.log`, and is recorded with
its pid and creation time in `$MLOPS_HOME/stack.json` (mlops/stack/processes.py); `down` stops
exactly those processes and what they started, never anything found by name. Options, ports and
environment are in mlops/stack/options.py; what is deployed, and how, in deployments/. Nothing here
runs at import.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployments.apply import WORK_POOL_TYPE, apply_plan
from deployments.plan import DeploymentError, deploy_variables, plan_deployments
from mlops.core.errors import MLOpsError
from mlops.core.settings import private_opener
from mlops.core.startup import SQLITE_URL_PREFIX, http_ok, seed_prefect_database
from mlops.stack.options import (
    COMPONENTS,
    LABELS,
    QUEUED_RUN_RETRY_SECONDS,
    SERVER_CLIENT_RETRIES,
    SQLITE_PREFECT_SETTINGS,
    WORKER_PREFETCH_SECONDS,
    StackError,
    StackOptions,
    base_env,
    check_ports,
    load_log_hash_key,
    load_webhook_secrets,
    prefect_auth_header,
    private_secret,
)
from mlops.stack.postgres import DATABASES, LocalPostgres
from mlops.stack.processes import (
    ProcessRecord,
    StackState,
    is_flow_process,
    kill_tree,
    live_process,
    pid_file,
    read_state,
    stack_lock,
    stop_postgres,
    timestamp,
    write_state,
)
from mlops.stack.processes import kill_component as kill_component  # re-exported: `stack.kill_component(...)`
from mlops.stack.processes import log_file as log_file  # re-exported: `stack.log_file(...)`
from mlops.stack.readiness import HEALTH_PATHS, PROGRESS_SECONDS, Serving, read_ready, tail, wait_healthy, wait_serving
from mlops.stack.readiness import ComponentStatus as ComponentStatus  # re-exported: `stack.status(...)`
from mlops.stack.readiness import status as status

STEP_TITLES = {
    "postgres": "starting PostgreSQL (production profile)",
    "databases": f"creating the {' and '.join(DATABASES)} databases",
    "prefect": "starting the Prefect server",
    "mlflow": "starting the MLflow server",
    "deploy": "creating the work pool and deploying the flows",
    "automations": "installing alert and crash-detection automations",
    "worker": "starting the Prefect worker",
    "worker-2": "starting the second Prefect worker",
    "model-server": "starting the model server",
    "webhook-bridge": "starting the webhook bridge",
    "champion": "waiting for the model server to load the champion",
}

Echo = Callable[[str], None]


# ---- starting processes -----------------------------------------------------------------------


class Supervisor:
    """Starts the stack's processes, recording each in the pid file as it starts.

    Each started process is watched by `wait_healthy` on a thread from launch, so a server that comes
    up while `up` waits on another is timed right.
    """

    def __init__(self, opts: StackOptions, echo: Echo | None = None, state: StackState | None = None) -> None:
        self.opts = opts
        self.echo = echo or (lambda _m: None)
        self.env = base_env(opts)
        self.state = state or StackState(state_dir=str(opts.state_dir), started_at=timestamp(), supervisor_pid=os.getpid())
        self.bin = Path(sys.executable).parent
        # the production profile's own PostgreSQL, when a back end has no URL of its own
        self.pg = LocalPostgres(opts.state_dir, opts.pg_port, environ=opts.environ) if opts.needs_postgres else None
        self._stop = threading.Event()
        self._watchers = ThreadPoolExecutor(max_workers=len(LABELS), thread_name_prefix="mlops-health")

    def close(self) -> None:
        """Stop watching (after a failure or Ctrl-C: the watcher threads end at their next poll)."""
        self._stop.set()
        self._watchers.shutdown(wait=False, cancel_futures=True)

    def launchers(self) -> dict[str, Callable[[], Future[float]]]:
        workers = {name: (lambda n=name: self.launch_worker(n)) for name in self.opts.worker_names}
        return {"postgres": self.launch_postgres, "prefect": self.launch_prefect, "mlflow": self.launch_mlflow,
                **workers, "model-server": self.launch_model_server, "webhook-bridge": self.launch_bridge}

    # -- helpers --
    def log_path(self, name: str) -> Path:
        return self.opts.logs_dir / f"{name}.log"

    def start(self, name: str, cmd: list[str], env: dict[str, str], probe: Callable[[], bool], *,
              url: str | None = None, popen: dict[str, Any] | None = None) -> Future[float]:
        """Start a long-running process in its own session, record it, and watch it become healthy
        (`popen`: more Popen arguments, such as the user PostgreSQL runs as)."""
        log = self.log_path(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab", opener=private_opener) as out:
            out.write(f"\n=== {timestamp()} mlops up: {shlex.join(cmd)}\n".encode())
            out.flush()
            # umask 077: the databases, artifacts and logs the servers create are their owner's only
            proc = subprocess.Popen(cmd, cwd=self.opts.project_dir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                    **{"umask": 0o077, **(popen or {})})
        started = live_process(proc.pid)
        url = url or self.opts.url(name)
        rec = ProcessRecord(name=name, pid=proc.pid, create_time=started.create_time() if started else None, cmd=cmd,
                            log=str(log), url=url, started_at=timestamp())
        self.state.processes[name] = rec
        if url:
            self.state.urls[name] = url
        write_state(self.state)
        return self._watchers.submit(wait_healthy, rec, probe, LABELS[name], self.opts.timeout, self._stop)

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
            fh.write(f"\n=== {timestamp()} mlops up: {shlex.join(cmd)} (exit {res.returncode})\n{res.stdout}{res.stderr}")
        if res.returncode != 0:
            raise StackError(f"`{' '.join(cmd[1:4])}` failed (exit {res.returncode}); last lines of {log}:\n"
                             + "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:]))
        return res.stdout

    def health(self, name: str) -> Callable[[], bool]:
        """The probe of a server: its health URL answers 200."""
        url = f"{self.opts.url(name)}{HEALTH_PATHS[name]}"
        return lambda: http_ok(url)

    def api(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        resp = httpx.request(method, f"{self.opts.api_url}{path}", headers=prefect_auth_header(self.env),
                             timeout=15.0, **kw)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.json() if resp.content else None

    # -- components --
    def launch_postgres(self) -> Future[float]:
        """The production profile's PostgreSQL: initialised once in the state folder, then started."""
        pg = self.prepare_postgres()
        env = {k: v for k, v in self.env.items() if not k.startswith(("PG", "MLOPS_", "PREFECT_", "MLFLOW_"))}
        return self.start("postgres", pg.command(), env, pg.answers, url=f"postgresql://{pg.host}:{pg.port}",
                          popen=pg.popen_kwargs())

    def prepare_postgres(self) -> LocalPostgres:
        """The cluster made once (initdb) and its folder open to the server's user; cheap when it exists."""
        if self.pg is None:
            raise StackError("this stack needs no PostgreSQL of its own (local profile, or database URLs given)")
        if self.pg.initialise():
            self.echo(f"  initialised a PostgreSQL cluster in {self.pg.data_dir}")
        return self.pg

    def create_databases(self) -> None:
        assert self.pg is not None
        for name in self.pg.ensure_databases():
            self.echo(f"  created database {name}")

    def launch_prefect(self) -> Future[float]:
        o, env = self.opts, dict(self.env)
        home = o.state_dir / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        if o.settings.prefect_database_url is None and self.pg is not None:
            # by environment, never on the command line: the URL holds the password
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.pg.url("prefect", "+asyncpg")
        elif o.settings.prefect_database_url is None:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"{SQLITE_URL_PREFIX}{home / 'prefect.db'}"
            for key, value in SQLITE_PREFECT_SETTINGS.items():
                env.setdefault(key, value)
            if seed_prefect_database(env["PREFECT_SERVER_DATABASE_CONNECTION_URL"]):
                self.echo("  seeded a new Prefect database, already migrated")
        env.setdefault("PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT", "false")
        env.setdefault("PREFECT_UI_API_URL", o.api_url)
        # a run queued behind a deployment's concurrency limit (files arriving together, ENQUEUE) asks for the
        # slot again after this long; Prefect's 30 s default left the next file idle for up to 30 s
        env.setdefault("PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS", QUEUED_RUN_RETRY_SECONDS)
        env.setdefault("PREFECT_CLIENT_MAX_RETRIES", SERVER_CLIENT_RETRIES)  # its automations' actions
        cmd = [str(self.bin / "prefect"), "server", "start", "--host", o.host, "--port", str(o.prefect_port)]
        return self.start("prefect", cmd, env, self.health("prefect"))

    def launch_mlflow(self) -> Future[float]:
        o, s, env = self.opts, self.opts.settings, dict(self.env)
        artifacts = o.state_dir / "mlartifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        # the store URI may hold a database password: MLflow reads it from its own variable, so it is
        # neither on the command line (ps, the log, the pid file) nor logged
        env["MLFLOW_BACKEND_STORE_URI"] = (s.mlflow_backend_store_uri.get_secret_value() if s.mlflow_backend_store_uri
                                           else self.pg.url("mlflow") if self.pg is not None
                                           else f"sqlite:///{o.state_dir / 'mlflow.db'}")
        # MLflow 3 starts a job runner and a Huey consumer per GenAI job (LLM scorers, prompt optimisation,
        # issue detection) plus one for periodic tasks: 8 processes, ~1.8 GiB resident, nothing this
        # project uses. Off unless asked (--mlflow-jobs, or the variable set in the environment).
        if o.mlflow_jobs:
            env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true"
        else:
            env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        destination = s.mlflow_artifacts_destination or str(artifacts)
        cmd = [str(self.bin / "mlflow"), "server", "--serve-artifacts",
               "--artifacts-destination", destination, "--default-artifact-root", "mlflow-artifacts:/",
               "--host", o.host, "--port", str(o.mlflow_port), "--workers", str(s.mlflow_workers)]
        if o.mlflow_basic_auth:
            ini = o.state_dir / "mlflow" / "basic_auth.ini"
            ini.parent.mkdir(parents=True, exist_ok=True)
            ini.write_text(
                "[mlflow]\n"
                "default_permission = READ\n"
                f"database_uri = sqlite:///{o.state_dir / 'mlflow' / 'basic_auth.db'}\n"
                f"admin_username = {s.mlflow_tracking_username}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
            if s.mlflow_flask_secret_key is None:  # CSRF key: kept across restarts, private
                env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = private_secret(ini.parent / "flask_secret_key")
            assert s.mlflow_tracking_password is not None  # base_env refused basic auth without it
            env.setdefault("MLFLOW_AUTH_ADMIN_PASSWORD", s.mlflow_tracking_password.get_secret_value())
            cmd += ["--app-name", "basic-auth"]
        return self.start("mlflow", cmd, env, self.health("mlflow"))

    def deploy(self, monitor_cron: str) -> None:
        """Create the work pool(s) and deploy the flows of the deployments file (deployments/: plan, apply)."""
        o = self.opts
        try:
            variables = deploy_variables(o.config_path, monitor_cron, o.project_dir, o.profile, o.schedules)
            plan = plan_deployments(o.prefect_file, o.project_dir, variables, o.environ)
            for skipped in plan.skipped:
                self.echo(f"  skipped deployment {skipped}")
            self.state.work_pool = plan.work_pools[0] if plan.work_pools else None
            env = {**self.env, **plan.variables}
            apply_plan(plan, str(self.bin / "prefect"), lambda cmd, timeout: self.run_step("deploy", cmd, env, timeout),
                       self.api, self.log_path("deploy"))
        except DeploymentError as exc:
            raise StackError(str(exc)) from None
        self.state.deployments = plan.names
        write_state(self.state)

    def configure_automations(self) -> None:
        """Alerts (when a webhook URL is given or the block exists) and crash detection, via mlops.alerts."""
        cmd = [sys.executable, "-m", "mlops.stack.alerts", "--crash-detection"]
        env = dict(self.env)
        env.pop("MLOPS_ALERT_WEBHOOK_URL", None)
        if self.opts.alert_url:  # by environment: the command line is logged, the URL may hold a token
            env["MLOPS_ALERT_WEBHOOK_URL"] = self.opts.alert_url
        out = self.run_step("automations", cmd, env, timeout=120)
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
            host, _, pid = str(run.get("infrastructure_pid") or "").rpartition(":")
            if not pid.isdigit() or host not in ("", me) or is_flow_process(int(pid)):
                continue
            self.api("POST", f"/flow_runs/{run['id']}/set_state", json={
                "state": {"type": "CRASHED", "name": "Crashed",
                          "message": "its process is gone (the worker stopped while it ran); marked Crashed "
                                     "by `mlops up`"},
                "force": True,
            })
            fixed.append(str(run.get("name") or run["id"]))
        return fixed

    def launch_worker(self, record: str = "worker") -> Future[float]:
        """One process worker on the pool (`worker`, or `worker-2`... on the production profile)."""
        o, env = self.opts, dict(self.env)
        pool = self.state.work_pool
        if not pool:
            raise StackError("no work pool to start a worker on; run the deploy step first")
        if record == "worker" or "worker" not in self.state.processes:  # once per start, not per worker
            for name in self.recover_orphaned_runs():
                self.echo(f"  marked flow run {name} Crashed (its process died with an earlier worker)")
        env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
        # flow runs log at INFO so the Prefect UI shows what each stage did
        env["PREFECT_LOGGING_LEVEL"] = o.settings.flow_log_level
        env.setdefault("PREFECT_WORKER_QUERY_SECONDS", f"{o.worker_poll_seconds:g}")
        env.setdefault("PREFECT_WORKER_PREFETCH_SECONDS", WORKER_PREFETCH_SECONDS)
        env["MLOPS_LOG_HASH_KEY"] = load_log_hash_key(o)  # batch scoring hashes, monitoring joins labels
        worker_name = f"{pool}-{socket.gethostname()}" + record.removeprefix("worker")
        cmd = [str(self.bin / "prefect"), "worker", "start", "--pool", pool, "--type", WORK_POOL_TYPE,
               "--name", worker_name]
        if o.settings.worker_limit is not None:  # runs beyond it stay Scheduled for another worker, or for later
            cmd += ["--limit", str(o.settings.worker_limit)]

        def online() -> bool:
            workers = self.api("POST", f"/work_pools/{pool}/workers/filter", json={"limit": 50}) or []
            return any(w.get("name") == worker_name and w.get("status") == "ONLINE" for w in workers)

        return self.start(record, cmd, env, online)

    def launch_model_server(self) -> Future[float]:
        o = self.opts
        cmd = [sys.executable, "-m", "mlops.serving", "--config", str(o.config_path),
               "--host", o.host, "--port", str(o.serve_port), "--log-level", "warning"]
        if o.serve_poll_seconds is not None:
            cmd += ["--poll-seconds", f"{o.serve_poll_seconds:g}"]
        # by environment, never on the command line: sensitive columns are hashed, not dropped
        env = {**self.env, "MLOPS_LOG_HASH_KEY": load_log_hash_key(o)}
        return self.start("model-server", cmd, env, self.health("model-server"))

    def mlflow_auth(self) -> tuple[str, str] | None:
        s = self.opts.settings
        if self.opts.mlflow_basic_auth and s.mlflow_tracking_username and s.mlflow_tracking_password:
            return s.mlflow_tracking_username, s.mlflow_tracking_password.get_secret_value()
        return None

    def wait_champion(self) -> Serving | None:
        """Wait until the model server serves the champion, or MLflow says there is none (None when the
        model server or MLflow is not part of this stack)."""
        model = self.state.model_name
        rec = self.state.processes.get("model-server")
        if not model or rec is None or ("mlflow" not in self.state.processes and not self.opts.external_mlflow):
            return None
        self.echo(f"{STEP_TITLES['champion']} ...")
        return wait_serving(
            str(self.opts.url("model-server")), self.opts.mlflow_url, model, self.opts.timeout,
            auth=self.mlflow_auth(), progress=self.echo, stop=self._stop,
            gone=lambda: None if rec.alive() else f"the model server exited while loading the champion; last lines "
                                                  f"of {rec.log}:\n{tail(Path(rec.log))}",
            detail=lambda: f"its /ready says: {read_ready(str(self.opts.url('model-server'))).reason or 'nothing'}")

    def launch_dask(self) -> Future[float]:
        """`--dask`: a Dask scheduler and workers (mlops/stack/dask_cluster.py), recorded like every process; what
        starts after it (the workers, their flow runs) finds it as MLOPS_DASK_ADDRESS."""
        from mlops.stack.dask_cluster import launch_for_stack

        cluster, records = launch_for_stack(self.opts, self.env, self.echo)
        self.state.processes.update(records)
        self.env["MLOPS_DASK_ADDRESS"] = self.state.urls["dask"] = cluster.address
        write_state(self.state)
        return self._watchers.submit(cluster.wait_ready, self.opts.timeout, self._stop)

    def launch_bridge(self) -> Future[float]:
        o = self.opts
        env = {**self.env, **load_webhook_secrets(o)}
        cmd = [sys.executable, "-m", "mlops.webhooks", "--config", str(o.webhooks_config),
               "--host", o.host, "--port", str(o.webhook_port), "--prefect-api-url", o.api_url,
               "--state-dir", str(o.state_dir / "webhooks"), "--log-level", "warning"]
        return self.start("webhook-bridge", cmd, env, self.health("webhook-bridge"))


# ---- up, down, status -------------------------------------------------------------------------


@dataclass
class UpResult:
    state: StackState
    timings: dict[str, float]
    total_seconds: float
    serving: Serving | None = None  # the champion the model server serves (None: no model server or MLflow)


def up(opts: StackOptions, echo: Echo | None = None) -> UpResult:
    """Start the stack and return once every component is healthy and the model server serves the
    champion (or MLflow says there is none yet); on failure stop what was started."""
    say = echo or (lambda _m: None)
    unknown = [c for c in opts.components if c not in COMPONENTS]
    if unknown:
        raise StackError(f"unknown component(s) {', '.join(unknown)}; choose from {', '.join(COMPONENTS)}")
    from mlops.core.config import load_config

    try:
        cfg = load_config(opts.config_path)
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
        sup.state.model_name = cfg.registry.model_name
        sup.state.options = opts.record()
        if opts.external_mlflow:
            sup.state.urls["mlflow"] = opts.external_mlflow
        write_state(sup.state)
        timings: dict[str, float] = {}
        serving: Serving | None = None
        try:
            dask = sup.launch_dask() if opts.settings.dask_workers else None
            _bring_up(sup, cfg.monitoring.schedule_cron, set(opts.processes), opts.parallel, timings, say)
            if dask is not None:
                timings["dask"] = dask.result()
            t0 = time.monotonic()
            if (serving := sup.wait_champion()) is not None:
                timings["champion"] = time.monotonic() - t0
                say(f"  {serving.summary(cfg.registry.model_name)}")
        except BaseException:
            sup.close()
            _stop_all(sup.state, say, grace=10.0)
            pid_file(opts.state_dir).unlink(missing_ok=True)
            raise
        sup.close()
        write_state(sup.state)
    return UpResult(sup.state, timings, time.monotonic() - t_start, serving)


def _bring_up(sup: Supervisor, monitor_cron: str, want: set[str], parallel: bool, timings: dict[str, float],
              say: Echo) -> None:
    """Start the wanted components in dependency order.

    Parallel (the default): every server that needs nothing else starts at once (Prefect, MLflow,
    model server, bridge: their health checks do not call each other); deploy, automations and the
    worker follow as soon as Prefect answers. Sequential: one after the other, each healthy first.
    """
    launchers = sup.launchers()
    pending: dict[str, Future[float]] = {}
    started: dict[str, float] = {}

    def wait(name: str) -> None:
        if name not in pending:
            return
        while True:  # say every PROGRESS_SECONDS which components are still starting
            try:
                timings[name] = pending[name].result(timeout=PROGRESS_SECONDS)
                break
            except FutureTimeout:
                now = time.monotonic()
                waiting = [f"{LABELS[n]} ({now - started[n]:.0f} s)" for n, f in pending.items() if not f.done()]
                say(f"  still starting: {', '.join(waiting)}")
        del pending[name]
        say(f"  {LABELS[name]} ready in {timings[name]:.1f} s")

    def launch(name: str, wait_now: bool = False) -> None:
        if name in want:
            say(f"{STEP_TITLES[name]} ...")
            started[name] = time.monotonic()
            pending[name] = launchers[name]()
            if not parallel or wait_now:
                wait(name)

    def timed(name: str, fn: Callable[[], object]) -> None:
        say(f"{STEP_TITLES[name]} ...")
        t0 = time.monotonic()
        fn()
        timings[name] = time.monotonic() - t0

    servers = ("prefect", "mlflow", "model-server", "webhook-bridge") if parallel else ("prefect", "mlflow")
    if "postgres" in want:  # the back ends need their databases; the others start meanwhile
        # the cluster's folder first: a server started meanwhile tightens the state folder unless it is there
        sup.prepare_postgres()
        for name in servers[2:]:
            launch(name)
        launch("postgres", wait_now=True)
        timed("databases", sup.create_databases)
    for name in servers:
        if name not in pending and name not in timings:
            launch(name)
    workers = sorted(n for n in want if n.startswith("worker"))
    if workers:
        wait("prefect")
        timed("deploy", lambda: sup.deploy(monitor_cron))
        timed("automations", sup.configure_automations)
        for name in workers:
            launch(name)
        for name in workers:
            wait(name)
    if not parallel:
        launch("model-server")
        launch("webhook-bridge")
    for name in list(pending):
        wait(name)


def _stop_all(state: StackState, say: Echo, grace: float) -> list[str]:
    """Stop every recorded process, newest first; PostgreSQL last, by its fast shutdown."""
    stopped = []
    for name in sorted(reversed(list(state.processes)), key=lambda n: n == "postgres"):
        rec = state.processes[name]
        if stop_postgres(rec, grace) if name == "postgres" else kill_tree(rec, signal.SIGTERM, grace=grace):
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
class Restarted:
    name: str
    pid: int
    seconds: float  # until healthy (and, for the model server, serving or sure there is no champion)
    serving: Serving | None = None


def restart_component(opts: StackOptions, component: str, echo: Echo | None = None) -> Restarted:
    """Stop one component (if it runs) and start it again as `up` did, recorded in the pid file.

    Returns once it is healthy; the model server once it serves the champion or MLflow says there is
    none, the worker after marking runs whose process died with it as Crashed.
    """
    say = echo or (lambda _m: None)
    if component not in COMPONENTS and component not in opts.processes:
        raise StackError(f"unknown component {component!r}; choose from {', '.join(COMPONENTS)} (production "
                         "profile: also postgres, worker-2)")
    with stack_lock(opts.state_dir):
        state = read_state(opts.state_dir)
        if state is None:
            raise StackError(f"no stack is recorded in {opts.state_dir}; run `mlops up`")
        rec = state.processes.get(component)
        if rec is not None and rec.alive():
            say(f"stopping the {LABELS[component]} (pid {rec.pid}) ...")
            del state.processes[component]  # `up --foreground` must not take it for a crash
            write_state(state)
            kill_tree(rec, signal.SIGTERM, grace=15.0)
        sup = Supervisor(opts, say, state)
        t0 = time.monotonic()
        try:
            say(f"{STEP_TITLES[component]} ...")
            sup.launchers()[component]().result()
            serving = sup.wait_champion() if component == "model-server" else None
        finally:
            sup.close()
        new = state.processes[component]
        return Restarted(component, new.pid, time.monotonic() - t0, serving)
