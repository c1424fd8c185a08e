"""What every `mlops` command shares: one-line errors, config checks, running a flow in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line on stderr and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def check_config(config: Path) -> Any:
    """Load and validate a config; a bad one ends here, before any work starts."""
    from mlops.config import load_config
    from mlops.errors import MLOpsError

    try:
        return load_config(config)
    except MLOpsError as exc:
        fail(str(exc), exc.exit_code)


def run_flow(fn: Any, **params: Any) -> Any:
    """Run a flow in-process; a failed run becomes one line on stderr and a non-zero exit."""
    import logging

    from mlops.errors import MLOpsError

    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).setLevel(logging.INFO)
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
