"""What every `mlops` command shares: one-line errors, config checks, running a flow in-process.

The config, settings, stack and MLflow modules, and the private Prefect API's launcher, are imported
inside the functions that use them: `mlops --help` imports this module and needs none of them
(measured: each pulls pydantic or more; the launcher costs about 1 ms). The tricks: mlops.core.startup.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import typer

from mlops.core.errors import MLOpsError
from mlops.core.startup import WaitTimeout, frozen_imports, http_ok, preload, wait_until

STACK_API_WAIT = 60.0  # seconds a command waits for a running stack's Prefect API to answer


def version_label(version: Any) -> str:
    """`v3`, or `none` when there is no version (never `vNone`)."""
    return f"v{version}" if version not in (None, "", "None") else "none"


def when(iso: Any) -> str:
    """A recorded ISO time as people read it, to the second: `2026-06-01 13:45:07 UTC` (the record keeps
    nanoseconds); anything else as it is."""
    text = str(iso or "")
    if len(text) >= 19 and text[10] == "T" and text.endswith(("+00:00", "Z")):
        return f"{text[:10]} {text[11:19]} UTC"
    return text or "?"


def clip(text: Any, limit: int) -> str:
    """`text` on one line, at most about `limit` characters, cut at a word boundary with `...`."""
    line = " ".join(str(text or "").split())
    if len(line) <= limit:
        return line
    head = line[:limit].rsplit(" ", 1)[0] if " " in line[:limit] else line[:limit]
    return head.rstrip(" ,;:") + " ..."


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line on stderr and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool = True) -> Iterator[None]:
    """While a `--json` command works, whatever a library prints on stdout goes to stderr instead, so the
    command's stdout holds only its JSON (printed after this block)."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def check_config(config: Path) -> Any:
    """Load and validate a config; a bad one ends here, before any work starts."""
    from mlops.core.config import load_config

    try:
        return load_config(config)
    except MLOpsError as exc:
        fail(str(exc), exc.exit_code)


def check_data_path(cfg: Any, path: str) -> None:
    """A `--data` path that loading would refuse or not find ends here, in one line, before a run starts."""
    from mlops.core.data import check_given_path
    from mlops.core.settings import get_settings

    try:
        check_given_path(cfg, path, get_settings())
    except MLOpsError as exc:
        fail(str(exc), exc.exit_code)


def use_running_stack() -> str | None:
    """Point this process at the stack `mlops up` runs from this state folder, if one runs; returns
    its Prefect API URL.

    A second Prefect API on the stack's SQLite database would fight its server for the write lock
    ("database is locked", minutes of retries), and the stack's artifacts live behind its MLflow
    server. So, unless `PREFECT_API_URL` / `MLFLOW_TRACKING_URI` are set, a live stack's servers are
    used; its prediction-log hash key too (so labels join hashed ids), unless MLOPS_LOG_HASH_KEY is set.
    """
    from mlops.core.settings import get_settings
    from mlops.stack.options import HASH_KEY_FILE
    from mlops.stack.processes import read_state

    settings = get_settings()
    key_file = settings.state_dir / HASH_KEY_FILE
    if settings.log_hash_key is None and key_file.is_file():
        os.environ["MLOPS_LOG_HASH_KEY"] = key_file.read_text().strip()
    try:
        state = read_state(settings.state_dir)
    except (MLOpsError, OSError, ValueError, TypeError):
        return None  # an unreadable pid file: no stack to use; `mlops up` reports it
    if state is None:
        return None
    prefect, mlflow = state.processes.get("prefect"), state.processes.get("mlflow")
    api = None
    if settings.prefect_api_url is None and prefect is not None and prefect.url and prefect.alive():
        api = os.environ["PREFECT_API_URL"] = f"{prefect.url}/api"
        auth = settings.prefect_client_auth_string
        if auth:
            os.environ.setdefault("PREFECT_API_AUTH_STRING", auth)
    if settings.mlflow_tracking_uri is None and mlflow is not None and mlflow.url and mlflow.alive():
        os.environ["MLFLOW_TRACKING_URI"] = mlflow.url
        os.environ.setdefault("MLOPS_ARTIFACT_ROOT", "mlflow-artifacts:/")  # as the stack's own flows store them
    if api:
        typer.echo(f"using the stack running from {settings.state_dir} (Prefect API {api})", err=True)
        try:  # the stack may still be starting
            wait_until(lambda: http_ok(f"{api}/health"), STACK_API_WAIT, "the stack's Prefect API did not answer",
                       interval=0.5, detail=lambda: "see `mlops stack-status` and `mlops logs prefect`")
        except WaitTimeout as exc:
            fail(str(exc))
    return api


def prepare_flow_process(*modules: str) -> Any:
    """Get this process ready to run flows; returns the settings.

    Uses the running stack's servers when `mlops up` runs from this state folder (`use_running_stack`);
    otherwise starts the private Prefect API (unless `PREFECT_API_URL` names one) before anything imports
    Prefect, imports `modules` and opens the MLflow store while the server boots on the other core,
    then waits for it. The cyclic GC is off during the imports and the imported heap is frozen after
    them: collections would otherwise walk hundreds of thousands of module objects, again and again,
    for nothing (about a second per run). Callers name what their flow needs later too (the training
    flow's registration and plots): imported here it overlaps the server's boot, while imported where
    it is used it would run on the flow's critical path with the collector on (and on a thread it
    competes for the GIL with the flow's own start; measured in docs/benchmarks.md).
    """
    from mlops.cli import local_api
    from mlops.core.settings import configure_environment

    use_running_stack()
    settings = configure_environment()
    local_api.start_local_api()
    with frozen_imports():  # the store's opening too (SQLAlchemy, MLflow's schema check)
        preload("mlflow", *modules)
        import mlflow

        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.MlflowClient().search_experiments(max_results=1)  # creates or upgrades the store once
    local_api.wait_local_api()
    return settings


class _ExitProgressFilter:
    def filter(self, record: Any) -> bool:
        return not str(record.msg).startswith("Still processing items")


class _TaskDoneFilter:
    """Keeps each task's "Finished in state Completed()" line off the console (the run's logs in the UI keep
    them); a task that failed or retried still shows."""

    def filter(self, record: Any) -> bool:
        return not (record.name == "prefect.task_runs" and str(record.msg).startswith("Finished in state Completed"))


class _UserErrorOnceFilter:
    """A user's error (bad data, a missing file: an MLOpsError) reached the console four times, from the task
    and the flow, each as a failure and as a final state, and then once more as the command's `error:` line.
    The console keeps that last one: records the run loggers marked as a user error, and any later record
    repeating its text, stay in the run's logs (the UI) only."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def filter(self, record: Any) -> bool:
        text = getattr(record, "mlops_user_error", None)
        if text:
            if text not in self.seen:
                self.seen.append(text)
            return False
        if self.seen and record.name in {"prefect.task_runs", "prefect.flow_runs"}:
            message = record.getMessage()
            return not any(t in message for t in self.seen)
        return True


def quiet_console() -> None:
    """Leave the per-task "Finished in state Completed()" lines, and the repeats of a user's error that the
    command prints itself, out of Prefect's console output only."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if not isinstance(handler, PrefectConsoleHandler):
            continue
        for kind in (_TaskDoneFilter, _UserErrorOnceFilter):
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())


def run_flow(fn: Any, **params: Any) -> Any:
    """Run a flow in-process; a failed run becomes one line on stderr and a non-zero exit."""
    import logging

    from mlops.cli import local_api

    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).setLevel(logging.INFO)
    quiet_console()
    # A progress note while the last logs and events go out at exit ("Still processing items")
    # would follow a one-line error as if it were another; their other warnings stay.
    for name in ("EventsWorker", "APILogWorker"):
        worker_log = logging.getLogger(name)
        if not any(isinstance(f, _ExitProgressFilter) for f in worker_log.filters):
            worker_log.addFilter(_ExitProgressFilter())
    if local_api.current() is not None:
        # Heartbeats let a server mark a run whose process died as crashed; this server ends with the
        # process, so there is nothing to tell it (and the engine waits up to a second for its
        # heartbeat thread at the end of every run).
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            state = fn(**params, return_state=True)
    else:
        state = fn(**params, return_state=True)
    if state.is_completed():
        return state.result()
    try:
        state.result()
    except MLOpsError as exc:
        fail(str(exc), exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - one line; the flow log has the rest
        fail(state.message or f"{type(exc).__name__}: {exc}", 1)
    fail(state.message or "flow run failed", 1)
