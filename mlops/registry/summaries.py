"""What the Prefect UI shows about a training run and a model's registered versions, as text: the leaderboard
table, the training summary with its gate verdict and MLflow link, the versions table and a move of
`champion` made by hand. Pure text building; tasks/reporting.py publishes it."""

from __future__ import annotations

from typing import Any

from mlops.core.validation import rows_line
from mlops.registry.links import mlflow_run_url, mlflow_ui_command
from mlops.registry.verdict import gate_label
from mlops.registry.versions import AliasMove
from mlops.training.result import TrainingResult

TABLE_CELL = 60  # characters a table artifact cell may hold: the UI cuts longer ones off


def _cell(value: Any) -> Any:
    text = value if isinstance(value, (int, float)) else str(value)
    if isinstance(text, str) and len(text) > TABLE_CELL:
        return text[:TABLE_CELL - 3].rstrip() + "..."
    return text


def version_label(version: Any) -> str:
    """`v<N>`, or `none` when there is no version."""
    return f"v{version}" if version not in (None, "", "None") else "none"


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


def alias_move_markdown(move: AliasMove, model_name: str, what: str) -> str:
    """A move of `champion` made by hand (`what`: Promotion or Rollback): from where to where, when, by whom, why."""
    came = f"from {version_label(move.from_version)} " if move.from_version else ""
    forced = "\n\n**Forced** over a failed gate; the override is recorded on the version." if move.forced else ""
    return (f"# {what}: {model_name}\n\n`champion` moved {came}to {version_label(move.to_version)} at {move.at} by "
            f"{move.by}.\n\nReason: {move.reason}{forced}\n")
