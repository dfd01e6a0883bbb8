"""The raw stream (``/v1/streams/raw``): pcm16 binary frames both ways; the
session's events, marks and ``clear`` arrive as JSON on the same socket."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import orjson

from voxline.codecs import l16

from .base import LineError, Listener, Target
from .http import EventFeed, session_info

__all__ = ["RawLine"]

RATE = 16000


class RawLine:
    name = "raw"
    rate = RATE
    can_impair = True

    def __init__(self, target: Target, agent: str | None, listener: Listener) -> None:
        self.target = target
        self.agent = agent
        self.listener = listener
        self.session_id: str | None = None
        self._codec = l16(RATE, little_endian=True)
        self._encoder = self._codec.encoder()
        self._decoder = self._codec.decoder()
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._feed: EventFeed | None = None

    async def open(self) -> None:
        self._http = aiohttp.ClientSession()
        query = f"rate={RATE}&encoding=pcm16" + (f"&agent={self.agent}" if self.agent else "")
        try:
            self._ws = await self._http.ws_connect(f"{self.target.ws_url}/v1/streams/raw?{query}",
                                                   headers=self.target.headers(), autoping=True)
        except aiohttp.ClientError as exc:
            await self._http.close()
            raise LineError(f"raw stream: {exc}") from exc
        self._reader = asyncio.ensure_future(self._read(self._ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        listener = self.listener
        async for msg in ws:
            now = time.monotonic()
            if msg.type is aiohttp.WSMsgType.BINARY:
                listener.heard(self._decoder.decode(msg.data), RATE, now)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                body = orjson.loads(msg.data)
                kind = body.get("type")
                if kind == "clear":
                    listener.cleared(now)
                elif kind == "mark":
                    # Audio is played as it arrives: what came before the mark has been heard.
                    await ws.send_str(orjson.dumps({"type": "mark", "name": body.get("name")}).decode())
                elif kind == "event":
                    event = body.get("event") or {}
                    if self.session_id is None and event.get("session_id") and self._http is not None:
                        # The per-turn latency marks are on the session's own event stream.
                        self.session_id = str(event["session_id"])
                        self._feed = EventFeed(self._http, self.target, self.session_id, _LatencyOnly(listener))
                    listener.event(event)
        listener.closed(f"closed {ws.close_code}")

    async def send(self, pcm: npt.NDArray[np.int16]) -> None:
        if self._ws is None or self._ws.closed:
            raise LineError("the raw stream is closed")
        await self._ws.send_bytes(self._encoder.encode(pcm))

    async def info(self) -> dict[str, Any] | None:
        if self._http is None or self.session_id is None:
            return None
        return await session_info(self._http, self.target, self.session_id)

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.close()
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.send_str('{"type":"stop"}')
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 3)
        if self._reader is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 3)
        if self._http is not None:
            await self._http.close()


class _LatencyOnly:
    """The events stream's latency marks (the rest arrive in-band already)."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def event(self, event: dict[str, Any]) -> None:
        if event.get("kind") == "latency":
            self.listener.event(event)

    def heard(self, pcm: npt.NDArray[np.int16], rate: int, arrival: float) -> None:
        return None

    def cleared(self, at: float) -> None:
        return None

    def closed(self, reason: str) -> None:
        return None
