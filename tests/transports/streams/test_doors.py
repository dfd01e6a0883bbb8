"""Every stream door is a registration line: mounted on the control app,
documented in its OpenAPI document like every route, a 426 for a plain GET,
and a listener (AudioSocket) that stays off when its port is -1 and leaves the
API up when its port is taken."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from typing import Any

import aiohttp

from voxline.control.app import ADMISSION, DOCUMENT, DOORS as APP_DOORS
from voxline.control.runtime import Runtime
from voxline.control.session import SessionState
from voxline.media.silero import BatcherFull
from voxline.transports import DOORS

from .helpers import Collector, config, eventually, make_app, only_session

__all__ = ["make_app"]

STREAMS = {"raw": "/v1/streams/raw", "twilio": "/v1/streams/twilio", "telnyx": "/v1/streams/telnyx",
           "vonage": "/v1/streams/vonage", "plivo": "/v1/streams/plivo", "freeswitch": "/v1/streams/freeswitch",
           "freeswitch-stream": "/v1/streams/freeswitch-stream"}


async def test_every_stream_is_mounted_documented_and_refuses_a_plain_get(make_app) -> None:  # type: ignore[no-untyped-def]
    assert set(STREAMS) | {"audiosocket"} <= set(DOORS)
    app = await make_app()
    doc = app.app[DOCUMENT]
    served = {(r.method, r.resource.canonical) for r in app.app.router.routes() if r.resource is not None}
    for name, path in STREAMS.items():
        assert ("GET", path) in served
        op = doc["paths"][path]["get"]
        assert op["tags"] == [name] and op["operationId"].startswith("stream")
        assert {"101", "400", "401", "426"} <= set(op["responses"])
        assert not op.get("security")  # the door checks credentials itself (header, query, start, signature)
        resp = await app.client.get(path)
        assert resp.status == 426 and (await resp.json())["error"]["code"] == "upgrade_required"


async def test_the_audiosocket_listener_is_off_at_port_minus_one_and_a_taken_port_leaves_the_api_up(
        make_app, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()  # audiosocket_port = -1
    door = next(d for d in app.app[APP_DOORS] if d.name == "audiosocket")
    assert door.handle.port is None
    taken = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = taken.sockets[0].getsockname()[1]
    try:
        with caplog.at_level(logging.ERROR):
            app = await make_app(dataclasses.replace(config(), audiosocket_port=port))
        door = next(d for d in app.app[APP_DOORS] if d.name == "audiosocket")
        assert door.handle.port is None
        assert any("AudioSocket cannot listen" in r.message for r in caplog.records)
        assert (await app.client.get("/healthz")).status == 200
    finally:
        taken.close()
        await taken.wait_closed()


class FullRuntime(Runtime):
    """The real runtime with its voice detection at capacity: every build fails."""

    def build(self, session: Any, transport: Any) -> Any:
        raise BatcherFull("the Silero batcher holds its maximum of sessions")


async def test_capacity_found_while_the_call_is_built_closes_1013(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(factory=FullRuntime)
    ws = await app.ws("/v1/streams/raw")
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1013 and "capacity" in msg.extra
    await eventually(lambda: app.sessions() == [], what="the session's end")
    assert app.app[ADMISSION].refused == {("capacity", "raw"): 1}


async def test_a_peer_that_stops_answering_pings_is_gone(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(config(heartbeat=0.2, idle_timeout=30.0))
    ws = await app.ws("/v1/streams/raw", autoping=False)  # sends nothing and never answers a ping
    got = Collector(ws)
    session = await only_session(app)
    await eventually(lambda: session.state is SessionState.ENDED, timeout=10, what="the end")
    assert session.end_reason is not None and "No PONG" in session.end_reason  # the heartbeat, not idleness
    await got.closed()


async def test_a_connection_dropped_without_a_close_ends_the_call(make_app) -> None:  # type: ignore[no-untyped-def]
    import base64
    import os

    from .helpers import TOKEN

    app = await make_app()
    reader, writer = await asyncio.open_connection(app.client.host, app.client.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /v1/streams/raw?token={TOKEN} HTTP/1.1\r\nHost: {app.client.host}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 101")
    session = await only_session(app)
    writer.transport.abort()  # no close frame, no FIN handshake: the peer is simply gone
    await eventually(lambda: session.state is SessionState.ENDED, what="the end")
    assert session.end_reason is not None and session.end_reason.startswith("connection lost:")
