"""Manual promotion and rollback flows: move `champion` by hand, recorded like any other move."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from mlops.core import events
from mlops.core.config import load_config
from mlops.core.errors import MLOpsError
from mlops.core.settings import configure_environment
from mlops.registry import versions as registry


def _by(kind: str) -> str:
    rid = runtime.flow_run.id
    return f"{kind} flow run {rid}" if rid else kind


def _record(entry: dict[str, Any], model_name: str, what: str) -> None:
    create_markdown_artifact(
        f"# {what}: {model_name}\n\n`champion` moved from v{entry['from_version']} to v{entry['to_version']} "
        f"at {entry['at']} by {entry['by']}.\n\nReason: {entry['reason']}\n",
        key=f"{model_name.lower().replace('_', '-').replace('.', '-')}-{what.lower()}",
    )


@flow(name="promote")
def promote(config_path: str, version: int, reason: str = "manual promotion") -> Any:
    """Make a registered version of the config's model the champion; the replaced one keeps alias `previous`."""
    configure_environment()
    try:
        model_name = load_config(config_path).registry.model_name
        entry = registry.promote(model_name, str(version), _by("promote"), reason)
    except MLOpsError as exc:
        get_run_logger().error("%s", exc)
        return Failed(message=str(exc))
    _record(entry, model_name, "Promotion")
    events.emit(events.MODEL_PROMOTED, model_name, entry)
    return entry


@flow(name="rollback")
def rollback(config_path: str, reason: str = "manual rollback") -> Any:
    """Move the config's model's champion back to the version holding `previous`."""
    configure_environment()
    try:
        model_name = load_config(config_path).registry.model_name
        entry = registry.rollback(model_name, _by("rollback"), reason)
    except MLOpsError as exc:
        get_run_logger().error("%s", exc)
        return Failed(message=str(exc))
    _record(entry, model_name, "Rollback")
    events.emit(events.MODEL_ROLLED_BACK, model_name, entry)
    return entry
