"""`mlops up`, `mlops down`, `mlops restart`, `mlops stack-status`, `mlops logs`: the local stack from the
command line.

Registered in mlops/cli/main.py; also runnable alone as `python -m mlops.cli.stack up|down|restart|stack-status|logs`.
The stack's modules, the settings and the deployment plan are imported inside the commands (pydantic, YAML):
`mlops --help` imports this module.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlops.cli.common import check_config
from mlops.cli.common import fail as _fail
from mlops.core.errors import SettingsError

if TYPE_CHECKING:
    from mlops.stack.processes import ProcessRecord, StackState

StateOpt = Annotated[Path | None, typer.Option("--state-dir", help="state folder (default: $MLOPS_HOME or .mlops)")]


def _state_dir(state_dir: Path | None) -> Path:
    if state_dir is not None:
        return state_dir.expanduser().resolve()
    from mlops.core.settings import get_settings

    try:
        return get_settings().state_dir
    except SettingsError as exc:
        _fail(str(exc), exc.exit_code)


def _say(message: str) -> None:
    typer.echo(message, err=True)


def up_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="pipeline config the deployments use "
                                                "(default: $MLOPS_CONFIG or configs/default.yaml)")] = None,
    state_dir: StateOpt = None,
    profile: Annotated[str | None, typer.Option(help="local (SQLite files, one worker) or production (PostgreSQL, "
                                                "artifacts served by MLflow, two workers) ($MLOPS_STACK_PROFILE)")]
    = None,
    pg_port: Annotated[int | None, typer.Option(help="the production profile's PostgreSQL port ($MLOPS_PG_PORT, "
                                                "5433)")] = None,
    workers: Annotated[int | None, typer.Option(help="process workers on the pool ($MLOPS_WORKERS; 1 local, "
                                                "2 production)")] = None,
    dask: Annotated[bool, typer.Option("--dask", help="also start a Dask scheduler and workers on loopback for "
                                       "tuning and batch scoring; flows get its address as MLOPS_DASK_ADDRESS")] = False,
    dask_workers: Annotated[int | None, typer.Option(help="Dask workers (implies --dask; $MLOPS_DASK_WORKERS, 2; each "
                                                     "1 thread, $MLOPS_DASK_MEMORY_LIMIT 2GiB)")] = None,
    host: Annotated[str | None, typer.Option(help="interface to bind (default: $MLOPS_HOST or 127.0.0.1)")] = None,
    prefect_port: Annotated[int | None, typer.Option(help="Prefect server port ($MLOPS_PREFECT_PORT, 4200)")] = None,
    mlflow_port: Annotated[int | None, typer.Option(help="MLflow server port ($MLOPS_MLFLOW_PORT, 5000)")] = None,
    serve_port: Annotated[int | None, typer.Option(help="model server port ($MLOPS_SERVE_PORT, 8000)")] = None,
    webhook_port: Annotated[int | None, typer.Option(help="webhook bridge port ($MLOPS_WEBHOOK_PORT, 4300)")] = None,
    prefect_file: Annotated[Path | None, typer.Option(help="deployments file (default: prefect.yaml of the "
                                                      "project)")] = None,
    webhooks_config: Annotated[Path | None, typer.Option(help="webhook sources (default: "
                                                         "configs/webhooks.yaml)")] = None,
    alert_url: Annotated[str | None, typer.Option(help="POST alerts to this webhook URL "
                                                  "($MLOPS_ALERT_WEBHOOK_URL)")] = None,
    mlflow_basic_auth: Annotated[bool, typer.Option("--mlflow-basic-auth", help="turn on MLflow basic auth "
                                                    "(MLFLOW_TRACKING_USERNAME/PASSWORD)")] = False,
    mlflow_jobs: Annotated[bool, typer.Option("--mlflow-jobs", help="run MLflow's job-execution workers (GenAI "
                                              "scorers, prompt optimisation; ~1.8 GiB; off by default)")] = False,
    no_schedules: Annotated[bool, typer.Option("--no-schedules", help="deploy schedules paused")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="start only these components (repeat)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds each server may take to become healthy (and the model "
                                           "server to load the champion)")] = 120.0,
    foreground: Annotated[bool, typer.Option("--foreground", help="stay attached; Ctrl-C stops the stack")] = False,
) -> None:
    """Start the whole stack on loopback: Prefect server, MLflow server, worker, model server, webhook bridge."""
    from mlops.stack import supervisor as stack
    from mlops.stack.options import SECRETS_FILE

    environ = dict(os.environ)
    if dask_workers is not None:  # the stack reads it through its settings (mlops.core.settings: dask_workers)
        environ["MLOPS_DASK_WORKERS"] = str(dask_workers)
    elif dask and not environ.get("MLOPS_DASK_WORKERS", "").strip():
        environ["MLOPS_DASK_WORKERS"] = "2"
    try:
        opts = stack.StackOptions.from_env(
            environ, state_dir=state_dir, config_path=config, host=host, prefect_port=prefect_port, mlflow_port=mlflow_port,
            serve_port=serve_port, webhook_port=webhook_port, prefect_file=prefect_file,
            webhooks_config=webhooks_config, alert_url=alert_url, mlflow_basic_auth=mlflow_basic_auth or None,
            mlflow_jobs=mlflow_jobs or None, schedules=False if no_schedules else None, components=tuple(only) if only else None, timeout=timeout,
            profile=profile, pg_port=pg_port, workers=workers,
        )
        result = stack.up(opts, _say)
    except stack.StackError as exc:
        _fail(str(exc), exc.exit_code)
        return
    except KeyboardInterrupt:
        _fail("interrupted; the processes started so far were stopped", 130)
        return
    typer.echo("")
    typer.secho(f"The stack is up ({result.total_seconds:.1f} s, profile {opts.profile}).", fg=typer.colors.GREEN)
    if result.serving is not None:
        problem = result.serving.champion is not None and bool(result.serving.problem)
        typer.secho(f"  {result.serving.summary(result.state.model_name or 'the model')}.",
                    fg=typer.colors.YELLOW if problem else None)
    _print_urls(result.state, opts)
    if "dask" in result.state.urls:
        typer.echo(f"  Dask scheduler  {result.state.urls['dask']} (MLOPS_DASK_ADDRESS for the flows)")
    if "postgres" in result.state.urls:
        from mlops.stack.postgres import PASSWORD_FILE, ROLE

        typer.echo(f"  PostgreSQL      {result.state.urls['postgres']} (role {ROLE}, password in "
                   f"{opts.state_dir / PASSWORD_FILE})")
    typer.echo(f"  logs            {opts.logs_dir}/   (mlops logs NAME)")
    typer.echo(f"  pid file        {stack.pid_file(opts.state_dir)}")
    secrets = opts.state_dir / SECRETS_FILE
    if secrets.exists():
        typer.echo(f"  webhook secrets {secrets}   (source it to sign deliveries)")
    typer.echo("Restart one component with `mlops restart NAME`; stop it all with `mlops down`.")
    if foreground:
        try:
            while all(p.alive() for p in _recorded(opts.state_dir, result.state).values()):
                time.sleep(1.0)
            dead = [n for n, p in _recorded(opts.state_dir, result.state).items() if not p.alive()]
            typer.secho(f"{', '.join(dead)} exited; stopping the stack", fg=typer.colors.RED, err=True)
        except KeyboardInterrupt:
            pass
        stack.down(opts.state_dir, _say)


def _recorded(state_dir: Path, started: StackState) -> dict[str, ProcessRecord]:
    """The processes the pid file records now (`mlops restart` replaces one), else those `up` started."""
    from mlops.stack.processes import read_state

    now = read_state(state_dir)
    return dict((now or started).processes)


def _print_urls(state: object, opts: object) -> None:
    from mlops.stack.options import StackOptions
    from mlops.stack.processes import StackState

    assert isinstance(state, StackState) and isinstance(opts, StackOptions)
    urls = state.urls
    rows = [
        ("Prefect UI", urls.get("prefect")),
        ("Prefect API", f"{urls['prefect']}/api" if "prefect" in urls else None),
        ("MLflow UI", urls.get("mlflow")),
        ("model server", urls.get("model-server")),
        ("webhooks", f"{urls['webhook-bridge']}/hooks/<source>" if "webhook-bridge" in urls else None),
    ]
    for label, url in rows:
        if url:
            typer.echo(f"  {label:15s} {url}")
    if state.work_pool:
        typer.echo(f"  work pool       {state.work_pool}: {', '.join(state.deployments)}")


def down_command(
    state_dir: StateOpt = None,
    grace: Annotated[float, typer.Option(help="seconds to wait after SIGTERM before SIGKILL")] = 15.0,
) -> None:
    """Stop the processes `mlops up` started (by pid, process group by process group)."""
    from mlops.stack import supervisor as stack

    try:
        stack.down(_state_dir(state_dir), _say, grace=grace)
    except stack.StackError as exc:
        _fail(str(exc), exc.exit_code)


def restart_command(
    component: Annotated[str, typer.Argument(help="prefect, mlflow, worker, model-server or webhook-bridge "
                                             "(production profile: also postgres, worker-2)")],
    state_dir: StateOpt = None,
    timeout: Annotated[float | None, typer.Option(help="seconds it may take to become healthy (default: as "
                                                  "`mlops up` was given)")] = None,
) -> None:
    """Stop one component of the running stack and start it again as `mlops up` did."""
    from dataclasses import replace

    from mlops.stack import supervisor as stack

    folder = _state_dir(state_dir)
    try:
        state = stack.read_state(folder)
        if state is None:
            _fail(f"no stack is recorded in {folder}; run `mlops up`")
        opts = stack.StackOptions.from_record(folder, state.options)
        if timeout is not None:
            opts = replace(opts, timeout=timeout)
        done = stack.restart_component(opts, component, _say)
    except stack.StackError as exc:
        _fail(str(exc), exc.exit_code)
        return
    except KeyboardInterrupt:
        _fail("interrupted; see `mlops stack-status`", 130)
        return
    typer.secho(f"Restarted the {stack.LABELS[component]} (pid {done.pid}) in {done.seconds:.1f} s.",
                fg=typer.colors.GREEN)
    if done.serving is not None:
        typer.echo(f"  {done.serving.summary(state.model_name or 'the model')}.")


def status_command(state_dir: StateOpt = None) -> None:
    """Each stack process: running or not, healthy or not, and its URL."""
    from mlops.stack import supervisor as stack
    from mlops.stack.processes import PID_FILE

    try:
        rows = stack.status(_state_dir(state_dir))
    except stack.StackError as exc:
        _fail(str(exc), exc.exit_code)
        return
    if not rows:
        typer.echo(f"The stack is not running (no {PID_FILE} in {_state_dir(state_dir)}).")
        raise typer.Exit(1)
    bad = False
    for r in rows:
        if not r.running:
            word, color, bad = "stopped", typer.colors.RED, True
        elif r.condition:  # degraded: serving, but something it needs is unreachable; loading: not yet
            word, color, bad = r.condition, typer.colors.YELLOW, bad or r.healthy is False
        elif r.healthy is False:
            word, color, bad = "unhealthy", typer.colors.YELLOW, True
        else:
            word, color = "ok", typer.colors.GREEN
        typer.echo(f"  {r.name:15s} " + typer.style(f"{word:10s}", fg=color)
                   + f" pid {r.pid or '-':<8} {r.url or ''} {r.detail}".rstrip())
    rss, count = sum(r.rss_bytes for r in rows), sum(r.processes for r in rows)
    if count:
        typer.echo(f"  memory          {rss / 2**30:.2f} GiB resident in {count} processes (RSS, with what each started)")
    if bad:
        raise typer.Exit(1)


def logs_command(
    component: Annotated[str, typer.Argument(help="prefect, mlflow, worker, model-server, webhook-bridge, "
                                             "deploy or automations (production: also postgres, worker-2)")],
    state_dir: StateOpt = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="how many of the last lines")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
) -> None:
    """Print the end of a stack process's log (logs live in $MLOPS_HOME/logs/)."""
    from mlops.stack import supervisor as stack

    try:
        path = stack.log_file(_state_dir(state_dir), component)
    except stack.StackError as exc:
        _fail(str(exc), exc.exit_code)
        return
    if not path.exists():
        _fail(f"no log yet at {path}; has `mlops up` run with this state folder?")
    typer.echo(stack.tail(path, lines))
    if follow:
        with open(path, errors="replace") as fh:
            fh.seek(0, os.SEEK_END)
            try:
                while True:
                    line = fh.readline()
                    if line:
                        typer.echo(line.rstrip("\n"))
                    else:
                        time.sleep(0.5)
            except KeyboardInterrupt:
                pass


def deploy_env_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="the use-case config the deployments run, as the "
                                         "worker hosts see it")] = Path("configs/default.yaml"),
    profile: Annotated[str, typer.Option(help="work pool mlops-<profile>; every deployment is tagged with it")]
    = "production",
    project_dir: Annotated[Path | None, typer.Option(help="where the code lives on the worker hosts (default: "
                                                     "this checkout)")] = None,
    no_schedules: Annotated[bool, typer.Option("--no-schedules", help="deploy schedules paused")] = False,
    python: Annotated[Path | None, typer.Option(help="the Python that runs the flows on the worker hosts (default: "
                                                "this one, under --project-dir when it is the checkout's .venv)")]
    = None,
) -> None:
    """Print, as `export` lines, the variables prefect.yaml reads, all from one use-case config.

    eval "$(mlops deploy-env --config /etc/mlops/churn.yaml --project-dir /opt/mlops/current)"; prefect deploy --all
    """
    import shlex

    from deployments.plan import DeploymentError, deploy_variables, worker_python
    from mlops.stack.options import REPO

    cfg = check_config(config)
    target = project_dir or REPO
    try:
        variables = deploy_variables(config, cfg.monitoring.schedule_cron, target, profile, not no_schedules,
                                     python or worker_python(target, REPO))
    except DeploymentError as exc:
        _fail(str(exc), exc.exit_code)
    for name, value in variables.items():
        typer.echo(f"export {name}={shlex.quote(value)}")


app = typer.Typer(add_completion=False, no_args_is_help=True, help="The local MLOps stack.")
app.command("up")(up_command)
app.command("down")(down_command)
app.command("restart")(restart_command)
app.command("stack-status")(status_command)
app.command("logs")(logs_command)
app.command("deploy-env")(deploy_env_command)

if __name__ == "__main__":
    app()
