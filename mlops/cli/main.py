"""`mlops`: train, promote, rollback, status, and the other front doors.

The flows, the capability packages and the core's config and settings are imported inside the commands
(each pulls pydantic, pandas, MLflow or Prefect), so `mlops --help` answers at once; the start-up
tricks are in mlops.core.startup."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlops.cli import backtest as cli_backtest
from mlops.cli import migrate as cli_migrate
from mlops.cli import monitor as cli_monitor
from mlops.cli import score as cli_score
from mlops.cli import stack as cli_stack
from mlops.cli.common import (
    check_config,
    check_data_path,
    clip,
    prepare_flow_process,
    stdout_to_stderr,
    use_running_stack,
    version_label,
    when,
)
from mlops.cli.common import fail as _fail
from mlops.cli.common import run_flow as _run_flow
from mlops.core import startup
from mlops.core.errors import MLOpsError
from mlops.registry.links import mlflow_run_url, mlflow_ui_command

if TYPE_CHECKING:
    from mlops.training.result import TrainingResult

app = typer.Typer(add_completion=False, no_args_is_help=True, help="MLOps for tabular data on Prefect 3 and MLflow.")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="pipeline config (YAML)")]
DEFAULT_CONFIG = Path("configs/default.yaml")


def _prepare() -> Any:
    from mlops.core.settings import configure_environment

    return configure_environment()


def _model_name(config: Path, model: str | None) -> str:
    if model:
        return model
    return check_config(config).registry.model_name


def _print_summary(s: TrainingResult) -> None:
    ok = typer.style("PASSED", fg=typer.colors.GREEN) if s.gate_passed else typer.style("REJECTED", fg=typer.colors.RED)
    typer.echo("")
    typer.echo(f"Model      {s.model_name} version {s.version} ({s.family})")
    typer.echo("Holdout    " + ", ".join(f"{k}={v:.4f}" for k, v in s.metrics.items()))
    for i, row in enumerate(s.leaderboard):
        head = "Candidates" if i == 0 else ""
        mark = "  <- best" if row.get("family") == s.family else ""
        typer.echo(f"{head:10s} {row['family']:24s} cv score {row['cv_score']:.4f} "
                   f"(+/- {row['cv_std']:.4f}, {row['trials']} trials, {row.get('space', 'config space')}){mark}")
    if s.lineage.get("holdout"):
        typer.echo(f"Split      {s.lineage['holdout']}")
    if s.lineage.get("training_window"):
        typer.echo(f"Window     trained on {s.lineage['training_window']} (train_on: auto; the choice is in the run's "
                   "evaluation/training_window.md)")
    typer.echo(f"Gate       {ok}")
    for r in s.gate_reasons:
        typer.echo(f"           - {r}")
    if s.promoted:
        was = f" (was v{s.previous_champion})" if s.previous_champion else " (the first champion)"
        typer.echo(f"Champion   version {s.version} is now `champion`{was}")
    else:
        now = f"version {s.champion_version}" if s.champion_version else "no champion yet"
        typer.echo(f"Champion   unchanged: {now}")
    from mlops.core.validation import rows_line

    q = f" -> {s.quarantine_file}" if s.quarantine_file else ""
    typer.echo(f"Data       {rows_line(s.data)}{q}")
    for line in s.profile_lines:
        typer.echo(line)
    uri = s.tracking_uri
    typer.echo(f"MLflow UI  {mlflow_run_url(uri, s.experiment_id, s.mlflow_run_id) or mlflow_ui_command(uri, '.venv/bin/mlflow')}")


@app.command()
def train(
    config: ConfigOpt = DEFAULT_CONFIG,
    data: Annotated[str | None, typer.Option(help="CSV/Parquet file or folder to train on instead of the config's source")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the run summary as JSON")] = False,
) -> None:
    """Run the training flow: validate, tune, evaluate, gate, register, promote."""
    cfg = check_config(config)  # a bad config fails here, before any work starts
    if data is not None:
        check_data_path(cfg, data)  # so does a data path that is refused or missing
    prepare_flow_process(*startup.TRAINING)
    from flows.train import train as train_flow

    with stdout_to_stderr(json_out):
        result: TrainingResult = _run_flow(train_flow, config_path=str(config), source_path=data, reason="cli")
    if json_out:
        typer.echo(json.dumps(result.to_dict(), default=str, indent=2))
    else:
        _print_summary(result)
    if not result.gate_passed:
        raise typer.Exit(0)


@app.command()
def promote(
    version: Annotated[int, typer.Option("--version", help="registered version to make champion")],
    config: ConfigOpt = DEFAULT_CONFIG,
    reason: Annotated[str | None, typer.Option(help="why, recorded with the move (required with --force)")] = None,
    force: Annotated[bool, typer.Option("--force", help="promote a version whose gate failed (needs --reason)")] = False,
) -> None:
    """Make a registered version of the config's model the champion (recorded like every alias move).

    A version whose gate failed is refused unless --force and --reason are given; the override is then
    recorded on the version and in the alias history, and the model server serves it."""
    name = check_config(config).registry.model_name
    if force and not (reason or "").strip():
        _fail("--force needs --reason saying why the gate is overridden")
    prepare_flow_process("flows.promote")
    from flows.promote import DEFAULT_PROMOTE_REASON
    from flows.promote import promote as promote_flow

    move = _run_flow(promote_flow, config_path=str(config), version=version, reason=reason or DEFAULT_PROMOTE_REASON,
                     force=force)
    note = "  (forced over a failed gate)" if move.forced else ""
    typer.echo(f"{name}: champion {version_label(move.from_version)} -> {version_label(move.to_version)}{note}")


@app.command()
def rollback(
    config: ConfigOpt = DEFAULT_CONFIG,
    reason: Annotated[str | None, typer.Option(help="why, recorded with the move (required with --force)")] = None,
    force: Annotated[bool, typer.Option("--force", help="roll back to a previous champion whose gate failed "
                                                        "(needs --reason)")] = False,
) -> None:
    """Move the config's model's champion back to the previous champion (never to a gate-failed one
    without --force and --reason)."""
    name = check_config(config).registry.model_name
    if force and not (reason or "").strip():
        _fail("--force needs --reason saying why the gate is overridden")
    prepare_flow_process("flows.promote")
    from flows.promote import DEFAULT_ROLLBACK_REASON
    from flows.promote import rollback as rollback_flow

    move = _run_flow(rollback_flow, config_path=str(config), reason=reason or DEFAULT_ROLLBACK_REASON, force=force)
    note = ", forced over a failed gate" if move.forced else ""
    typer.echo(f"{name}: champion {version_label(move.from_version)} -> {version_label(move.to_version)} "
               f"(rolled back{note})")


@app.command()
def status(
    config: ConfigOpt = DEFAULT_CONFIG,
    model: Annotated[str | None, typer.Option(help="registered model name (default: from the config)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
    history: Annotated[bool, typer.Option(help="also list recent alias moves")] = False,
) -> None:
    """What is champion, its metrics and when it was trained."""
    name = _model_name(config, model)
    use_running_stack()  # the registry of a stack running from this state folder, if one runs
    settings = _prepare()
    from mlops.registry import versions as registry
    from mlops.registry.verdict import gate_label

    registry.client(settings.tracking_uri)
    try:
        st = registry.status(name)
    except MLOpsError as exc:
        _fail(str(exc), exc.exit_code)
    if json_out:
        typer.echo(json.dumps(st, indent=2, default=str))
        return
    typer.echo(f"Model {name}: {st['versions']} version(s)")
    for alias in ("champion", "previous"):
        v = st[alias]
        if v is None:
            typer.echo(f"  {alias:9s} (none)")
            continue
        metrics = ", ".join(f"{k}={val:.4f}" for k, val in sorted(v["metrics"].items()))
        promoted = f"  promoted {when(v['promoted_at'])}" if v.get("promoted_at") else ""
        typer.echo(f"  {alias:9s} v{v['version']}  trained {when(v['trained_at'])}{promoted}")
        typer.echo(f"            {metrics}")
        if v.get("refused"):
            typer.echo(f"            NOT SERVED: {v['refused']}")
        elif v.get("override"):
            typer.echo(f"            gate failed; served by override ({clip(v['override'].get('reason', ''), 80)})")
    for move in st.get("outside_moves", []):
        typer.echo(f"  note: {move['reason']}")
    if history:
        typer.echo("Versions (newest first):")
        for v in st["recent_versions"]:
            gate = gate_label(v)
            aliases = f"  [{', '.join(v['aliases'])}]" if v["aliases"] else ""
            typer.echo(f"  v{v['version']:<4} {when(v['trained_at'])}  {v['family'] or '?':24s} gate {gate}{aliases}")
            for failure in v["failures"][:3]:
                typer.echo(f"          - {clip(failure, 150)}")
        typer.echo("Alias moves:")
        for h in st["history"]:
            mark = "  OUTSIDE MLOPS" if h.get("outside") else "  FORCED over a failed gate" if h.get("forced") else ""
            typer.echo(f"  {when(h['at'])}  {h['alias']}: {version_label(h['from_version'])} -> "
                       f"{version_label(h['to_version'])}  by {h['by']}  ({clip(h['reason'], 100)}){mark}")


@app.command()
def init() -> None:
    """Prepare the state folder: the MLflow store and Prefect's local database (done by the first run otherwise)."""
    settings = prepare_flow_process()
    typer.echo(f"state folder {settings.state_dir} ready (MLflow store {settings.tracking_uri})")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    config: ConfigOpt = DEFAULT_CONFIG,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (use --host to change the interface)")] = 8000,
) -> None:
    """Serve models:/NAME@champion over HTTP (hot swap, contract checks, prediction log).

    Further options (--workers, --host, --poll-seconds, --no-prediction-log ...) go to the model server.
    """
    check_config(config)
    _prepare()
    from mlops.serving.__main__ import main as serve_main

    raise typer.Exit(serve_main(["--config", str(config), "--port", str(port), *ctx.args]))


def _register_more() -> None:
    """Monitoring, scoring and local-stack commands live in their own modules (light at import)."""
    app.command("monitor")(cli_monitor.monitor_command)
    app.command("demo-drift")(cli_monitor.demo_drift_command)
    app.command("up")(cli_stack.up_command)
    app.command("down")(cli_stack.down_command)
    app.command("restart")(cli_stack.restart_command)
    app.command("stack-status")(cli_stack.status_command)
    app.command("logs")(cli_stack.logs_command)
    app.command("deploy-env")(cli_stack.deploy_env_command)
    app.command("backtest")(cli_backtest.backtest_command)
    app.command("score")(cli_score.score_command)
    app.command("migrate")(cli_migrate.migrate_command)


_register_more()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        # Exit frees the heap anyway; frozen objects skip the collections of interpreter teardown
        # (about 2 s after a training run). atexit handlers and stream flushes still run.
        startup.freeze_heap()


if __name__ == "__main__":
    main()
