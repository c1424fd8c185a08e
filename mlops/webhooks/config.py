"""configs/webhooks.yaml: which senders may post, where their secrets live, how payloads map to events.

Validated once when the bridge starts; a bad file fails naming the file, the field and the reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops.core.config import read_yaml_mapping
from mlops.core.errors import ConfigError
from mlops.webhooks.payloads import check_schema

SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """One sender: its secret's environment variable, the JSON Schema its body must meet, its event template."""

    secret_env: Annotated[str, Field(pattern=ENV_NAME)]
    template: Annotated[str, Field(min_length=2)]
    description: str = ""
    # JSON Schema (draft 2020-12) checked before the template runs: a body that fails it gets 422 naming the field
    payload_schema: dict[str, Any] | None = None

    @field_validator("payload_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_schema(value)
        return value


class BridgeConfig(_Strict):
    """The whole webhooks.yaml file."""

    max_body_bytes: int = Field(1024 * 1024, ge=1, le=16 * 1024 * 1024)
    timestamp_tolerance_seconds: int = Field(300, ge=1, le=3600)
    # Delivery ids are remembered far beyond the timestamp window so that a sender that re-sends an
    # old delivery with a fresh timestamp (a manual "redeliver") still gets 409, not a second run.
    delivery_retention_hours: float = Field(168.0, gt=0)
    # How long one POST to Prefect may take before it counts as failed (the batch is retried).
    emit_timeout_seconds: float = Field(10.0, gt=0, le=120)
    # Events accepted but not yet taken by Prefect; beyond this, new deliveries get 503 + Retry-After.
    max_queued_events: int = Field(100_000, ge=1)
    sources: dict[str, SourceConfig] = Field(default_factory=dict)

    @field_validator("sources")
    @classmethod
    def _names(cls, value: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        for name in value:
            if not SOURCE_NAME.match(name):
                raise ValueError(f"source name {name!r} must be lowercase letters, digits, '-' or '_' (max 63)")
        return value

    @model_validator(mode="after")
    def _retention_covers_window(self) -> BridgeConfig:
        if self.delivery_retention_hours * 3600 < 2 * self.timestamp_tolerance_seconds:
            raise ValueError("delivery_retention_hours must cover at least twice timestamp_tolerance_seconds")
        return self


def load_webhook_config(path: str | Path) -> BridgeConfig:
    """Read and validate webhooks.yaml; raise ConfigError naming file, field and reason."""
    p = Path(path)
    raw = read_yaml_mapping(p, "webhook config file", "a mapping with a 'sources' key")
    try:
        return BridgeConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(part) for part in err["loc"]) or "<top level>"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{p}: field '{field}': {err['msg']}{more}") from None
