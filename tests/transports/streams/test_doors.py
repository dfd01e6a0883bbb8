"""Every stream door is a registration line: mounted on the control app,
documented in its OpenAPI document like every route, a 426 for a plain GET,
and a listener (AudioSocket) that stays off when its port is -1 and leaves the
API up when its port is taken."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from voxline.control.app import DOCUMENT, DOORS as APP_DOORS
from voxline.transports import DOORS

from .helpers import config, make_app

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
