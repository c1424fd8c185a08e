"""Reporting: Prefect artifacts (markdown summary, leaderboard table, links) for the UI."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return None


def _label(version: Any) -> str:
    return f"v{version}" if version else "none"


@task(name="publish_training_report", cache_policy=NONE)
def publish_training_report(summary: dict[str, Any], leaderboard: list[dict[str, Any]], gate_markdown: str,
                            profile_markdown: str, run_url: str | None) -> None:
    key = summary["model_name"].lower().replace("_", "-").replace(".", "-")
    create_table_artifact(leaderboard, key=f"{key}-leaderboard", description="Candidate leaderboard (CV score per family)")
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in summary["metrics"].items())
    md = f"""# Training run: {summary['model_name']} v{summary['version']}

**Best family**: {summary['family']}  |  **Champion now**: {_label(summary['champion_version'])}
({'promoted' if summary['promoted'] else 'not promoted'})

| holdout metric | value |
| --- | --- |
{metrics}

{gate_markdown}
Rows: {summary['data']['rows_accepted']} accepted, {summary['data']['rows_quarantined']} quarantined
{('(' + summary['quarantine_file'] + ')') if summary.get('quarantine_file') else ''}.
MLflow run: {run_url or summary['mlflow_run_id']}
"""
    create_markdown_artifact(md, key=f"{key}-training-summary", description="Gate verdict and holdout metrics")
    create_markdown_artifact(profile_markdown, key=f"{key}-data-profile",
                             description="Each column's role in training and why; columns left out and why")
    if run_url:
        create_link_artifact(run_url, link_text="MLflow run", key=f"{key}-mlflow-run")
