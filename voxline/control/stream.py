"""A session's events to one WebSocket client: bounded, and never holding up the call.

The subscription buffers at most its depth; a client slower than the events loses
the oldest ones (the bus counts them) and is told how many in a ``gap`` frame. A
client that does not take a frame within ``SEND_TIMEOUT`` is cut off. Reading the
socket concurrently notices a client's close, which ends the subscription.
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import WSMsgType, web

from .events import Subscription
from .metrics import Metrics

__all__ = ["stream_events", "watch_client", "SEND_TIMEOUT", "EVENT_POLL"]

EVENT_POLL = 15.0  # s between checks that an idle event stream's client is still there
SEND_TIMEOUT = 10.0  # s a client may take to accept one frame before it is cut off


async def watch_client(ws: web.WebSocketResponse, sub: Subscription) -> None:
    """Read until the client closes (clients send nothing; this also answers pings)."""
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break
    sub.close()


async def stream_events(ws: web.WebSocketResponse, sub: Subscription, metrics: Metrics) -> None:
    """Send each event as a JSON text frame until the subscription or the socket closes."""
    reported = 0
    while not ws.closed:
        event = await sub.get(timeout=EVENT_POLL)
        if event is None:
            if sub.closed:
                return
            continue
        if sub.dropped > reported:
            lost = sub.dropped - reported
            reported = sub.dropped
            metrics.event_drops.inc(lost)
            gap = {"kind": "gap", "session_id": event["session_id"], "turn": 0, "data": {"dropped": lost}}
            await asyncio.wait_for(ws.send_str(orjson.dumps(gap).decode()), SEND_TIMEOUT)
        if ws.closed:
            return
        frame = orjson.dumps(event, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        await asyncio.wait_for(ws.send_str(frame), SEND_TIMEOUT)
