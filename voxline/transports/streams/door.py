"""A WebSocket media stream's front door: from the upgrade to the call's end.

Every stream dialect (``wire.Dialect``) runs through the same steps here:

1. The upgrade: credentials (``Authorization: Bearer``, a ``token`` query
   parameter or a ``bearer.<token>`` subprotocol; or the dialect's own proof,
   such as Twilio's request signature) are checked before the 101, so a wrong
   token is an HTTP 401 and costs no WebSocket. A dialect whose peer can send
   none (Twilio: no headers, no query string) may carry the token in its start
   message instead; then the check waits for the start.
2. The start: the first message that names the media, within
   ``start_timeout`` (else close 1008). Admission then, as for every door: a
   refusal closes 1013 (Try Again Later) with the reason.
3. The call: the transport (``transport.py``) runs until the peer stops, goes
   silent or faults too often, or the session ends and closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from ..base import PEER_GONE, BadRequest, Door, DoorRoute, Refused, Service, Unauthorized, end_reason
from .transport import CLOSE_TIMEOUT, Caller, Counters, StreamLimits, StreamTransport, fault, limits_from
from .wire import BAD_DATA, POLICY, TOO_BIG, TRY_AGAIN, Dialect, Ignored, Start, Stop, StreamError

__all__ = ["serve", "stream_door", "bearer_token", "Verify"]

log = logging.getLogger(__name__)

TOKEN_SUBPROTOCOL = "bearer."
ENDED_TIMEOUT = 10.0  # s the handler waits for the session to close the transport
EVENT_DEPTH = 64  # session events queued for the peer's relay


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = orjson.dumps({"error": {"code": code, "message": message, "field": None}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def bearer_token(request: web.Request) -> str | None:
    """A token from the header, the query, or the subprotocol; None if none was sent."""
    header = request.headers.get("Authorization")
    if header:
        scheme, _, token = header.strip().partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    if "token" in request.query:
        return request.query["token"]
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(TOKEN_SUBPROTOCOL):
            return proto[len(TOKEN_SUBPROTOCOL):]
    return None


Verify = Callable[[web.Request, Any], Caller | None]  # (request, config) -> Caller, None, or Unauthorized


async def serve(request: web.Request, service: Service, dialect: Dialect, limits: StreamLimits,
                verify: Verify | None = None, token_in_start: bool = False) -> web.StreamResponse:
    """Run one stream from its upgrade to its end (see the module docstring)."""
    ws = web.WebSocketResponse(protocols=dialect.subprotocols, heartbeat=limits.heartbeat,
                               max_msg_size=limits.max_message)
    if not ws.can_prepare(request).ok:
        return _error(426, "upgrade_required", "this route is a WebSocket", {"Upgrade": "websocket"})
    try:
        caller = _caller(request, service, verify, token_in_start)
        start = dialect.start_at_upgrade(request.query)
    except Unauthorized as exc:
        return _error(401, "unauthorized", str(exc), {"WWW-Authenticate": 'Bearer realm="voxline"'})
    except StreamError as exc:
        return _error(400, "invalid_stream", str(exc))
    await ws.prepare(request)
    counters = Counters()
    name = f"{dialect.name}:{request.remote}"
    if start is None:
        try:
            start = await _await_start(ws, dialect, limits, counters, name)
        except TimeoutError:
            await _close(ws, POLICY, "no start message")
            return ws
        if start is None:
            await _close(ws, counters.close_code, "stream ended before its start")
            return ws
    if caller is None:
        try:
            identity = service.authenticate(start.token)
            caller = Caller(identity.tenant, identity.token_id)
        except Unauthorized as exc:
            await _close(ws, POLICY, f"unauthorized: {exc}")
            return ws
    agent = start.agent or request.query.get("agent")
    try:
        call = service.admit(dialect.name, agent, tenant=caller.tenant, key=caller.key)
    except Refused as exc:
        await _close(ws, TRY_AGAIN, f"{exc.code}: {exc.reason}")
        return ws
    except BadRequest as exc:
        await _close(ws, POLICY, exc.message)
        return ws
    call.extra["peer"] = request.remote  # for the call's record
    transport = StreamTransport(dialect, ws, start.media, limits, counters, name=f"{dialect.name}:{call.id}")
    try:
        async with asyncio.timeout(limits.open_timeout):
            await service.open(call, transport)
    except Refused as exc:  # a shared resource at capacity while the call was built
        await _close(ws, TRY_AGAIN, f"{exc.code}: {exc.reason}")
        return ws
    except Exception as exc:
        log.error("%s stream: opening the call failed: %s", dialect.name, exc, extra={"session_id": call.id})
        await call.end("open failed")
        await _close(ws, 1011, "open failed")
        return ws
    transport.live = True
    log.info("%s stream %s: session %s (tenant %s, agent %s)", dialect.name, start.call_id, call.id,
             caller.tenant, call.agent_kind, extra={"session_id": call.id})
    transport.start_writer()
    relay = _relay_events(call, transport)
    transport.connected()
    try:
        reason = await transport.run()
        transport.lost(reason)
        await transport.ended(ENDED_TIMEOUT)
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the connection is lost (the peer went
        # away, or stopped answering pings): the call ends for that reason.
        transport.lost(end_reason(PEER_GONE, f"connection lost ({ws.exception() or 'went away'})"))
        raise
    finally:
        if relay is not None:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
        if not transport.closed:
            await call.end(transport.end_reason or "stream handler ended")
        await transport.close()
    return ws


def _caller(request: web.Request, service: Service, verify: Verify | None, token_in_start: bool) -> Caller | None:
    """Who the upgrade request is; None when the token may still come in the start."""
    if verify is not None:
        caller = verify(request, service.config)  # Unauthorized: a wrong signature is never deferred
        if caller is not None:
            return caller
    token = bearer_token(request)
    try:
        identity = service.authenticate(token)
    except Unauthorized:
        if token is None and token_in_start:
            return None
        raise
    return Caller(identity.tenant, identity.token_id)


async def _await_start(ws: web.WebSocketResponse, dialect: Dialect, limits: StreamLimits, c: Counters,
                       name: str) -> Start | None:
    """Messages before the start; the start, or None if the stream ended first.
    ``TimeoutError`` when it does not come within ``start_timeout``."""
    async with asyncio.timeout(limits.start_timeout):
        while True:
            msg = await ws.receive()
            if msg.type is not WSMsgType.TEXT and msg.type is not WSMsgType.BINARY:
                if msg.type is WSMsgType.ERROR:
                    c.close_code = TOO_BIG if "too big" in str(ws.exception()).lower() else BAD_DATA
                return None
            c.received += 1
            try:
                event = dialect.on_text(msg.data, False) if msg.type is WSMsgType.TEXT \
                    else dialect.on_binary(msg.data, False)
                if type(event) is Start:
                    return event
                if type(event) is Stop:
                    c.close_code = 1000
                    return None
                if type(event) is not Ignored:
                    raise StreamError(f"{type(event).__name__.lower()} before the start message", POLICY)
                c.ignored += 1
            except StreamError as exc:
                if fault(c, exc, name, limits):
                    return None


async def _close(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code=code, message=reason.encode()[:120]), CLOSE_TIMEOUT)


# The kinds the session publishes that a client of the raw stream acts on.
EVENT_KINDS = frozenset({"transcript", "state", "dtmf", "reply", "heard", "error", "session"})


def _relay_events(call: Any, transport: StreamTransport) -> asyncio.Task[None] | None:
    """Session events to the peer, for dialects that carry them (the raw stream)."""
    if not transport.dialect.relays_events:
        return None
    events = getattr(call, "events", None)
    if events is None:
        return None
    sub = events.subscribe(depth=EVENT_DEPTH, replay=False)

    async def relay() -> None:
        try:
            while (event := await sub.get(timeout=None)) is not None:
                if event.get("kind") in EVENT_KINDS:
                    transport.send_event(event)
        finally:
            sub.close()

    return asyncio.get_running_loop().create_task(relay(), name=f"stream-events:{call.id}")


def stream_door(name: str, path: str, dialect: Callable[[], Dialect], summary: str, config: Any,
                verify: Verify | None = None, token_in_start: bool = False) -> Door:
    """A door with one WebSocket route that serves ``dialect`` streams."""
    limits = limits_from(config)

    async def handle(request: web.Request, body: Any, service: Service, identity: Any) -> web.StreamResponse:
        return await serve(request, service, dialect(), limits, verify, token_in_start)

    operation = "stream" + "".join(part.capitalize() for part in name.split("-"))  # streamFreeswitchStream
    route = DoorRoute("GET", path, handle, operation, summary, auth=False,
                      replies={101: ("Switching to WebSocket", None),
                               400: ("The stream's query is wrong", "Error"),
                               401: ("Missing or invalid credentials", "Error"),
                               426: ("Not a WebSocket upgrade", "Error")})
    return Door(name, routes=(route,))
