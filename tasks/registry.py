"""Registry stage: find the champion, register every evaluated challenger, move aliases on a pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mlops import registry
from mlops.tracking import dumps, log_model_version


@task(name="find_champion", cache_policy=NONE)
def find_champion(model_name: str) -> registry.ModelBundle | None:
    """The current champion with its contract, or None before the first promotion."""
    if registry.get_version_by_alias(model_name, registry.CHAMPION) is None:
        return None
    return registry.load_bundle(model_name, registry.CHAMPION, with_reference=False)


@task(name="register_challenger", cache_policy=NONE)
def register_challenger(
    run_id: str, model: Any, model_name: str, X_example: pd.DataFrame, predictions: Any,
    artifacts: list[tuple[str, Path]], texts: dict[str, str], version_tags: dict[str, str], card: str,
) -> str:
    """Log and register the challenger with its contract, reference sample, plots, verdict, lineage and card."""
    from mlops.registry import client

    version = log_model_version(run_id, model, model_name, X_example, predictions, artifacts, texts)
    c = client()
    for k, v in version_tags.items():
        c.set_model_version_tag(model_name, version, k, v[:4900])
    c.update_model_version(model_name, version, description=card.replace("v?", f"v{version}")[:20000])
    return version


@task(name="promote_champion", cache_policy=NONE)
def promote_champion(model_name: str, version: str, passed: bool, reasons: list[str], by: str) -> dict[str, Any] | None:
    """Move `champion` to the version only when the gate passed; otherwise record why not."""
    from mlops import events

    logger = get_run_logger()
    if not passed:
        logger.warning("Version %s not promoted: %s", version, "; ".join(reasons)[:500])
        events.emit(events.GATE_REJECTED, model_name, {"version": version, "reasons": reasons, "by": by})
        return None
    entry = registry.promote(model_name, version, by, "gate passed: " + "; ".join(reasons))
    logger.info("Version %s is now champion (was %s)", version, entry["from_version"])
    events.emit(events.MODEL_PROMOTED, model_name, entry)
    return entry


def version_tags(verdict_passed: bool, reasons: list[str], metrics: dict[str, float], lineage: dict[str, str],
                 task_kind: str, family: str) -> dict[str, str]:
    tags = {"gate.passed": str(verdict_passed).lower(), "gate.reasons": dumps(reasons), "task": task_kind,
            "family": family}
    tags.update({f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()})
    tags.update({f"lineage.{k}": v for k, v in lineage.items()})
    return tags
