"""`mlops score`: per-row predictions for a file from the champion, written to one CSV or Parquet file.

It runs the batch-scoring code the `score` flow runs (`mlops.serving.scoring.score_with_champion`:
chunked reading, the contract check, the champion's Pipeline, the prediction log), in this process
and without a Prefect API: a command that answers one question for one file needs no flow run, and
skipping the private server and the run's bookkeeping saves a few seconds per call (figures in
docs/benchmarks.md). Every input row gets an output row, in input order; rows that break the data
contract are scored as the model sees them and flagged in `contract_violation`, never dropped. The
`score` flow (a deployment, the Prefect UI) quarantines them instead, unless `flag_violations` is on.
MLflow, the registry and the scoring code are imported inside the command: `mlops --help` imports this module.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlops.cli.common import check_config, fail, use_running_stack
from mlops.core.errors import MLOpsError
from mlops.core.startup import frozen_imports

if TYPE_CHECKING:
    from mlops.serving.scoring import ScoringRun

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="pipeline config (YAML)")]
DEFAULT_CONFIG = Path("configs/default.yaml")


def score_command(
    data: Annotated[Path, typer.Option("--data", help="CSV/Parquet file or folder to score")],
    out: Annotated[Path, typer.Option("--out", help="where the predictions go; .csv or .parquet picks the format")],
    config: ConfigOpt = DEFAULT_CONFIG,
    prediction_log: Annotated[bool, typer.Option(
        "--prediction-log/--no-prediction-log",
        help="also write the scored rows to the prediction log, as the model server does (monitoring reads it; "
             "default: the config's serving.log_predictions)")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="print the run record as JSON")] = False,
) -> None:
    """Score a file with the champion: one output row per input row, bad rows flagged (contract_violation), not dropped."""
    cfg = check_config(config)
    try:
        with frozen_imports():
            import mlflow

            from mlops.core.settings import configure_environment
            from mlops.registry import versions as registry
            from mlops.serving.scoring import input_files, output_format, require_champion, score_with_champion
        output_format(out)
        input_files(data)
        use_running_stack()  # the registry (and log hash key) of a stack running from this state folder, if any
        settings = configure_environment()
        mlflow.set_tracking_uri(settings.tracking_uri)
        bundle = require_champion(registry.load_champion(cfg.registry.model_name, to_serve=True),
                                  cfg.registry.model_name)
        run_id = f"score-{uuid.uuid4().hex[:12]}"
        run = score_with_champion(bundle, cfg, data, settings.state_dir / "scores" / run_id, run_id,
                                  settings.prediction_log_dir if prediction_log else None, out, flag_violations=True)
    except MLOpsError as exc:
        fail(str(exc), exc.exit_code)
    if json_out:
        typer.echo(json.dumps(run.as_dict(), indent=2, default=str))
    else:
        print_scoring_run(run)


def print_scoring_run(run: ScoringRun) -> None:
    """What was scored, what was flagged and why, where the files are."""
    echo = typer.echo
    echo(f"Model      {run.model_name} v{run.model_version} (champion)")
    echo(f"Scored     {run.rows_scored:,} of {run.rows_read:,} rows -> {run.predictions_path}")
    if run.rows_flagged:
        echo(f"Flagged    {run.rows_flagged:,} row(s) break the data contract (column contract_violation says how); "
             "scored anyway, not dropped")
        for reason, n in list(run.quarantine_reasons.items())[:5]:
            echo(f"           - {n:,} x {reason[:160]}")
    for w in run.warnings:
        echo(typer.style(f"Warning    {w}", fg=typer.colors.YELLOW))
    logged = f", {run.prediction_log_files} prediction-log file(s)" if run.prediction_log_files else ""
    echo(f"Record     {Path(run.output_dir) / 'run.json'}{logged}")
