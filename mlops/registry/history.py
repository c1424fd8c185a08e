"""Where the alias history is kept: each move is a tag `alias_move.<epoch-ms>.<alias>` (JSON) on the model
version the alias moved to (the version it left, when the alias was removed), so the registered model's
own tag list stays fixed however often `champion` moves.

A move whose versions were all deleted is kept as a registered-model tag with the same key and JSON
(nowhere else to keep it); readers take both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

ALIAS_MOVE_PREFIX = "alias_move."


def move_key(epoch_ms: int, alias: str) -> str:
    """The tag key of one move."""
    return f"{ALIAS_MOVE_PREFIX}{epoch_ms:d}.{alias}"


def all_versions(c: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of the model with its tags (all pages of the search)."""
    out: list[ModelVersion] = []
    token = None
    while True:
        page = c.search_model_versions(f"name='{name}'", page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def entries_from_tags(tags: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The moves recorded in one tag set, by key (unreadable values are skipped)."""
    out = {}
    for key, value in tags.items():
        if not key.startswith(ALIAS_MOVE_PREFIX):
            continue
        try:
            entry = json.loads(value)
            int(key.split(".")[1])
        except (ValueError, IndexError, TypeError):
            continue
        if isinstance(entry, dict) and "alias" in entry:
            out[key] = entry
    return out


def sorted_history(tag_sets: Iterable[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Every move found in the tag sets (model-level and per version), oldest first, each key once."""
    found: dict[str, dict[str, Any]] = {}
    for tags in tag_sets:
        found.update(entries_from_tags(tags))
    order = sorted(found.items(), key=lambda kv: (int(kv[0].split(".")[1]), str(kv[1].get("at", ""))))
    return [entry for _, entry in order]


def read_history(c: MlflowClient, name: str, model_tags: Mapping[str, str]) -> list[dict[str, Any]]:
    """The model's alias history, oldest first: the moves on its versions plus any model-level ones left."""
    return sorted_history([model_tags, *(dict(mv.tags) for mv in all_versions(c, name))])


def write_move(c: MlflowClient, name: str, key: str, entry: Mapping[str, Any]) -> str | None:
    """Record a move on its version; returns that version, or None when it had to be kept on the model
    (its versions no longer exist)."""
    from mlflow.exceptions import MlflowException

    value = json.dumps(entry)
    for version in dict.fromkeys(v for v in (entry.get("to_version"), entry.get("from_version")) if v):
        try:
            c.set_model_version_tag(name, str(version), key, value)
            return str(version)
        except MlflowException:
            continue  # deleted: try the other version
    c.set_registered_model_tag(name, key, value)
    return None


def delete_move(c: MlflowClient, name: str, key: str, version: str | None) -> None:
    """Remove a move written by `write_move` (a move that failed after its entry was written)."""
    if version is None:
        c.delete_registered_model_tag(name, key)
    else:
        c.delete_model_version_tag(name, version, key)
