"""`mlops migrate --to production`: move a local state's registry (and its deployments) onto the
production profile (mlops/stack/migration.py does the copying).

    mlops down && mlops up --profile production && mlops migrate --to production

The stack and settings modules are imported inside the functions (pydantic, MLflow): `mlops --help`
imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mlops.cli.common import fail
from mlops.cli.stack import StateOpt, _say, _state_dir
from mlops.core.errors import MLOpsError


def _destination(state_dir: Path, given: str | None) -> str:
    """The MLflow to copy into: --tracking-uri, else the production stack running from `state_dir`,
    else MLOPS_MLFLOW_TRACKING_URL."""
    from mlops.stack.processes import read_state

    if given:
        return given.rstrip("/")
    state = read_state(state_dir)
    if state is not None and state.options.get("profile") == "production" and state.urls.get("mlflow"):
        mlflow = state.processes.get("mlflow")
        if mlflow is None or mlflow.alive():
            return state.urls["mlflow"]
    if external := os.environ.get("MLOPS_MLFLOW_TRACKING_URL", "").strip():
        return external.rstrip("/")
    fail(f"no production stack runs from {state_dir}; start it with `mlops up --profile production` (or give "
         "--tracking-uri)")


def _redeploy(state_dir: Path) -> list[str]:
    """`prefect deploy` of the project's prefect.yaml on the running stack again, as `mlops up` did."""
    from mlops.core.config import load_config
    from mlops.stack import supervisor as stack

    state = stack.read_state(state_dir)
    if state is None or "prefect" not in state.running():
        return []
    opts = stack.StackOptions.from_record(state_dir, state.options)
    cron = load_config(opts.config_path).monitoring.schedule_cron
    with stack.stack_lock(state_dir):
        sup = stack.Supervisor(opts, _say, state)
        try:
            sup.deploy(cron)
        finally:
            sup.close()
    return list(sup.state.deployments)


def migrate_command(
    to: Annotated[str, typer.Option("--to", help="the profile to move to")] = "production",
    from_state: Annotated[Path | None, typer.Option("--from-state", help="the local state folder whose SQLite "
                                                    "registry to move (default: the state folder itself)")] = None,
    state_dir: StateOpt = None,
    tracking_uri: Annotated[str | None, typer.Option(help="the destination MLflow (default: the production stack "
                                                     "running from the state folder, or $MLOPS_MLFLOW_TRACKING_URL)")]
    = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="move only this registered model (repeat)")]
    = None,
    deployments: Annotated[bool, typer.Option("--deployments/--no-deployments", help="deploy prefect.yaml to the "
                                              "running stack again")] = True,
) -> None:
    """Move registered models (every version, tags, aliases, alias history, the artifacts serving needs)
    from a local SQLite state to the production profile, and re-deploy the flows."""
    from mlops.core.settings import quiet_libraries
    from mlops.stack.migration import RegistryMigration, check_destination, verify

    if to != "production":
        fail(f"unknown profile {to!r}; the only destination is production")
    folder = _state_dir(state_dir)
    source = (from_state.expanduser().resolve() if from_state else folder)
    store = source / "mlflow.db"
    if not store.is_file():
        fail(f"no SQLite registry at {store}; give the old state folder with --from-state")
    source_uri = f"sqlite:///{store}"
    dest_uri = _destination(folder, tracking_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    quiet_libraries()
    _say(f"moving the registry of {source} to {dest_uri} ...")
    try:
        check_destination(dest_uri)
        reports = RegistryMigration(source_uri, source / "mlartifacts", dest_uri, _say).run(model or None)
        problems = verify(source_uri, dest_uri, [r.name for r in reports])
        deployed = _redeploy(folder) if deployments else []
    except MLOpsError as exc:
        fail(str(exc), exc.exit_code)
    if problems:
        fail("the copy differs from the source: " + "; ".join(problems[:5]))
    if not reports:
        typer.echo(f"Nothing to move: {store} holds no registered model.")
    for r in reports:
        aliases = ", ".join(f"{a} -> v{v}" for a, v in sorted(r.aliases.items())) or "none"
        kept = f" ({len(r.kept)} already there)" if r.kept else ""
        typer.secho(f"{r.name}: {len(r.versions) + len(r.kept)} versions{kept}; aliases {aliases}; "
                    f"{r.history} alias-history entries; verified", fg=typer.colors.GREEN)
    if deployed:
        typer.echo(f"Deployments re-applied: {', '.join(deployed)}.")
    typer.echo("Not moved: Prefect's flow-run history, runs that registered no version (tuning, monitoring). "
               f"The prediction log and monitor state stay in {source}.")
