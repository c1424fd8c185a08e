"""Payload -> Prefect event, through a sandboxed Jinja2 template (as Prefect Cloud webhooks do).

A template renders to a JSON object with `event`, `resource` (which must hold `prefect.resource.id`)
and optionally `payload` and `related`. It sees `body` (the parsed JSON), `headers` (lower-cased,
without the signature, cookies or authorization), `source`, `delivery_id` and `received` (ISO time).
Undefined names are errors, so a payload missing a field the template uses is refused (422) instead
of emitting an event with a blank in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import jinja2
import orjson
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mlops.core.errors import ConfigError

ALLOWED_KEYS = frozenset({"event", "resource", "payload", "related"})
# Names Prefect itself emits; a webhook must not be able to impersonate the orchestrator.
RESERVED_PREFIXES = ("prefect.", "prefect-cloud.")
HIDDEN_HEADERS = frozenset({"x-mlops-signature", "authorization", "cookie", "proxy-authorization"})


class TemplateFailure(Exception):
    """The template failed or its output is not a valid event: the sender gets 422."""


def make_environment() -> ImmutableSandboxedEnvironment:
    """The sandbox templates run in: no attribute mutation, no unsafe calls, undefined is an error
    (also inside `tojson`, which would otherwise fail with a TypeError about StrictUndefined)."""
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    plain_tojson = env.filters["tojson"]

    def tojson(eval_ctx: Any, value: Any, indent: int | None = None) -> Any:
        if isinstance(value, jinja2.Undefined):
            value._fail_with_undefined_error()
        return plain_tojson(eval_ctx, value, indent)

    tojson.jinja_pass_arg = plain_tojson.jinja_pass_arg  # type: ignore[attr-defined]
    env.filters["tojson"] = tojson
    return env


class EventTemplate:
    """A compiled template for one source."""

    def __init__(self, source: str, text: str, env: ImmutableSandboxedEnvironment | None = None) -> None:
        self.source = source
        try:
            self._template = (env or make_environment()).from_string(text)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(
                f"webhook source '{source}': template syntax error on line {exc.lineno}: {exc.message}"
            ) from None

    def render(self, context: dict[str, Any]) -> dict[str, Any]:
        """Render to a dict; raise TemplateFailure with one sentence on any error."""
        try:
            text = self._template.render(context)
        except jinja2.UndefinedError as exc:
            raise TemplateFailure(
                f"template for source '{self.source}' uses a value the payload lacks ({_missing(exc.message)}); "
                "send it, or make it optional in the template with |default(none)"
            ) from None
        except jinja2.TemplateError as exc:  # includes SecurityError from the sandbox
            raise TemplateFailure(f"template for source '{self.source}' failed: {exc}") from None
        except Exception as exc:  # a template can divide by zero or compare str with int
            raise TemplateFailure(f"template for source '{self.source}' failed: {type(exc).__name__}: {exc}") from None
        try:
            out = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise TemplateFailure(
                f"template for source '{self.source}' did not render valid JSON ({exc.msg} at char {exc.pos}); "
                "use the |tojson filter for values"
            ) from None
        if not isinstance(out, dict):
            raise TemplateFailure(
                f"template for source '{self.source}' must render a JSON object, got {type(out).__name__}"
            )
        return out


def _missing(message: str | None) -> str:
    """Jinja's "'dict object' has no attribute 'path'" as "no field 'path'"."""
    text = message or "an undefined value"
    marker = "has no attribute "
    return f"no field {text.split(marker, 1)[1]}" if marker in text else text


def template_context(
    body: Any, headers: list[tuple[bytes, bytes]], source: str, delivery_id: str, received: datetime
) -> dict[str, Any]:
    """What a template may see about the request."""
    visible = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        if name not in HIDDEN_HEADERS:
            visible[name] = raw_value.decode("latin-1")
    return {
        "body": body,
        "headers": visible,
        "source": source,
        "delivery_id": delivery_id,
        "received": received.isoformat(),
    }


@dataclass(frozen=True)
class EventLimits:
    """The Prefect server's limits on an event; events over `max_size_bytes` are dropped by the
    server without an error, so the bridge must refuse them itself."""

    max_labels: int = 500
    max_related: int = 100
    max_name_length: int = 1024
    max_size_bytes: int = 1_500_000

    @classmethod
    def from_prefect_settings(cls) -> EventLimits:
        from prefect.settings import get_current_settings

        events = get_current_settings().server.events
        return cls(
            max_labels=events.maximum_labels_per_resource,
            max_related=events.maximum_related_resources,
            max_name_length=events.maximum_event_name_length,
            max_size_bytes=events.maximum_size_bytes,
        )


def _check_resource(value: Any, where: str, limits: EventLimits, role: bool) -> None:
    if not isinstance(value, dict):
        raise TemplateFailure(f"template output is not a valid Prefect event: {where} must be an object of labels")
    for key, label in value.items():
        if not isinstance(label, str):
            raise TemplateFailure(
                f"template output is not a valid Prefect event: {where}.{key}: label values must be strings "
                f"(got {type(label).__name__}; render it with |string|tojson)"
            )
    if len(value) > limits.max_labels:
        raise TemplateFailure(
            f"template output is not a valid Prefect event: {where} has more than {limits.max_labels} labels"
        )
    required = ("prefect.resource.id", "prefect.resource.role") if role else ("prefect.resource.id",)
    for label in required:
        if not value.get(label):
            raise TemplateFailure(
                f"template output is not a valid Prefect event: {where} needs a non-empty '{label}' label"
            )


def build_event(
    rendered: dict[str, Any],
    *,
    event_id: UUID,
    occurred: datetime,
    source: str,
    delivery_id: str,
    limits: EventLimits = EventLimits(),
) -> dict[str, Any]:
    """Validate rendered output by Prefect's event rules and return the event, ready for JSON.

    The rules are those of Prefect's Event model (labels are strings, `prefect.resource.id` and,
    for related resources, `prefect.resource.role` are required, counts are bounded) checked
    directly, because building the pydantic model costs more than the rest of a request; a unit
    test holds the two in agreement. The bridge adds a related resource `mlops.webhook.<source>`
    (role `webhook`) carrying the delivery id, so every event traces back to its call.
    """
    extra = sorted(set(rendered) - ALLOWED_KEYS)
    if extra:
        raise TemplateFailure(
            f"template output has unexpected keys {extra}; allowed: event, resource, payload, related"
        )
    name = rendered.get("event")
    if not isinstance(name, str) or not name.strip():
        raise TemplateFailure("template output needs a non-empty string 'event' (e.g. mlops.data.arrived)")
    if len(name) > limits.max_name_length:
        raise TemplateFailure(f"event name is longer than Prefect's limit of {limits.max_name_length} characters")
    if name.startswith(RESERVED_PREFIXES):
        raise TemplateFailure(f"event name {name!r} is reserved for Prefect itself; use your own prefix such as mlops.")
    if "resource" not in rendered:
        raise TemplateFailure("template output needs a 'resource' object with a 'prefect.resource.id' label")
    _check_resource(rendered["resource"], "resource", limits, role=False)
    related = rendered.get("related", [])
    if not isinstance(related, list):
        raise TemplateFailure("template output is not a valid Prefect event: 'related' must be a list of resources")
    if len(related) + 1 > limits.max_related:
        raise TemplateFailure(f"template output has more than {limits.max_related - 1} related resources")
    for i, resource in enumerate(related):
        _check_resource(resource, f"related.{i}", limits, role=True)
    payload = rendered.get("payload", {})
    if not isinstance(payload, dict):
        raise TemplateFailure("template output is not a valid Prefect event: 'payload' must be an object")
    event = {
        "occurred": occurred.isoformat(),
        "event": name,
        "resource": rendered["resource"],
        "related": [
            *related,
            {
                "prefect.resource.id": f"mlops.webhook.{source}",
                "prefect.resource.role": "webhook",
                "prefect.resource.name": source,
                "mlops.webhook.delivery": delivery_id,
            },
        ],
        "payload": payload,
        "id": str(event_id),
    }
    size = len(orjson.dumps(event))
    if size > limits.max_size_bytes:
        raise TemplateFailure(
            f"the event would be {size} bytes; Prefect drops events over {limits.max_size_bytes} bytes"
        )
    return event
