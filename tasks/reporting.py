"""Reporting: Prefect artifacts (markdown summary, leaderboard table, links) for the UI."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from mlops.core.names import artifact_key
from mlops.registry.versions import AliasMove
from mlops.training.result import TrainingResult
from tasks.common import stage_task


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI when the store is a tracking server (None for a local store)."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return None


def _label(version: Any) -> str:
    return f"v{version}" if version else "none"


@stage_task("publish_training_report")
def publish_training_report(result: TrainingResult, gate_markdown: str, profile_markdown: str) -> None:
    """The leaderboard table, the verdict and metrics, the data profile and the MLflow link, as artifacts."""
    name = result.model_name
    run_url = mlflow_run_url(result.tracking_uri, result.experiment_id, result.mlflow_run_id)
    create_table_artifact(result.leaderboard, key=artifact_key(name, "leaderboard"),
                          description="Candidate leaderboard (CV score per family)")
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in result.metrics.items())
    md = f"""# Training run: {name} v{result.version}

**Best family**: {result.family}  |  **Champion now**: {_label(result.champion_version)}
({'promoted' if result.promoted else 'not promoted'})

| holdout metric | value |
| --- | --- |
{metrics}

{gate_markdown}
Rows: {result.data['rows_accepted']} accepted, {result.data['rows_quarantined']} quarantined
{('(' + result.quarantine_file + ')') if result.quarantine_file else ''}.
MLflow run: {run_url or result.mlflow_run_id}
"""
    create_markdown_artifact(md, key=artifact_key(name, "training-summary"),
                             description="Gate verdict and holdout metrics")
    create_markdown_artifact(profile_markdown, key=artifact_key(name, "data-profile"),
                             description="Each column's role in training and why; columns left out and why")
    if run_url:
        create_link_artifact(run_url, link_text="MLflow run", key=artifact_key(name, "mlflow-run"))


@stage_task("publish_alias_move")
def publish_alias_move(move: AliasMove, model_name: str, what: str) -> None:
    """A markdown artifact for a move of `champion` made by hand (`what`: Promotion or Rollback)."""
    create_markdown_artifact(
        f"# {what}: {model_name}\n\n`champion` moved from v{move.from_version} to v{move.to_version} "
        f"at {move.at} by {move.by}.\n\nReason: {move.reason}\n",
        key=artifact_key(model_name, what),
    )
