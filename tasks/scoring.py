"""Scoring stage: score a file or folder chunk by chunk with the champion (loaded by tasks.registry), and
the run's Prefect artifact."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from mlops.core.config import PipelineConfig
from mlops.core.errors import RegistryError
from mlops.core.names import artifact_key
from mlops.registry import versions as registry
from mlops.serving.predictlog import PredictionLogWriter, Redactor, hash_key_from_env
from mlops.serving.scoring import ScoringRun, score_file
from tasks.common import stage_task


def require_champion(bundle: registry.ModelBundle | None, model_name: str) -> registry.ModelBundle:
    """The champion scoring uses; no champion is one sentence, as the registry says it."""
    if bundle is None:
        raise RegistryError(f"model '{model_name}' has no version with alias '{registry.CHAMPION}' (train one first)")
    return bundle


@stage_task("score_input")
def score_input(bundle: registry.ModelBundle, cfg: PipelineConfig, input_path: str, output_dir: Path,
                log_dir: Path | None, run_id: str) -> ScoringRun:
    """Validate, quarantine and score the input in chunks; predictions, quarantine and run record land in
    `output_dir`, scored rows in the prediction log."""
    get_run_logger().info("Scoring with %s v%s", bundle.name, bundle.version)
    writer = None
    if log_dir is not None and cfg.serving.log_predictions:
        redactor = Redactor(frozenset(cfg.serving.sensitive_columns), cfg.serving.sensitive_mode, hash_key_from_env())
        writer = PredictionLogWriter(log_dir, redactor)
    run = score_file(bundle.model, bundle.contract, bundle.name, bundle.version, bundle.run_id, input_path,
                     output_dir, run_id, cfg.serving.batch_chunk_rows, writer,
                     cfg.validation.max_quarantine_fraction)
    logger = get_run_logger()
    logger.info("Scored %d of %d rows (%d quarantined) in %d chunk(s) -> %s", run.rows_scored, run.rows_read,
                run.rows_quarantined, run.chunks, run.predictions_path)
    for w in run.warnings:
        logger.warning("%s", w)
    return run


@stage_task("publish_scoring_report", io=True)
def publish_scoring_report(run: ScoringRun) -> None:
    """The run's counts and where its files are, as a markdown artifact."""
    warnings = "".join(f"\n- {w}" for w in run.warnings) or "\nnone"
    md = f"""# Batch scoring: {run.model_name} v{run.model_version}

| rows read | scored | quarantined | chunks | seconds |
| --- | --- | --- | --- | --- |
| {run.rows_read} | {run.rows_scored} | {run.rows_quarantined} | {run.chunks} | {run.seconds} |

Input: `{run.input_path}`
Predictions: `{run.predictions_path}`
Quarantine: `{run.quarantine_path or 'none'}`
Run record: `{Path(run.output_dir) / 'run.json'}`

Warnings:{warnings}
"""
    create_markdown_artifact(md, key=artifact_key(run.model_name, "scoring-summary"), description="Batch scoring run")
