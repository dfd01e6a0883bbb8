"""The API described as data: routes, JSON Schemas, request validation, OpenAPI.

The app registers its handlers from the same ``Route`` table this module turns
into the OpenAPI document, and validates request bodies against the same schemas
the document publishes, so the description and the server cannot drift apart.

The validator covers the subset of JSON Schema the request schemas use (type,
required, properties, additionalProperties: false, enum, minLength, maxLength,
pattern) and names the offending field in its error, which the client gets as
``{"error": {..., "field": "sdp"}}``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .errors import ApiError

__all__ = [
    "Reply",
    "Route",
    "SDP_MAX",
    "TEXT_MAX",
    "SESSION_ID_PATTERN",
    "build_document",
    "schemas_for",
    "validate",
]

SDP_MAX = 64 * 1024  # characters of SDP accepted in an offer
TEXT_MAX = 4096  # characters an API client may ask an agent to say
SESSION_ID_PATTERN = "^[0-9a-f]{16}$"
STATES = ["created", "connecting", "active", "ending", "ended"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented response of an operation."""

    description: str
    schema: str | None = "Error"  # a name in the schemas, or None for no JSON body
    media: tuple[str, ...] = ("application/json",)
    headers: tuple[str, ...] = ()  # names in HEADERS


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    name: str  # operationId, and the route name in aiohttp's router
    summary: str
    auth: bool = True
    request: str | None = None  # schema name of the JSON body
    replies: Mapping[int, Reply] = field(default_factory=dict)
    tag: str = "sessions"
    # Operations that take the session_id this one's success response returns
    # (OpenAPI links: clients and stateful test tools follow them).
    links: tuple[str, ...] = ()
    # Query parameters as OpenAPI parameter objects without "in" (name, schema, description).
    query: tuple[Mapping[str, Any], ...] = ()


_ERR = "Error"

HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}},
    "WWW-Authenticate": {"description": "Bearer challenge (RFC 6750)", "schema": {"type": "string"}},
    "Location": {"description": "The new session's resource", "schema": {"type": "string"}},
}

_NULLABLE_STR = {"type": ["string", "null"]}


def _session_summary() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "state", "transport", "agent", "created_at", "ended_at", "end_reason"],
        "properties": {
            "id": {"type": "string", "pattern": SESSION_ID_PATTERN},
            "state": {"type": "string", "enum": STATES},
            "transport": {"type": "string"},
            "agent": {"type": "string"},
            "created_at": {"type": "number", "description": "Unix time"},
            "ended_at": {"type": ["number", "null"]},
            "end_reason": _NULLABLE_STR,
        },
    }


def schemas_for(agents: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The component schemas; the agent enum is the runtime's list of agents."""
    detail = _session_summary()
    detail["required"] = [*detail["required"], "stats", "latency", "agent_state"]
    detail["properties"] = {
        **detail["properties"],
        "stats": {
            "type": "object",
            "description": "Per-stage processing time, per-link depth and drops",
            "properties": {
                "stages": {"type": "array", "items": {"type": "object"}},
                "links": {"type": "array", "items": {"type": "object"}},
                "head_dropped": {"type": "integer"},
            },
        },
        "latency": {"type": "object", "description": "Path budget, and budget and actual latency per turn"},
        "agent_state": _NULLABLE_STR,
        "transport_stats": {"type": "object"},
    }
    from .calls import call_schemas  # the call records' routes are in the same table

    return {
        **call_schemas(),
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "field"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "field": _NULLABLE_STR,
                    },
                }
            },
        },
        "SessionSummary": _session_summary(),
        "SessionDetail": detail,
        "SessionList": {
            "type": "object",
            "required": ["sessions"],
            "properties": {"sessions": {"type": "array", "items": {"$ref": "#/components/schemas/SessionSummary"}}},
        },
        "SayRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["text"],
            "properties": {"text": {"type": "string", "minLength": 1, "maxLength": TEXT_MAX}},
            "examples": [{"text": "Hello! How can I help?"}],
        },
        "Accepted": {
            "type": "object",
            "required": ["session_id", "accepted"],
            "properties": {
                "session_id": {"type": "string", "pattern": SESSION_ID_PATTERN},
                "accepted": {"type": "boolean"},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["ok"]}},
        },
        "OpenApiDocument": {"type": "object", "required": ["openapi", "paths"]},
        "Readiness": {
            "type": "object",
            "required": ["ready", "checks"],
            "properties": {
                "ready": {"type": "boolean"},
                "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
            },
        },
    }


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "array": (list,),
    "null": (type(None),),
}


def _type_ok(value: Any, types: str | list[str]) -> bool:
    for t in [types] if isinstance(types, str) else types:
        if isinstance(value, bool) and t in ("integer", "number"):
            continue  # JSON true is not a number
        if isinstance(value, _TYPES[t]):
            return True
        if t == "integer" and isinstance(value, float) and value.is_integer():
            return True  # JSON Schema: 1.0 is an integer
    return False


def validate(schemas: dict[str, dict[str, Any]], name: str, value: Any, path: str = "") -> None:
    """Check ``value`` against schema ``name``; ApiError 400 naming the field otherwise."""
    _check(schemas, schemas[name], value, path)


def _check(schemas: dict[str, dict[str, Any]], schema: Mapping[str, Any], value: Any, path: str) -> None:
    where = path or None
    if "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
    types = schema.get("type")
    if types is not None and not _type_ok(value, types):
        raise ApiError(400, "invalid_type", f"{path or 'body'} must be of type {types}", where)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in value:
                raise ApiError(400, "missing_field", f"{path + '.' if path else ''}{key} is required", _join(path, key))
        if schema.get("additionalProperties") is False:
            unknown = sorted(set(value) - set(props))
            if unknown:
                raise ApiError(400, "unknown_field", f"unknown field {unknown[0]}", _join(path, unknown[0]))
        for key, sub in props.items():
            if key in value:
                _check(schemas, sub, value[key], _join(path, key))
    if isinstance(value, str):
        if "enum" in schema and value not in schema["enum"]:
            raise ApiError(400, "invalid_value", f"{path} must be one of {list(schema['enum'])}", where)
        if len(value) < schema.get("minLength", 0):
            raise ApiError(400, "too_short", f"{path} must not be empty", where)
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise ApiError(400, "too_long", f"{path} is longer than {schema['maxLength']} characters", where)
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise ApiError(400, "invalid_value", f"{path} does not match {schema['pattern']}", where)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise ApiError(400, "too_small", f"{path} must be at least {schema['minimum']}", where)
        if "maximum" in schema and value > schema["maximum"]:
            raise ApiError(400, "too_large", f"{path} must be at most {schema['maximum']}", where)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _content(reply: Reply) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{reply.schema}"} if reply.schema else {"type": "string"}
    return {media: {"schema": schema} for media in reply.media}


def _param_schema(name: str, assets: Sequence[str]) -> dict[str, Any]:
    if name in ("session_id", "call_id"):  # a call record is named by its session's id
        return {"type": "string", "pattern": SESSION_ID_PATTERN}
    if name == "delivery_id":
        from .calls import DELIVERY_PATTERN

        return {"type": "string", "pattern": DELIVERY_PATTERN}
    if name == "name" and assets:
        return {"type": "string", "enum": sorted(assets)}
    return {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}


def _operation(route: Route, assets: Sequence[str]) -> dict[str, Any]:
    replies = dict(route.replies)
    if route.auth:
        replies.setdefault(401, Reply("Missing or invalid bearer token", headers=("WWW-Authenticate",)))
    if route.request:
        replies.setdefault(400, Reply("Invalid input; error.field names the field"))
        replies.setdefault(413, Reply("Request body too large"))
        replies.setdefault(415, Reply("Body is not application/json"))
    params = re.findall(r"\{(\w+)\}", route.path)
    if params:
        replies.setdefault(404, Reply("No such resource (or another tenant's)"))
    op: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "tags": [route.tag],
        "security": [{"bearerAuth": []}] if route.auth else [],
        "responses": {},
    }
    success = min((s for s in replies if 200 <= s < 300), default=None)
    for status, reply in sorted(replies.items()):
        out: dict[str, Any] = {"description": reply.description}
        if reply.schema is not None or reply.media != ("application/json",):
            out["content"] = _content(reply)
        if reply.headers:
            out["headers"] = {h: HEADERS[h] for h in reply.headers}
        if status == success and route.links:
            out["links"] = {
                target: {"operationId": target, "parameters": {"session_id": "$response.body#/session_id"}}
                for target in route.links
            }
        op["responses"][str(status)] = out
    if params:
        op["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": _param_schema(p, assets)} for p in params
        ]
    if route.query:
        op.setdefault("parameters", []).extend({**q, "in": "query", "required": False} for q in route.query)
    if route.request:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.request}"}}},
        }
    return op


def build_document(
    routes: Sequence[Route], agents: Sequence[str], version: str, assets: Sequence[str] = (),
    schemas: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document; ``assets`` names the static files served under {name}."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, assets)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "voxline control API",
            "version": version,
            "description": (
                "Create, inspect and end voice sessions; stream their events. Every route but "
                "the health checks, this document and the demo page takes a bearer token: a "
                "static token or an Ed25519-signed JWT. The events WebSocket, which browsers "
                "cannot give headers, takes the token as the subprotocol 'bearer.<token>' "
                "next to 'voxline.v1'."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": dict(schemas) if schemas is not None else schemas_for(agents),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
