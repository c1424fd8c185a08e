"""Scoring stage: score a file or folder chunk by chunk with the champion (loaded by tasks.registry), and
the run's Prefect artifact. The work is `mlops.serving.scoring.score_with_champion`, which `mlops score`
runs too."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from mlops.core.config import PipelineConfig
from mlops.core.names import artifact_key
from mlops.registry import versions as registry
from mlops.serving.scoring import ScoringRun, score_with_champion
from mlops.serving.scoring import require_champion as require_champion
from tasks.common import stage_task


@stage_task("score_input")
def score_input(bundle: registry.ModelBundle, cfg: PipelineConfig, input_path: str, output_dir: Path,
                log_dir: Path | None, run_id: str, predictions_path: str | None = None,
                flag_violations: bool = False) -> ScoringRun:
    """Validate and score the input in chunks: bad rows quarantined (or, with `flag_violations`, scored and
    flagged); predictions, quarantine and run record land in `output_dir`, scored rows in the prediction log."""
    logger = get_run_logger()
    logger.info("Scoring with %s v%s", bundle.name, bundle.version)
    run = score_with_champion(bundle, cfg, input_path, output_dir, run_id, log_dir, predictions_path, flag_violations)
    logger.info("Scored %d of %d rows (%d quarantined, %d flagged) in %d chunk(s) -> %s", run.rows_scored,
                run.rows_read, run.rows_quarantined, run.rows_flagged, run.chunks, run.predictions_path)
    for w in run.warnings:
        logger.warning("%s", w)
    return run


@stage_task("publish_scoring_report", io=True)
def publish_scoring_report(run: ScoringRun) -> None:
    """The run's counts and where its files are, as a markdown artifact."""
    warnings = "".join(f"\n- {w}" for w in run.warnings) or "\nnone"
    md = f"""# Batch scoring: {run.model_name} v{run.model_version}

| rows read | scored | quarantined | flagged | chunks | seconds |
| --- | --- | --- | --- | --- | --- |
| {run.rows_read} | {run.rows_scored} | {run.rows_quarantined} | {run.rows_flagged} | {run.chunks} | {run.seconds} |

Input: `{run.input_path}`
Predictions: `{run.predictions_path}`
Quarantine: `{run.quarantine_path or 'none'}`
Run record: `{Path(run.output_dir) / 'run.json'}`

Warnings:{warnings}
"""
    create_markdown_artifact(md, key=artifact_key(run.model_name, "scoring-summary"), description="Batch scoring run")
