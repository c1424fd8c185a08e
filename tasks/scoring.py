"""Scoring stage: load the champion, then score a file or folder chunk by chunk."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from mlops.core.config import PipelineConfig
from mlops.registry import versions as registry
from mlops.serving.predictlog import PredictionLogWriter, Redactor, hash_key_from_env
from mlops.serving.scoring import ScoringRun, score_file


@task(name="load_champion", cache_policy=NONE)
def load_champion(model_name: str) -> registry.ModelBundle:
    """The version holding `champion`, with its contract (the model scoring uses)."""
    bundle = registry.load_bundle(model_name, registry.CHAMPION, with_reference=False)
    get_run_logger().info("Scoring with %s v%s", model_name, bundle.version)
    return bundle


@task(name="score_input", cache_policy=NONE)
def score_input(bundle: registry.ModelBundle, cfg: PipelineConfig, input_path: str, output_dir: Path,
                log_dir: Path | None, run_id: str) -> ScoringRun:
    """Validate, quarantine and score the input in chunks; predictions, quarantine and run record land in
    `output_dir`, scored rows in the prediction log."""
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


@task(name="publish_scoring_report", cache_policy=NONE)
def publish_scoring_report(run: ScoringRun) -> None:
    key = run.model_name.lower().replace("_", "-").replace(".", "-")
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
    create_markdown_artifact(md, key=f"{key}-scoring-summary", description="Batch scoring run")
