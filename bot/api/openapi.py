"""The OpenAPI 3.1 document of the operator API, generated from its operations and models."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from bot.api.access import TOKENS_SETTING
from bot.api.models import ApiError, QueryModel
from bot.api.operations import Operation

REF = "#/components/schemas/{model}"
OPENAPI_PATH = "/openapi.json"
SECURITY_SCHEME = "bearerToken"

_REFUSALS = {
    400: "A parameter is missing, unknown or not valid (details say which)",
    401: "No valid token was presented (Authorization: Bearer TOKEN)",
    403: (
        "The token may not do this (retrying needs an admin token), or no token is "
        f"configured at all ({TOKENS_SETTING}: the API refuses everything)"
    ),
    404: "No such thing",
    409: "The job is not dead, so there is nothing to retry",
    429: "Over the per-client rate limit (ARBITER_API_RATE_LIMIT_PER_MINUTE)",
    503: "The store cannot be reached; try again",
}
_RATE_HEADERS = {
    "X-RateLimit-Limit": "Requests allowed per client in any 60 seconds",
    "X-RateLimit-Remaining": "Requests left in the current 60 seconds",
    "X-RateLimit-Reset": "Seconds until the oldest counted request stops counting",
}


def openapi_document(
    operations: Iterable[Operation], *, title: str, version: str, prefix: str
) -> dict[str, Any]:
    ops = list(operations)
    models: list[type[BaseModel]] = list(dict.fromkeys([*(o.response for o in ops), ApiError]))
    refs, definitions = models_json_schema([(m, "serialization") for m in models], ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        ref = refs[(op.response, "serialization")]
        paths.setdefault(prefix + op.path, {})[op.method.lower()] = _operation(op, ref)
    paths[prefix + OPENAPI_PATH] = {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document",
            "tags": ["server"],
            "security": [],
            "responses": {
                "200": _response("The OpenAPI 3.1 document", {"type": "object"}),
                "429": _refusal(429),
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "Arbiter's operator API: what it reviewed, what it cost, what is stuck. "
                f"Send `Authorization: Bearer TOKEN` with a token of {TOKENS_SETTING} "
                "(role read, or admin to retry dead jobs)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"a token of {TOKENS_SETTING} (TOKEN:ROLE entries)",
                }
            },
        },
        "security": [{SECURITY_SCHEME: []}],
    }


def _operation(op: Operation, ref: dict[str, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    if op.path_model is not None:
        parameters += parameters_of(op.path_model, "path")
    if op.query is not None:
        parameters += parameters_of(op.query, "query")
    statuses = set(op.errors) | {429, 503}
    if op.role is not None:
        statuses |= {401, 403}
    description = op.description or op.summary
    if op.role == "admin":
        description += " Needs an admin token."
    operation: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": description,
        "tags": list(op.tags),
        "responses": {
            "200": _response(op.response.__doc__ or op.summary, ref),
            **{str(status): _refusal(status) for status in sorted(statuses)},
        },
    }
    if parameters:
        operation["parameters"] = parameters
    if op.role is None:
        operation["security"] = []
    return operation


def parameters_of(model: type[QueryModel], where: str) -> list[dict[str, Any]]:
    """A model's fields as OpenAPI parameters: query parameters are never null, only absent."""
    schema = model.model_json_schema(mode="validation", ref_template=REF)
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        prop = _without_null(prop)
        prop.pop("title", None)
        description = prop.pop("description", None)
        parameter: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": prop,
        }
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    options = prop.get("anyOf")
    if not options:
        return dict(prop)
    kept = [o for o in options if o != {"type": "null"}]
    rest = {k: v for k, v in prop.items() if k != "anyOf" and not (k == "default" and v is None)}
    if len(kept) == 1:
        return {**kept[0], **rest}
    return {"anyOf": kept, **rest}


def _headers(*, retry_after: bool = False) -> dict[str, Any]:
    headers: dict[str, Any] = {
        name: {"description": text, "required": True, "schema": {"type": "integer", "minimum": 0}}
        for name, text in _RATE_HEADERS.items()
    }
    if retry_after:
        headers["Retry-After"] = {
            "description": "Seconds to wait before the next request is let in",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    return headers


def _response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": " ".join(description.split()),
        "headers": _headers(),
        "content": {"application/json": {"schema": schema}},
    }


def _refusal(status: int) -> dict[str, Any]:
    return {
        "description": _REFUSALS[status],
        "headers": _headers(retry_after=status == 429),
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ApiError")}}},
    }
