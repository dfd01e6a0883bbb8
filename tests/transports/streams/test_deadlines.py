"""The stream's two deadlines, kept by one watchdog: a send that never completes
(a peer that stopped reading) ends the call after ``send_timeout``; a send that
completes, however many, never trips it."""

from __future__ import annotations

import asyncio
from typing import Any

from voxline.codecs.l16 import l16
from voxline.media.frames import Payload
from voxline.transports.base import WireMedia
from voxline.transports.streams.raw import RawDialect
from voxline.transports.streams.transport import StreamLimits, StreamTransport


class Socket:
    """Stands in for the aiohttp WebSocket: sends that complete, or hang."""

    def __init__(self, hang: bool) -> None:
        self.hang = hang
        self.sent: list[bytes] = []

    async def send_bytes(self, data: bytes) -> None:
        if self.hang:
            await asyncio.Event().wait()
        self.sent.append(data)

    async def send_str(self, data: str) -> None:
        await self.send_bytes(data.encode())

    async def close(self, **_: Any) -> None:
        pass


class Port:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def closed(self, reason: str) -> None:
        self.reasons.append(reason)


def make(hang: bool) -> tuple[StreamTransport, Socket, Port]:
    ws = Socket(hang)
    limits = StreamLimits(send_timeout=0.3, idle_timeout=60.0)
    t = StreamTransport(RawDialect(), ws, WireMedia(l16(8000, little_endian=True), 20), limits)  # type: ignore[arg-type]
    port = Port()
    t.attach(port)  # type: ignore[arg-type]
    t.live = True
    t.start_writer()
    return t, ws, port


def frame(k: int) -> Payload:
    return Payload(b"\0" * 320, "L16", 8000, 160 * k, 0.0)


async def test_a_send_that_never_completes_ends_the_call_after_the_send_timeout() -> None:
    t, ws, port = make(hang=True)
    t.send(frame(0))
    for _ in range(100):
        if port.reasons:
            break
        await asyncio.sleep(0.05)
    assert port.reasons == ["send failed: TimeoutError"]
    await t.close()


async def test_sends_that_complete_never_trip_the_deadline() -> None:
    t, ws, port = make(hang=False)
    for k in range(40):  # 0.8 s of frames, past the 0.3 s send timeout
        t.send(frame(k))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert port.reasons == [] and len(ws.sent) == 40
    await t.close()
