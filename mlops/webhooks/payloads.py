"""A source's payload schema (JSON Schema, draft 2020-12, in configs/webhooks.yaml), checked before its
template runs, so a body with an empty, null, missing or wrong-typed field is a 422 naming the field
and the rule, not an event that fails later where the sender cannot see it.

Messages never echo the sender's values (they end up in the bridge's log), only JSON types and rules.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match

JSON_TYPES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
              float: "a number", type(None): "null"}
SCHEMA_TYPES = {"object": "an object", "array": "a list", "string": "a string", "boolean": "a boolean",
                "integer": "an integer", "number": "a number", "null": "null"}


class PayloadInvalid(Exception):
    """The body does not meet its source's payload schema: the sender gets 422."""


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ValueError (one sentence) when `schema` is not a valid JSON Schema."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
        raise ValueError(f"not a valid JSON Schema at {where}: {exc.message[:200]}") from None


def _json_type(value: object) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def _describe(error: ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    field = f"payload field '{where}'" if where else "the payload"
    rule, wanted = error.validator, error.validator_value
    if rule == "required":
        present = error.instance if isinstance(error.instance, dict) else {}
        missing = [name for name in wanted if name not in present]
        inner = f"'{where}.{missing[0]}'" if where else f"'{missing[0]}'"
        return f"payload field {inner} is required" if missing else f"{field} lacks a required field"
    if rule == "type":
        kinds = wanted if isinstance(wanted, list) else [wanted]
        names = [SCHEMA_TYPES.get(str(k), str(k)) for k in kinds]
        return f"{field} must be {' or '.join(names)}, got {_json_type(error.instance)}"
    if rule == "minLength":
        return f"{field} must not be empty" if wanted == 1 else f"{field} must have at least {wanted} characters"
    if rule == "maxLength":
        return f"{field} must have at most {wanted} characters"
    what = error.schema.get("description") if isinstance(error.schema, dict) else None
    if rule in {"pattern", "not"} and what:  # the schema says in words what the rule asks
        return f"{field} must be {what}"
    if rule == "pattern":
        return f"{field} must match the pattern {wanted}"
    if rule == "additionalProperties":
        return f"{field} has fields the schema does not allow"
    if rule in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "enum",
                "const"}:
        return f"{field} breaks the rule {rule}: {str(wanted)[:100]}"
    return f"{field} breaks the schema's rule '{rule}'"


class PayloadSchema:
    """A compiled payload schema for one source."""

    def __init__(self, source: str, schema: dict[str, Any]) -> None:
        self.source = source
        self._validator = Draft202012Validator(schema)

    def check(self, body: object) -> None:
        """Raise PayloadInvalid with one sentence naming the first failing field and its rule."""
        error = best_match(self._validator.iter_errors(body))
        if error is not None:
            raise PayloadInvalid(f"{_describe(error)} (source '{self.source}' payload schema)")
