"""Names derived from user-given names, in one place so every caller gets the same key for the same model."""

from __future__ import annotations


def slug(name: str) -> str:
    """A name as a Prefect artifact key or folder part: lowercase letters, digits and dashes ("model" if empty)."""
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-") or "model"


def artifact_key(model_name: str, what: str) -> str:
    """The Prefect artifact key for one kind of artifact about a model, e.g. `churn-drift-summary`."""
    return f"{slug(model_name)}-{slug(what)}"
