"""Guarded manual promotion: move `champion` by hand, refusing a gate-failed version unless forced
with a reason (the override is recorded on the version and the move marked forced in the history)."""

from __future__ import annotations

from mlops.core import events
from mlops.registry import versions as registry
from tasks.common import stage_task


@stage_task("move_champion_guarded", io=True)
def move_champion_guarded(model_name: str, version: int | None, by: str, reason: str,
                          force: bool = False) -> registry.AliasMove:
    """Move `champion` to `version`, or back to `previous` (version None); a gate-failed target needs `force`.

    Recorded like every alias move and announced as an event (`forced` in its payload when forced)."""
    if version is None:
        entry = registry.rollback(model_name, by, reason, force=force)
        events.emit(events.MODEL_ROLLED_BACK, model_name, entry, entry["to_version"])
    else:
        entry = registry.promote(model_name, str(version), by, reason, force=force)
        events.emit(events.MODEL_PROMOTED, model_name, entry, entry["to_version"])
    return registry.AliasMove.of(entry)
