"""Reporting: what the Prefect UI shows about a run - its artifacts (summary, tables, links to MLflow), its
tags and its final state.

Plain functions, not tasks: called from a flow's body, so the artifacts and tags land on the flow run (an
artifact made inside a task belongs to that task run).
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
from mlops.core.validation import rows_line
from mlops.monitoring.result import RetrainOutcome
from mlops.registry import versions as registry
from mlops.registry.links import mlflow_base_url, mlflow_urls
from mlops.registry.verdict import gate_label
from mlops.registry.versions import AliasMove
from mlops.training.result import TrainingResult

TABLE_CELL = 60  # characters a table artifact cell may hold: the UI cuts longer ones off
VERSIONS_SHOWN = 15


# ---- MLflow addresses ------------------------------------------------------------------------------


def has_server(tracking_uri: str) -> bool:
    """Whether MLflow is a tracking server a browser can open (http/https), not a local store."""
    return mlflow_base_url(tracking_uri) is not None


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI when the store is a tracking server (None for a local store)."""
    return (mlflow_urls(run_id=run_id, experiment_id=experiment_id, tracking_uri=tracking_uri) or {}).get("run")


def mlflow_version_url(tracking_uri: str, model_name: str, version: Any) -> str | None:
    """A registered version's page in the MLflow UI when the store is a tracking server (None otherwise)."""
    return (mlflow_urls(model=model_name, version=version, tracking_uri=tracking_uri) or {}).get("model_version")


def mlflow_ui_command(tracking_uri: str) -> str:
    """How to open a local MLflow store (SQLite or files) in a browser: the `mlflow ui` command line."""
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


def mlflow_where(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """One log-line figure: the run's URL, or how to open the local store."""
    return mlflow_run_url(tracking_uri, experiment_id, run_id) or f"run {run_id}; open with `{mlflow_ui_command(tracking_uri)}`"


def publish_mlflow_links(model_name: str, tracking_uri: str, links: dict[str, tuple[str, str | None]]) -> None:
    """Link artifacts to MLflow pages (`links`: key -> (link text, URL)); with a local store, one markdown
    artifact saying how to open it instead (no browser can follow a sqlite:// or file:// address)."""
    if has_server(tracking_uri):
        for what, (text, url) in links.items():
            if url:
                create_link_artifact(url, link_text=text, key=artifact_key(model_name, what),
                                     description=f"{text} in the MLflow UI")
        return
    lines = "\n".join(f"- {text}" for text, _ in links.values())
    create_markdown_artifact(
        f"# Open in MLflow\n\nMLflow runs without a server here (store `{tracking_uri}`), so there is no page to "
        f"link to. Open it with\n\n```\n{mlflow_ui_command(tracking_uri)}\n```\n\nthen browse to "
        f"http://127.0.0.1:5000 and find:\n\n{lines}\n",
        key=artifact_key(model_name, "mlflow-open"), description="How to open this run's MLflow store")


# ---- training ----------------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    text = value if isinstance(value, (int, float)) else str(value)
    if isinstance(text, str) and len(text) > TABLE_CELL:
        return text[:TABLE_CELL - 3].rstrip() + "..."
    return text


def leaderboard_table(leaderboard: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The candidate table: short cells only (the best parameters are listed in the summary)."""
    return [{"family": r["family"], "cv_score": r["cv_score"], "cv_std": r["cv_std"], "trials": r["trials"],
             "pruned": r.get("pruned", 0), "space": r.get("space", "config space"), "seconds": r["seconds"]}
            for r in leaderboard]


def gate_markdown(result: TrainingResult) -> str:
    """The gate verdict as a list (a table would cut its long details off): each check, pass or FAIL, and why."""
    head = "**PASSED**" if result.gate_passed else "**REJECTED**"
    lines = []
    for reason in result.gate_reasons:
        verdict, _, rest = reason.partition(" ")
        name, _, detail = rest.partition(": ")
        mark = "pass" if verdict == "PASS" else "**FAIL**"
        lines.append(f"- {mark} **{name}**: {detail}")
    return f"Gate verdict: {head}\n\n" + "\n".join(lines) + "\n"


def training_markdown(result: TrainingResult) -> str:
    """The training summary artifact: outcome, holdout metrics, candidates, verdict, data, MLflow."""
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in result.metrics.items())
    params = "\n".join(f"- **{r['family']}** ({r['trials']} trials, {r.get('space', 'config space')}): "
                       f"{r.get('best_params') or 'defaults'}" for r in result.leaderboard)
    data = f"Rows: {rows_line(result.data)}"
    window = result.lineage.get("training_window", "all history")
    if result.quarantine_file:
        data += f" (`{result.quarantine_file}`)"
    run_url = mlflow_run_url(result.tracking_uri, result.experiment_id, result.mlflow_run_id)
    mlflow = (f"[MLflow run]({run_url})" if run_url
              else f"MLflow run `{result.mlflow_run_id}` (open with `{mlflow_ui_command(result.tracking_uri)}`)")
    return f"""# Training run: {result.model_name} v{result.version}

**Outcome**: {result.outcome_line()}

**Best family**: {result.family}  |  **Champion**: {result.champion_change()}  |  **Training window**: {window}

| holdout metric | value |
| --- | --- |
{metrics}

Best parameters per family:

{params}

{gate_markdown(result)}
{data}.

{mlflow}
"""


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


# ---- versions and alias moves -----------------------------------------------------------------------------


def versions_table(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One short row per registered version: aliases, family, metrics, gate result and the checks that failed."""
    rows = []
    for v in history:
        gate = gate_label(v)
        failed = ", ".join(f.split(":", 1)[0] for f in v.get("failures") or []) or "-"
        metrics = ", ".join(f"{k} {val:.4f}" for k, val in sorted((v.get("metrics") or {}).items())[:2]) or "-"
        rows.append({"version": f"v{v['version']}", "aliases": ", ".join(v.get("aliases") or []) or "-",
                     "gate": gate, "failed checks": _cell(failed), "family": v.get("family") or "?",
                     "metrics": _cell(metrics), "trained (UTC)": str(v.get("trained_at", ""))[:16].replace("T", " ")})
    return rows


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
    came = f"from {_v(move.from_version)} " if move.from_version else ""
    forced = "\n\n**Forced** over a failed gate; the override is recorded on the version." if move.forced else ""
    create_markdown_artifact(
        f"# {what}: {model_name}\n\n`champion` moved {came}to {_v(move.to_version)} at {move.at} by {move.by}."
        f"\n\nReason: {move.reason}{forced}\n",
        key=artifact_key(model_name, what), description=f"{what}: champion now {_v(move.to_version)}")
    if tracking_uri and move.to_version:
        publish_mlflow_links(model_name, tracking_uri, {"mlflow-version": (
            f"MLflow model version {model_name} {_v(move.to_version)}",
            mlflow_version_url(tracking_uri, model_name, move.to_version))})


def _v(version: Any) -> str:
    return f"v{version}" if version not in (None, "", "None") else "none"


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
    create_markdown_artifact(retrain_markdown(model_name, outcome, reason, state, champion),
                             key=artifact_key(model_name, "retrain"), description=str(state.message)[:120])
    return state


def retrain_markdown(model_name: str, outcome: RetrainOutcome, reason: str, state: State,
                     champion: str | None = None) -> str:
    """The retrain run's summary: what became of the request and why."""
    unchanged = f"the champion ({_v(champion)}) is unchanged" if champion else "the champion is unchanged"
    body = {
        "skipped": f"Nothing was trained, so {unchanged}: {outcome.detail}.",
        "refused": f"Nothing was trained by this run: {outcome.detail}.",
        "trained": f"A challenger was trained on `{outcome.source_path or 'the config source'}`: {outcome.detail}.",
    }.get(outcome.status, f"The training failed: {outcome.detail}.")
    return f"# Retrain {state.name}: {model_name}\n\n{body}\n\nRequested because: {reason}\n"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def training_state(result: TrainingResult) -> State:
    """The training run's final state: Completed, named `Promoted` / `Rejected` / `Passed`, its message the
    outcome (a rejection says which checks failed and why)."""
    return Completed(name=result.outcome.capitalize(), message=result.outcome_line(), data=result)
