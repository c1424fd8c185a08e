"""Reporting: what the Prefect UI shows about a run - its artifacts (summary, tables, links to MLflow), its
tags and its final state.

Plain functions, not tasks: called from a flow's body, so the artifacts and tags land on the flow run (an
artifact made inside a task belongs to that task run). The text and links they publish are built in the
capability packages (mlops.registry.summaries and .links, mlops.monitoring.result).
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.states import Completed, Failed, State

from mlops.core.errors import MLOpsError
from mlops.core.names import artifact_key
from mlops.monitoring.result import RetrainOutcome
from mlops.registry import versions as registry
from mlops.registry.links import mlflow_base_url, mlflow_open_markdown, mlflow_run_url, mlflow_version_url
from mlops.registry.summaries import (
    alias_move_markdown,
    leaderboard_table,
    training_markdown,
    version_label,
    versions_table,
)
from mlops.registry.versions import AliasMove
from mlops.training.result import TrainingResult

VERSIONS_SHOWN = 15


def publish_mlflow_links(model_name: str, tracking_uri: str, links: dict[str, tuple[str, str | None]]) -> None:
    """Link artifacts to MLflow pages (`links`: key -> (link text, URL)); with a local store, one markdown
    artifact saying how to open it instead (no browser can follow a sqlite:// or file:// address)."""
    if mlflow_base_url(tracking_uri) is not None:
        for what, (text, url) in links.items():
            if url:
                create_link_artifact(url, link_text=text, key=artifact_key(model_name, what),
                                     description=f"{text} in the MLflow UI")
        return
    create_markdown_artifact(mlflow_open_markdown(tracking_uri, [text for text, _ in links.values()]),
                             key=artifact_key(model_name, "mlflow-open"),
                             description="How to open this run's MLflow store")


def publish_training_report(result: TrainingResult, profile_markdown: str) -> None:
    """On the flow run: the leaderboard table, the summary, the data profile and the links to MLflow."""
    name = result.model_name
    create_table_artifact(leaderboard_table(result.leaderboard), key=artifact_key(name, "leaderboard"),
                          description="Candidate leaderboard: best CV score per family")
    create_markdown_artifact(training_markdown(result), key=artifact_key(name, "training-summary"),
                             description=f"Training outcome: {result.outcome_line(120)}")
    create_markdown_artifact(profile_markdown, key=artifact_key(name, "data-profile"),
                             description="Each column's role in training and why; columns left out and why")
    publish_mlflow_links(name, result.tracking_uri, {
        "mlflow-run": (f"MLflow run of {name} v{result.version}",
                       mlflow_run_url(result.tracking_uri, result.experiment_id, result.mlflow_run_id)),
        "mlflow-version": (f"MLflow model version {name} v{result.version}",
                           mlflow_version_url(result.tracking_uri, name, result.version)),
    })


def publish_versions(model_name: str) -> None:
    """On the flow run: the registered versions and their gate results (what `promote` can choose from).
    Never fails the run: the table is a guide, not a result."""
    try:
        history = registry.version_history(model_name, limit=VERSIONS_SHOWN)
    except Exception as exc:  # noqa: BLE001 - a registry without the model (or a busy one) leaves the table out
        get_run_logger().warning("No versions table: %s", str(exc)[:200])
        return
    if history:
        create_table_artifact(versions_table(history), key=artifact_key(model_name, "versions"),
                              description=f"Registered versions of {model_name}, newest first, with their gate "
                                          "results: the versions `promote` can make champion (a REJECTED one needs "
                                          "force and a reason)")


def publish_alias_move(move: AliasMove, model_name: str, what: str, tracking_uri: str = "") -> None:
    """A markdown artifact for a move of `champion` made by hand (`what`: Promotion or Rollback)."""
    create_markdown_artifact(alias_move_markdown(move, model_name, what), key=artifact_key(model_name, what),
                             description=f"{what}: champion now {version_label(move.to_version)}")
    if tracking_uri and move.to_version:
        publish_mlflow_links(model_name, tracking_uri, {"mlflow-version": (
            f"MLflow model version {model_name} {version_label(move.to_version)}",
            mlflow_version_url(tracking_uri, model_name, move.to_version))})


# ---- the run itself: tags and final state ------------------------------------------------------------------


def tag_flow_run(*tags: str) -> None:
    """Add tags to the current flow run (kept with the ones it has); a failure to tag only warns."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    merged = list(dict.fromkeys([*(ctx.flow_run.tags or []), *tags]))
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(ctx.flow_run.id, tags=merged)
        ctx.flow_run.tags = merged
    except Exception as exc:  # noqa: BLE001 - tags help find a run; they never fail it
        get_run_logger().warning("Could not tag the run: %s", str(exc)[:200])


def failed_run(exc: MLOpsError, model_name: str | None = None, version: Any = None, outcome: str = "failed") -> State:
    """How every flow ends on a user's error (bad config, bad data, a refused request): the sentence logged,
    the run tagged with its model and outcome (when it has a model), and a Failed state carrying it."""
    get_run_logger().error("%s", exc)
    if model_name:
        tag_flow_run(*outcome_tags(model_name, version, outcome))
    return Failed(message=str(exc), data=exc)


def outcome_tags(model_name: str, version: Any, outcome: str) -> list[str]:
    """`model:<name>`, `version:v<N>` (when there is one) and `outcome:<what happened>`."""
    tags = [f"model:{model_name}", f"outcome:{outcome}"]
    if version not in (None, "", "None"):
        tags.insert(1, f"version:v{version}")
    return tags


def retrain_state(model_name: str, outcome: RetrainOutcome, reason: str, training: State | None = None,
                  champion: str | None = None) -> State:
    """The retrain run's final state, tags and summary artifact, by what became of the request: the training's
    own state (`Promoted`, `Rejected`, ...) when one ran, `Skipped` (Completed, the reason as its message) when
    there was nothing to train on or another training already covers it, Failed when the training failed."""
    if outcome.status == "trained" and training is not None:
        summary = outcome.summary or {}
        tags = outcome_tags(model_name, summary.get("version"), str(training.name or "completed").lower())
        state: State = Completed(name=training.name, message=f"retrained: {training.message}", data=outcome)
    elif outcome.status in {"skipped", "refused"}:
        tags = outcome_tags(model_name, champion, outcome.status)
        state = Completed(name="Skipped", message=_one_line(f"retrain skipped: {outcome.detail}"), data=outcome)
    else:
        tags = outcome_tags(model_name, None, "failed")
        state = Failed(message=_one_line(f"retrain failed: {outcome.detail}"), data=outcome)
    tag_flow_run(*tags)
    create_markdown_artifact(outcome.markdown(model_name, reason, state.name, champion),
                             key=artifact_key(model_name, "retrain"), description=str(state.message)[:120])
    return state


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def training_state(result: TrainingResult) -> State:
    """The training run's final state: Completed, named `Promoted` / `Rejected` / `Passed`, its message the
    outcome (a rejection says which checks failed and why)."""
    return Completed(name=result.outcome.capitalize(), message=result.outcome_line(), data=result)
