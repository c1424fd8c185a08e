"""The OpenAPI 3.0 description of the server, with the record schema taken from the served contract."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops.serving.records import CATEGORY, DATETIME, ID_INT, NUMERIC, Rule

if TYPE_CHECKING:
    from mlops.serving.model import ServedModel

ERROR = {"$ref": "#/components/schemas/Error"}


def _field(rule: Rule) -> dict[str, Any]:
    s: dict[str, Any]
    if rule.kind == NUMERIC:
        s = {"type": "number"}
        if rule.lo is not None:
            s["minimum"] = rule.lo
        if rule.hi is not None:
            s["maximum"] = rule.hi
    elif rule.kind == CATEGORY:
        s = {"type": "string"}
        if rule.allowed is not None:
            s["enum"] = sorted(rule.allowed) + ([None] if rule.nullable else [])
    elif rule.kind == DATETIME:
        s = {"type": "string", "format": "date-time"}
    elif rule.kind == ID_INT:
        s = {"type": "integer"}
    else:
        s = {"type": "string"}
    if rule.nullable or not rule.required:
        s["nullable"] = True
    return s


def _responses(ok: dict[str, Any], auth: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": {"description": "scored", "content": {"application/json": {"schema": ok}}},
        "400": {"description": "malformed JSON or request shape", "content": {"application/json": {"schema": ERROR}}},
        "413": {"description": "body or row count over the limit", "content": {"application/json": {"schema": ERROR}}},
        "415": {"description": "not application/json", "content": {"application/json": {"schema": ERROR}}},
        "422": {"description": "breaks the data contract, or a record has more than half of its required inputs "
                               "null (the null budget; `fields` names them)",
                "content": {"application/json": {"schema": ERROR}}},
        "503": {"description": "no model loaded yet", "content": {"application/json": {"schema": ERROR}}},
    }
    if auth:
        out["401"] = {"description": "missing or wrong bearer token",
                      "content": {"application/json": {"schema": ERROR}}}
    return out


def openapi_schema(m: ServedModel | None, max_rows: int, auth: bool = False) -> dict[str, Any]:
    if m is not None:
        rules = m.validator.rules
        record: dict[str, Any] = {
            "type": "object",
            "properties": {r.name: _field(r) for r in rules},
            "required": [r.name for r in rules if r.required],
            "additionalProperties": False,
        }
        title = f"{m.name} v{m.version}"
    else:
        record = {"type": "object"}
        title = "model server (no model loaded yet)"
    records = {"type": "array", "items": {"$ref": "#/components/schemas/Record"}, "minItems": 1, "maxItems": max_rows}
    predict_body = {"anyOf": [
        {"$ref": "#/components/schemas/Record"},
        records,
        {"type": "object", "properties": {"records": records}, "required": ["records"], "additionalProperties": False},
    ]}
    mlflow_body = {"anyOf": [
        {"type": "object", "required": ["dataframe_split"], "additionalProperties": False, "properties": {
            "dataframe_split": {"type": "object", "required": ["columns", "data"], "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "data": {"type": "array", "items": {"type": "array", "items": {}}},
            }},
            "params": {"type": "object"},
        }},
        {"type": "object", "required": ["dataframe_records"], "additionalProperties": False,
         "properties": {"dataframe_records": records, "params": {"type": "object"}}},
        {"type": "object", "required": ["inputs"], "additionalProperties": False,
         "properties": {"inputs": records, "params": {"type": "object"}}},
        {"type": "object", "required": ["instances"], "additionalProperties": False,
         "properties": {"instances": records, "params": {"type": "object"}}},
    ]}
    security = [{"bearer": []}] if auth else []
    predict_ok = {"type": "object", "required": ["request_id", "model_version", "predictions"], "properties": {
        "request_id": {"type": "string"}, "model": {"type": "string"}, "model_version": {"type": "string"},
        "predictions": {"type": "array", "items": {}},
        "classes": {"type": "array", "items": {}},
        "probabilities": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
    }}
    plain = {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": m.version if m else "0"},
        "paths": {
            "/predict": {"post": {
                "summary": "Score one record, a list of records, or {\"records\": [...]}",
                "security": security,
                "requestBody": {"required": True, "content": {"application/json": {"schema": predict_body}}},
                "responses": _responses(predict_ok, auth),
            }},
            "/invocations": {"post": {
                "summary": "MLflow scoring protocol",
                "security": security,
                "requestBody": {"required": True, "content": {"application/json": {"schema": mlflow_body}}},
                "responses": _responses({"type": "object", "required": ["predictions"],
                                         "properties": {"predictions": {"type": "array", "items": {}}}}, auth),
            }},
            "/health": {"get": {"summary": "liveness", "responses": plain}},
            "/ready": {"get": {"summary": "readiness: 200 once a model serves, with status 'ok' or 'degraded' "
                                         "(registry unreachable, or the alias names a version not served) and why",
                               "responses": {
                **plain, "503": {"description": "no model loaded yet",
                                 "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/model": {"get": {"summary": "the served version", "responses": {
                **plain, "503": {"description": "no model loaded yet",
                                 "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/admin/reload": {"post": {
                "summary": "check the alias now and swap if it moved (token required)",
                "security": [{"bearer": []}],
                "parameters": [{"name": "wait", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["true", "false"]}}],
                "responses": {
                    **plain,
                    "202": {"description": "check requested", "content": {"application/json": {"schema": {"type": "object"}}}},
                    "401": {"description": "missing or wrong token", "content": {"application/json": {"schema": ERROR}}},
                    "403": {"description": "reload disabled", "content": {"application/json": {"schema": ERROR}}},
                },
            }},
        },
        "components": {
            "schemas": {
                "Record": record,
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"}, "field": {"type": "string", "nullable": True},
                    "row": {"type": "integer", "nullable": True}, "errors": {"type": "array", "items": {}},
                    "fields": {"type": "array", "items": {"type": "string"}},
                }},
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
