"""Call records over HTTP: list (tenant-scoped, newest first, paginated by an
opaque cursor), inspect (with turns and events), delete.

The store may be unreachable (not reached yet, or gone away): these routes then
answer 503 with Retry-After, while calls go on and their records wait in the
writer's backlog (see voxline/records/writer.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from voxline.records import BadCursor, Records, StoreUnavailable
from voxline.records.store import MAX_LIMIT

from .errors import ApiError, json_response
from .openapi import SESSION_ID_PATTERN, Reply

__all__ = ["RECORDS", "list_calls", "get_call", "delete_call", "get_recording", "dead_webhooks", "retry_webhook",
           "DELIVERY_PATTERN", "CALL_QUERY", "call_schemas", "CALL_REPLIES"]

log = logging.getLogger(__name__)

RECORDS = web.AppKey("records", Records)
READ_TIMEOUT = 5.0  # s: a database slower than this is answered 503
RETRY = 5
CURSOR_PATTERN = "^[A-Za-z0-9_-]{1,400}$"
DELIVERY_PATTERN = "^[0-9a-f]{16}-[0-9]{1,9}$"  # <call id>-<event seq>
AGENT_PATTERN = "^[a-z][a-z0-9_-]{0,31}$"
DEFAULT_LIMIT = 50

T = TypeVar("T")

CALL_QUERY: tuple[dict[str, Any], ...] = (
    {"name": "since", "description": "Calls started at or after this Unix time",
     "schema": {"type": "number", "minimum": 0}},
    {"name": "until", "description": "Calls started before this Unix time", "schema": {"type": "number", "minimum": 0}},
    {"name": "agent", "description": "Only this agent's calls", "schema": {"type": "string", "pattern": AGENT_PATTERN}},
    {"name": "limit", "description": f"Calls per page (at most {MAX_LIMIT})",
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
    {"name": "cursor", "description": "next_cursor of the previous page (400 if it is not one)",
     "schema": {"type": "string", "pattern": CURSOR_PATTERN}},
)

_R503 = Reply("The call store's database is unreachable", headers=("Retry-After",))
CALL_REPLIES = {"list": {200: Reply("A page of this tenant's calls, newest first", "CallList"),
                         400: Reply("A query parameter out of its range, or a cursor this service did not hand out"),
                         503: _R503},
                "get": {200: Reply("The call with its turns and events", "CallRecord"), 503: _R503},
                "delete": {204: Reply("Deleted (the recording too)", None), 409: Reply("The call is still in progress"),
                           503: _R503},
                "recording": {200: Reply("Stereo WAV, caller left, agent right", None, media=("audio/wav",)),
                              206: Reply("The requested range", None, media=("audio/wav",)),
                              416: Reply("Range not satisfiable", None, media=("text/plain",)), 503: _R503},
                "dead": {200: Reply("This tenant's webhooks that gave up, newest first", "DeadWebhooks"),
                         503: _R503},
                "retry": {202: Reply("Back in the outbox, due now", "WebhookRetried"), 503: _R503}}


def _records(request: web.Request) -> Records:
    records = request.app.get(RECORDS)
    if records is None:
        raise ApiError(404, "not_found", "call records are off (records = false)")
    return records


async def _db(records: Records, op: Callable[[], Awaitable[T]]) -> T:
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            return await op()
    except StoreUnavailable as exc:
        raise ApiError(503, "store_unavailable", str(exc), headers={"Retry-After": str(RETRY)}) from exc
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log.warning("call store: %s: %s", type(exc).__name__, exc)
        raise ApiError(503, "store_unavailable", "the call store's database is unreachable",
                       headers={"Retry-After": str(RETRY)}) from exc


def _number(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ApiError(400, "invalid_value", f"{name} must be a Unix time (seconds, not negative)", name)
    return value


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise ApiError(400, "invalid_value", f"limit must be an integer from 1 to {MAX_LIMIT}", "limit")
    return value


def _pattern(request: web.Request, name: str, pattern: str) -> str | None:
    import re

    raw = request.query.get(name)
    if raw is None:
        return None
    if not re.fullmatch(pattern.strip("^$"), raw):
        raise ApiError(400, "invalid_value", f"{name} does not match {pattern}", name)
    return raw


def _call_id(request: web.Request) -> str:
    return request.match_info["call_id"]


async def list_calls(request: web.Request, tenant: str) -> web.StreamResponse:
    records = _records(request)
    since, until = _number(request, "since"), _number(request, "until")
    limit = _limit(request)
    agent = _pattern(request, "agent", AGENT_PATTERN)
    cursor = _pattern(request, "cursor", CURSOR_PATTERN)
    try:
        page = await _db(records, lambda: records.store.page(tenant, since=since, until=until, agent=agent,
                                                             limit=limit, cursor=cursor))
    except BadCursor as exc:
        raise ApiError(400, "invalid_cursor", str(exc), "cursor") from exc
    return json_response({"calls": page.calls, "next_cursor": page.cursor})


async def get_call(request: web.Request, tenant: str) -> web.StreamResponse:
    records = _records(request)
    call_id = _call_id(request)
    record = await _db(records, lambda: records.store.get(call_id, tenant))
    if record is None:
        raise ApiError(404, "not_found", f"no call {call_id}", "call_id")
    return json_response(record)


async def delete_call(request: web.Request, tenant: str, live: bool) -> web.StreamResponse:
    records = _records(request)
    call_id = _call_id(request)
    if live:
        raise ApiError(409, "in_progress", f"call {call_id} is in progress: end the session first")
    if not await _db(records, lambda: records.delete(call_id, tenant)):
        raise ApiError(404, "not_found", f"no call {call_id}", "call_id")
    return web.Response(status=204)


async def get_recording(request: web.Request, tenant: str) -> web.StreamResponse:
    """The call's stereo WAV (caller left, agent right); HTTP range requests served
    by aiohttp's FileResponse (206, 416). A call in progress: what is on disk so far."""
    records = _records(request)
    call_id = _call_id(request)
    if not await _db(records, lambda: records.store.exists(call_id, tenant)):
        raise ApiError(404, "not_found", f"no call {call_id}", "call_id")
    path = records.recording(call_id)
    if path is None:
        raise ApiError(404, "not_found", f"call {call_id} has no recording", "call_id")
    return web.FileResponse(path, headers={"Content-Type": "audio/wav"})


async def dead_webhooks(request: web.Request, tenant: str) -> web.StreamResponse:
    records = _records(request)
    dead = await _db(records, lambda: records.store.dead_webhooks(tenant))
    return json_response({"dead": dead})


async def retry_webhook(request: web.Request, tenant: str) -> web.StreamResponse:
    records = _records(request)
    delivery = request.match_info["delivery_id"]
    if not await _db(records, lambda: records.store.retry_webhook(delivery, tenant, time.time())):
        raise ApiError(404, "not_found", f"no dead webhook {delivery}", "delivery_id")
    return json_response({"id": delivery, "state": "pending"}, 202)


def call_schemas() -> dict[str, dict[str, Any]]:
    num_or_null = {"type": ["number", "null"]}
    str_or_null = {"type": ["string", "null"]}
    summary: dict[str, Any] = {
        "type": "object",
        "required": ["id", "tenant", "transport", "agent", "state", "started_at", "answered_at", "ended_at",
                     "end_reason", "turn_count", "dtmf", "barge_ins", "transfers", "failures"],
        "properties": {
            "id": {"type": "string", "pattern": SESSION_ID_PATTERN, "description": "The session's id"},
            "tenant": {"type": "string"},
            "transport": {"type": "string"},
            "peer": str_or_null,
            "agent": {"type": "string"},
            "state": {"type": "string", "description": "The session's last state; 'ended' once over"},
            "started_at": {"type": "number", "description": "Unix time"},
            "answered_at": num_or_null,
            "ended_at": num_or_null,
            "end_reason": {**str_or_null, "description": "As the session's; 'lost' if the service died mid-call"},
            "turn_count": {"type": "integer"},
            "dtmf": {"type": "string", "description": "The digits the caller sent, in order"},
            "barge_ins": {"type": "integer"},
            "transfers": {"type": "integer"},
            "failures": {"type": "integer", "description": "Provider failures during the call"},
        },
    }
    turn = {
        "type": "object",
        "required": ["turn", "started_at", "ended_at", "caller_text", "agent_text", "heard_text", "barged_in"],
        "properties": {
            "turn": {"type": "integer"},
            "started_at": {"type": "number"},
            "ended_at": num_or_null,
            "caller_text": str_or_null,
            "agent_text": {**str_or_null, "description": "What the agent wrote"},
            "heard_text": {**str_or_null, "description": "What the caller heard of it (less after a barge-in)"},
            "heard_complete": {"type": ["boolean", "null"]},
            "barged_in": {"type": "boolean"},
            "latency": {"type": ["object", "null"], "description": "The turn's marks, segments and budget"},
        },
    }
    event = {
        "type": "object",
        "required": ["seq", "time", "kind", "turn", "data"],
        "properties": {"seq": {"type": "integer"}, "time": {"type": "number"}, "kind": {"type": "string"},
                       "turn": {"type": "integer"}, "data": {"type": "object"}},
    }
    record: dict[str, Any] = {**summary, "required": [*summary["required"], "turns", "events"],
              "properties": {**summary["properties"],
                             "turns": {"type": "array", "items": {"$ref": "#/components/schemas/CallTurn"}},
                             "events": {"type": "array", "items": {"$ref": "#/components/schemas/CallEvent"}}}}
    delivery = {
        "type": "object",
        "required": ["id", "call_id", "type", "payload", "created_at", "state", "attempts", "last_error"],
        "properties": {"id": {"type": "string", "pattern": DELIVERY_PATTERN}, "call_id": {"type": "string"},
                       "type": {"type": "string"}, "payload": {"type": "object"},
                       "created_at": {"type": "number"}, "state": {"type": "string"},
                       "attempts": {"type": "integer"}, "next_at": {"type": "number"},
                       "last_error": str_or_null, "delivered_at": num_or_null},
    }
    return {
        "WebhookDelivery": delivery,
        "DeadWebhooks": {"type": "object", "required": ["dead"],
                         "properties": {"dead": {"type": "array",
                                                 "items": {"$ref": "#/components/schemas/WebhookDelivery"}}}},
        "WebhookRetried": {"type": "object", "required": ["id", "state"],
                           "properties": {"id": {"type": "string"}, "state": {"type": "string"}}},
        "CallSummary": summary,
        "CallTurn": turn,
        "CallEvent": event,
        "CallRecord": record,
        "CallList": {
            "type": "object",
            "required": ["calls", "next_cursor"],
            "properties": {"calls": {"type": "array", "items": {"$ref": "#/components/schemas/CallSummary"}},
                           "next_cursor": {**str_or_null, "description": "Pass as cursor for the next page"}},
        },
    }
