"""Asterisk AudioSocket over TCP, as Asterisk speaks it: the call's UUID, then
signed-linear audio (8 kHz, kind 0x10) every 20 ms; hangup to end. The
protocol has no clear: a barge-in shows only as the audio stopping."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt

from voxline.codecs import l16
from voxline.transports.audiosocket import wire

from .base import LineError, Listener, Target
from .http import EventFeed, find_session, session_info

__all__ = ["AudioSocketLine"]

RATE = 8000


class AudioSocketLine:
    name = "audiosocket"
    rate = RATE
    can_impair = True

    def __init__(self, target: Target, agent: str | None, listener: Listener) -> None:
        # AudioSocket names no agent: the service's default (or audiosocket_agents by UUID) answers.
        self.target = target
        self.listener = listener
        self.session_id: str | None = None
        self.uuid = uuid.uuid4()
        self._kind = wire.KIND_BY_RATE[RATE]
        self._codec = l16(RATE, little_endian=True)
        self._encoder = self._codec.encoder()
        self._decoder = self._codec.decoder()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._feed: EventFeed | None = None

    async def open(self) -> None:
        host, port = self.target.audiosocket
        since = time.time()
        try:
            self._reader, self._writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            raise LineError(f"audiosocket {host}:{port}: {exc}") from exc
        self._writer.write(bytes(wire.Message(wire.UUID, self.uuid.bytes)))
        self._writer.write(wire.audio(self._kind, self._encoder.encode(np.zeros(RATE // 50, np.int16))))
        await self._writer.drain()
        self._task = asyncio.ensure_future(self._read(self._reader))
        self._http = aiohttp.ClientSession()
        claimed: set[str] = self.target.extra.setdefault("claimed", set())
        for _ in range(20):
            self.session_id = await find_session(self._http, self.target, "audiosocket", claimed, since)
            if self.session_id is not None or self._task.done():
                break
            await asyncio.sleep(0.05)
        if self._task.done():
            raise LineError("audiosocket: the service hung up")
        if self.session_id is not None:
            self._feed = EventFeed(self._http, self.target, self.session_id, self.listener)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        framer = wire.Framer()
        reason = "closed"
        while data := await reader.read(65536):
            now = time.monotonic()
            for msg in framer.feed(data):
                if msg.kind == self._kind:
                    self.listener.heard(self._decoder.decode(msg.payload), RATE, now)
                elif msg.kind == wire.HANGUP:
                    reason = "hangup"
        self.listener.closed(reason)

    async def send(self, pcm: npt.NDArray[np.int16]) -> None:
        if self._writer is None or self._writer.is_closing():
            raise LineError("the audiosocket is closed")
        self._writer.write(wire.audio(self._kind, self._encoder.encode(pcm)))
        await self._writer.drain()

    async def info(self) -> dict[str, Any] | None:
        if self._http is None or self.session_id is None:
            return None
        return await session_info(self._http, self.target, self.session_id)

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.close()
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(OSError):
                self._writer.write(wire.hangup())
                await self._writer.drain()
            self._writer.close()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 3)
        if self._http is not None:
            await self._http.close()
