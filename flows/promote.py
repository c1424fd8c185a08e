"""Manual promotion and rollback flows: move `champion` by hand, recorded like any other move.

A version whose gate failed is refused unless `force` is set and a reason given; the override is then
recorded on the version (the model server serves it only with that record) and in the alias history."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger, runtime
from prefect.states import Completed, State
from pydantic import Field

from flows.forms import ConfigPath, model_of, run_name, version_suffix
from mlops.core.config import load_config
from mlops.core.errors import MLOpsError, RegistryError
from mlops.core.settings import configure_environment
from mlops.registry.versions import AliasMove
from tasks.aliases import move_champion as move_champion_guarded
from tasks.reporting import failed_run, outcome_tags, publish_alias_move, publish_versions, tag_flow_run

DEFAULT_PROMOTE_REASON = "manual promotion"
DEFAULT_ROLLBACK_REASON = "manual rollback"


@flow(name="promote", flow_run_name=run_name("promote", suffix=version_suffix))
def promote(config_path: ConfigPath, version: Annotated[int, Field(ge=1)],
            reason: str = DEFAULT_PROMOTE_REASON, force: bool = False) -> AliasMove | State:
    """Make a registered version of the config's model the champion; the replaced one keeps alias `previous`.

    Args:
        config_path: The pipeline config (YAML) whose registered model to promote.
        version: The registered version to make champion. The `<model>-versions` table (an artifact of every
            train, promote and rollback run) lists the versions with their gate results and failed checks.
        reason: Why; recorded with the move in the alias history. Needed in your own words with `force`.
        force: Promote a version whose gate failed (REJECTED in the versions table); give a reason of your own.
    """
    return _move(config_path, version, reason, "promote", "Promotion", force, DEFAULT_PROMOTE_REASON)


@flow(name="rollback", flow_run_name=run_name("rollback"))
def rollback(config_path: ConfigPath, reason: str = DEFAULT_ROLLBACK_REASON,
             force: bool = False) -> AliasMove | State:
    """Move the config's model's champion back to the version holding `previous`.

    Args:
        config_path: The pipeline config (YAML) whose registered model to roll back.
        reason: Why; recorded with the move in the alias history. Needed in your own words with `force`.
        force: Roll back to a previous champion whose gate failed; give a reason of your own.
    """
    return _move(config_path, None, reason, "rollback", "Rollback", force, DEFAULT_ROLLBACK_REASON)


def _move(config_path: str, version: int | None, reason: str, kind: str, what: str, force: bool,
          default_reason: str) -> AliasMove | State:
    """Load the config, move `champion` (to `version`, or back when None), publish the move and the versions
    table; a user's error (no such version, a gate-failed target without force, nothing to roll back to) fails
    the run with one sentence. The final state names what happened (`Promoted` / `Rolled back`)."""
    settings = configure_environment()
    rid = runtime.flow_run.id
    model_name = None
    try:
        if force and (not reason.strip() or reason == default_reason):
            raise RegistryError(f"--force needs --reason saying why this {kind} overrides the gate")
        model_name = load_config(config_path).registry.model_name
        move = move_champion_guarded(model_name, version, f"{kind} flow run {rid}" if rid else kind, reason, force)
    except MLOpsError as exc:
        if model_name:
            publish_versions(model_name)  # what could be chosen instead
        return failed_run(exc, model_name or model_of(config_path), version, "refused")
    publish_alias_move(move, model_name, what, settings.tracking_uri)
    publish_versions(model_name)
    outcome = "rolled back" if version is None else "promoted"
    forced = ", forced over a failed gate" if move.forced else ""
    was = f" (was v{move.from_version}{forced})" if move.from_version else f" (first champion{forced})"
    message = f"{outcome} {'to ' if version is None else ''}v{move.to_version}{was}"
    get_run_logger().info("Champion: %s now champion%s", f"v{move.to_version}", was)
    tag_flow_run(*outcome_tags(model_name, move.to_version, outcome.replace(" ", "-")))
    return Completed(name=outcome.capitalize(), message=message, data=move)
