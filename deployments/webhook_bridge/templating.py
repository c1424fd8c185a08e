"""Payload -> Prefect event, through a sandboxed Jinja2 template (as Prefect Cloud webhooks do).

A template renders to a JSON object with `event`, `resource` (which must hold `prefect.resource.id`)
and optionally `payload` and `related`. It sees `body` (the parsed JSON), `headers` (lower-cased,
without the signature, cookies or authorization), `source`, `delivery_id` and `received` (ISO time).
Undefined names are errors, so a payload missing a field the template uses is refused (422) instead
of emitting an event with a blank in it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import jinja2
import orjson
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mlops.errors import ConfigError

ALLOWED_KEYS = frozenset({"event", "resource", "payload", "related"})
# Names Prefect itself emits; a webhook must not be able to impersonate the orchestrator.
RESERVED_PREFIXES = ("prefect.", "prefect-cloud.")
HIDDEN_HEADERS = frozenset({"x-mlops-signature", "authorization", "cookie", "proxy-authorization"})


class TemplateFailure(Exception):
    """The template failed or its output is not a valid event: the sender gets 422."""


def make_environment() -> ImmutableSandboxedEnvironment:
    """The sandbox templates run in: no attribute mutation, no unsafe calls, undefined is an error."""
    return ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


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
                f"template for source '{self.source}' uses a value the payload lacks: {exc.message}"
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


def build_event(
    rendered: dict[str, Any], *, event_id: UUID, occurred: datetime, source: str, delivery_id: str
) -> dict[str, Any]:
    """Validate rendered output as a Prefect event and return its JSON-ready form.

    The bridge adds a related resource `mlops.webhook.<source>` (role `webhook`) carrying the
    delivery id, so every event can be traced back to the call that caused it.
    """
    from prefect.events.schemas.events import Event
    from pydantic import ValidationError

    extra = sorted(set(rendered) - ALLOWED_KEYS)
    if extra:
        raise TemplateFailure(
            f"template output has unexpected keys {extra}; allowed: event, resource, payload, related"
        )
    name = rendered.get("event")
    if not isinstance(name, str) or not name.strip():
        raise TemplateFailure("template output needs a non-empty string 'event' (e.g. mlops.data.arrived)")
    if name.startswith(RESERVED_PREFIXES):
        raise TemplateFailure(f"event name {name!r} is reserved for Prefect itself; use your own prefix such as mlops.")
    if not isinstance(rendered.get("resource"), dict):
        raise TemplateFailure("template output needs a 'resource' object with a 'prefect.resource.id' label")
    related = rendered.get("related", [])
    if not isinstance(related, list):
        raise TemplateFailure("template output 'related' must be a list of resources")
    webhook = {
        "prefect.resource.id": f"mlops.webhook.{source}",
        "prefect.resource.role": "webhook",
        "prefect.resource.name": source,
        "mlops.webhook.delivery": delivery_id,
    }
    try:
        event = Event(
            event=name,
            resource=rendered["resource"],
            related=[*related, webhook],
            payload=rendered.get("payload", {}),
            id=event_id,
            occurred=occurred,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "event"
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise TemplateFailure(f"template output is not a valid Prefect event: {where}: {msg}") from None
    return event.model_dump(mode="json")
