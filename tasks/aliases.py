"""Moving `champion` by hand (the promote and rollback flows). Kept out of tasks.registry, the training flow's
stage, which imports the search and scikit-learn: a promotion or rollback loads no training code."""

from __future__ import annotations

from mlops.core import events
from mlops.registry import versions as registry
from tasks.common import stage_task


@stage_task("move_champion", io=True)
def move_champion(model_name: str, version: int | None, by: str, reason: str,
                  force: bool = False) -> registry.AliasMove:
    """Move `champion` by hand: to `version`, or back to the version holding `previous` (version None).

    A gate-failed target is refused unless `force` (the override, with `reason`, is recorded on the version
    and the move marked forced). Recorded like every alias move and announced as an event (`forced` in its
    payload when forced)."""
    if version is None:
        entry = registry.rollback(model_name, by, reason, force=force)
        events.emit(events.MODEL_ROLLED_BACK, model_name, entry, entry["to_version"])
    else:
        entry = registry.promote(model_name, str(version), by, reason, force=force)
        events.emit(events.MODEL_PROMOTED, model_name, entry, entry["to_version"])
    return registry.AliasMove.of(entry)
