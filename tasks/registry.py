"""Registry stage: find the champion, register every evaluated challenger, move aliases on a pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mlops.core.contract import DataContract
from mlops.registry import versions as registry
from mlops.registry.tracking import dumps, log_model_version, log_run_artifacts
from tasks.common import stage_task


@stage_task("load_champion", io=True)
def load_champion(model_name: str, with_reference: bool = False) -> registry.ModelBundle | None:
    """The champion with its contract (and its training reference sample, for drift), or None before the
    first promotion; the one champion loader every flow uses."""
    return registry.load_champion(model_name, with_reference=with_reference)


find_champion = load_champion  # the training flow's name for it until the flow is rewired


@task(name="register_challenger", cache_policy=NONE)
def register_challenger(run_id: str, model: Any, model_name: str, X_example: pd.DataFrame, contract_json: str) -> str:
    """Log and register the challenger (signature, input example, skops) with its data contract."""
    optional = DataContract.from_json(contract_json).optional_inputs
    version = log_model_version(run_id, model, model_name, X_example, model.predict(X_example),
                                optional_columns=optional)
    log_run_artifacts(run_id, [], {"contract/contract.json": contract_json})
    return version


@task(name="attach_artifacts", cache_policy=NONE)
def attach_artifacts(run_id: str, artifacts: list[tuple[str, Path]], texts: dict[str, str]) -> None:
    """Plots, the training reference sample, quarantined rows and summaries, on the version's run."""
    log_run_artifacts(run_id, artifacts, texts)


@task(name="record_verdict", cache_policy=NONE)
def record_verdict(run_id: str, model_name: str, version: str, verdict_json: str, tags: dict[str, str],
                   card: str) -> None:
    """Attach the final gate verdict, lineage tags and the model card to the version and its run."""
    from mlops.registry.versions import client

    c = client()
    for k, v in tags.items():
        c.set_model_version_tag(model_name, version, k, v[:4900])
    c.update_model_version(model_name, version, description=card[:20000])
    c.log_text(run_id, verdict_json, "evaluation/gate_verdict.json")
    c.log_text(run_id, card, "card/model_card.md")
    c.set_tag(run_id, "gate.passed", tags["gate.passed"])
    c.set_tag(run_id, "gate.reasons", tags["gate.reasons"][:4900])
    c.log_metric(run_id, "gate_passed", float(tags["gate.passed"] == "true"))


@task(name="promote_champion", cache_policy=NONE)
def promote_champion(model_name: str, version: str, passed: bool, reasons: list[str], by: str) -> dict[str, Any] | None:
    """Move `champion` to the version only when the gate passed; otherwise record why not."""
    from mlops.core import events

    logger = get_run_logger()
    if not passed:
        logger.warning("Version %s not promoted: %s", version, "; ".join(reasons)[:500])
        events.emit(events.GATE_REJECTED, model_name, {"version": version, "reasons": reasons, "by": by})
        return None
    entry = registry.promote(model_name, version, by, "gate passed: " + "; ".join(reasons))
    was = f"replacing version {entry['from_version']}" if entry["from_version"] else "the first champion"
    logger.info("Version %s is now champion (%s)", version, was)
    events.emit(events.MODEL_PROMOTED, model_name, entry)
    return entry


def version_tags(verdict_passed: bool, reasons: list[str], metrics: dict[str, float], lineage: dict[str, str],
                 task_kind: str, family: str) -> dict[str, str]:
    tags = {"gate.passed": str(verdict_passed).lower(), "gate.reasons": dumps(reasons), "task": task_kind,
            "family": family}
    tags.update({f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()})
    tags.update({f"lineage.{k}": v for k, v in lineage.items()})
    return tags
