"""Manual promotion and rollback flows: move `champion` by hand, recorded like any other move.

A version whose gate failed is refused unless `force` is set and a reason given; the override is then
recorded on the version (the model server serves it only with that record) and in the alias history."""

from __future__ import annotations

from prefect import flow, get_run_logger, runtime
from prefect.states import Failed, State

from mlops.core.config import load_config
from mlops.core.errors import MLOpsError, RegistryError
from mlops.core.settings import configure_environment
from mlops.registry.versions import AliasMove
from tasks.promotion import move_champion_guarded
from tasks.reporting import publish_alias_move

DEFAULT_PROMOTE_REASON = "manual promotion"
DEFAULT_ROLLBACK_REASON = "manual rollback"


@flow(name="promote")
def promote(config_path: str, version: int, reason: str = DEFAULT_PROMOTE_REASON,
            force: bool = False) -> AliasMove | State:
    """Make a registered version of the config's model the champion; the replaced one keeps alias `previous`.

    `force` (with a reason of your own) promotes a version whose gate failed."""
    return _move(config_path, version, reason, "promote", "Promotion", force, DEFAULT_PROMOTE_REASON)


@flow(name="rollback")
def rollback(config_path: str, reason: str = DEFAULT_ROLLBACK_REASON, force: bool = False) -> AliasMove | State:
    """Move the config's model's champion back to the version holding `previous`.

    `force` (with a reason of your own) rolls back to a previous champion whose gate failed."""
    return _move(config_path, None, reason, "rollback", "Rollback", force, DEFAULT_ROLLBACK_REASON)


def _move(config_path: str, version: int | None, reason: str, kind: str, what: str, force: bool,
          default_reason: str) -> AliasMove | State:
    """Load the config, move `champion` (to `version`, or back when None), publish the move; a user's error
    (no such version, a gate-failed target without force, nothing to roll back to) fails the run with one
    sentence."""
    configure_environment()
    rid = runtime.flow_run.id
    try:
        if force and (not reason.strip() or reason == default_reason):
            raise RegistryError(f"--force needs --reason saying why this {kind} overrides the gate")
        model_name = load_config(config_path).registry.model_name
        move = move_champion_guarded(model_name, version, f"{kind} flow run {rid}" if rid else kind, reason, force)
    except MLOpsError as exc:
        get_run_logger().error("%s", exc)
        return Failed(message=str(exc))
    publish_alias_move(move, model_name, what)
    return move
