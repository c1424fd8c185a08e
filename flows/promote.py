"""Manual promotion and rollback flows: move `champion` by hand, recorded like any other move."""

from __future__ import annotations

from prefect import flow, get_run_logger, runtime
from prefect.states import Failed, State

from mlops.core.config import load_config
from mlops.core.errors import MLOpsError
from mlops.core.settings import configure_environment
from mlops.registry.versions import AliasMove
from tasks.registry import move_champion
from tasks.reporting import publish_alias_move


@flow(name="promote")
def promote(config_path: str, version: int, reason: str = "manual promotion") -> AliasMove | State:
    """Make a registered version of the config's model the champion; the replaced one keeps alias `previous`."""
    return _move(config_path, version, reason, "promote", "Promotion")


@flow(name="rollback")
def rollback(config_path: str, reason: str = "manual rollback") -> AliasMove | State:
    """Move the config's model's champion back to the version holding `previous`."""
    return _move(config_path, None, reason, "rollback", "Rollback")


def _move(config_path: str, version: int | None, reason: str, kind: str, what: str) -> AliasMove | State:
    """Load the config, move `champion` (to `version`, or back when None), publish the move; a user's error
    (no such version, nothing to roll back to) fails the run with one sentence."""
    configure_environment()
    rid = runtime.flow_run.id
    try:
        model_name = load_config(config_path).registry.model_name
        move = move_champion(model_name, version, f"{kind} flow run {rid}" if rid else kind, reason)
    except MLOpsError as exc:
        get_run_logger().error("%s", exc)
        return Failed(message=str(exc))
    publish_alias_move(move, model_name, what)
    return move
