"""Batch scoring flow: champion -> validate (quarantine or flag) -> score -> predictions + run record + prediction log."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import mlflow
from prefect import runtime

from flows.forms import LEFT_OUT, ConfigPath, OptionalPath, form_flow, given, name_part, run_name
from mlops.core.config import load_config
from mlops.core.data_roots import confine_output
from mlops.core.errors import MLOpsError
from mlops.core.settings import configure_environment
from tasks.registry import load_champion
from tasks.reporting import failed_run
from tasks.scoring import publish_scoring_report, require_champion, score_input


def _input_suffix(params: dict[str, Any]) -> str:
    """`-<input file>` of a scoring run's name."""
    return name_part(Path(str(params.get("input_path") or "batch")).stem)


@form_flow(name="score", log_prints=False, flow_run_name=run_name("score", suffix=_input_suffix))
def score(config_path: ConfigPath, input_path: str, output_dir: OptionalPath = LEFT_OUT,
          predictions_path: OptionalPath = LEFT_OUT, flag_violations: bool = False) -> Any:
    """Score a CSV/Parquet file or folder with the config's champion.

    Rows that break the data contract are quarantined, not scored. Writes `predictions.parquet` (or
    `predictions_path`), `quarantined.csv` and `run.json` to `output_dir` and every scored row to the
    prediction log. Outputs named here must lie inside `$MLOPS_HOME/scores` or a data root outside the state
    folder.

    Args:
        config_path: The pipeline config (YAML) whose champion scores the file.
        input_path: The CSV/Parquet file or folder to score (inside the config's data roots).
        output_dir: Where the run's files go; leave it empty for `$MLOPS_HOME/scores/<flow run id>`.
        predictions_path: A new .csv or .parquet file for the predictions; leave it empty for
            `predictions.parquet` in the output folder.
        flag_violations: Score every row, in input order, the ones that break the contract saying why in
            `contract_violation`, instead of quarantining them.
    """
    try:
        return run_scoring(config_path, input_path, given(output_dir), given(predictions_path), flag_violations)
    except MLOpsError as exc:
        return failed_run(exc)


def run_scoring(config_path: str, input_path: str, output_dir: str | None, predictions_path: str | None = None,
                flag_violations: bool = False) -> dict[str, Any]:
    cfg = load_config(config_path)
    settings = configure_environment()
    mlflow.set_tracking_uri(settings.tracking_uri)
    run_id = str(runtime.flow_run.id or "local")
    # a run started by an event, a deployment or the UI writes only where runs may write (confine_output)
    out = confine_output(output_dir, cfg, settings) if output_dir else settings.state_dir / "scores" / run_id
    if predictions_path:
        predictions_path = str(confine_output(predictions_path, cfg, settings, new_file=True))

    bundle = require_champion(load_champion(cfg.registry.model_name, to_serve=True), cfg.registry.model_name)
    run = score_input(bundle, cfg, input_path, out, settings.prediction_log_dir, run_id, predictions_path,
                      flag_violations)
    publish_scoring_report(run)
    return run.as_dict()


if __name__ == "__main__":
    configure_environment()
    print(score(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
