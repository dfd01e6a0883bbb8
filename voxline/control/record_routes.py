"""The call-record and webhook routes of the control API, as ``Route`` data,
and the records' resource (``records_from`` the configuration, ``records_ctx``).

The handlers are in calls.py; here they are bound to the request's tenant and
put in the table the app registers (and documents) with the rest. ``routes``
takes how to read a request's tenant and whether a call is still live, so this
module needs nothing of the app's own state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from voxline.config import ConfigError, ServiceConfig
from voxline.records import Records, RecordsConfig, StoreConfig

from .calls import (CALL_QUERY, RECORDS, CALL_REPLIES, dead_webhooks, delete_call, get_call, get_recording, list_calls,
                    retry_webhook)
from .openapi import Route

__all__ = ["routes", "records_from", "records_ctx", "RECORDINGS"]

RECORDINGS = "recordings"  # under data_dir, as the runtime writes them (runtime.RECORDINGS)

Tenant = Callable[[web.Request], str]
Live = Callable[[web.Request, str, str], bool]  # (request, call id, tenant) -> the session is still up


def routes(tenant: Tenant, live: Live) -> tuple[Route, ...]:
    async def list_call_records(request: web.Request) -> web.StreamResponse:
        return await list_calls(request, tenant(request))

    async def get_call_record(request: web.Request) -> web.StreamResponse:
        return await get_call(request, tenant(request))

    async def delete_call_record(request: web.Request) -> web.StreamResponse:
        t = tenant(request)
        return await delete_call(request, t, live(request, request.match_info["call_id"], t))

    async def get_call_recording(request: web.Request) -> web.StreamResponse:
        return await get_recording(request, tenant(request))

    async def list_dead_webhooks(request: web.Request) -> web.StreamResponse:
        return await dead_webhooks(request, tenant(request))

    async def retry_dead_webhook(request: web.Request) -> web.StreamResponse:
        return await retry_webhook(request, tenant(request))

    return (
        Route("GET", "/v1/calls", list_call_records, "listCalls",
              "This tenant's call records, newest first, a page at a time",
              replies=CALL_REPLIES["list"], tag="calls", query=CALL_QUERY),
        Route("GET", "/v1/calls/{call_id}", get_call_record, "getCall",
              "A call record: the call, each turn (both sides' text, what was heard, latency) and its events",
              replies=CALL_REPLIES["get"], tag="calls"),
        Route("DELETE", "/v1/calls/{call_id}", delete_call_record, "deleteCall", "Delete a call record",
              replies=CALL_REPLIES["delete"], tag="calls"),
        Route("GET", "/v1/calls/{call_id}/recording", get_call_recording, "getCallRecording",
              "The call's recording (stereo WAV: caller left, agent right, as the caller heard it); Range supported",
              replies=CALL_REPLIES["recording"], tag="calls"),
        Route("GET", "/v1/webhooks/dead", list_dead_webhooks, "listDeadWebhooks",
              "Webhook deliveries that failed every retry (2, 4, 8 s), this tenant's",
              replies=CALL_REPLIES["dead"], tag="webhooks"),
        Route("POST", "/v1/webhooks/dead/{delivery_id}/retry", retry_dead_webhook, "retryDeadWebhook",
              "Put a dead webhook back in the outbox", replies=CALL_REPLIES["retry"], tag="webhooks"),
    )


def records_from(config: ServiceConfig) -> Records | None:
    """The service's records (store, writer, recorders, webhooks), or None if off."""
    if not config.records:
        return None
    try:
        store = StoreConfig.from_service(config.data_dir, config.database_url)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    recordings = str(Path(config.data_dir) / RECORDINGS)
    return Records(RecordsConfig(store, backlog=config.records_backlog, retention_days=config.retention_days,
                                 recordings=recordings, webhook_url=config.webhook_url,
                                 webhook_secret=config.webhook_secret))


async def records_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's cleanup context for its records. First in, last out: the store
    outlives the sessions' ends (their records' last rows)."""
    records = app.get(RECORDS)
    if records is not None:
        records.start()
    yield
    if records is not None:
        await records.close()
