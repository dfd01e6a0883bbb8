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
    return Payload(bytes([k % 256]) * 320, "L16", 8000, 160 * k, 0.0)  # its number in every byte


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


class Paused(Socket):
    """Sends complete at once, except while paused (a peer reading slowly): those
    wait until ``resume``, as aiohttp's drain does."""

    def __init__(self) -> None:
        super().__init__(hang=False)
        self.gate: asyncio.Event | None = None

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)
        if self.gate is not None:
            await self.gate.wait()


async def test_a_send_goes_out_in_the_callers_call_and_one_that_waits_keeps_the_order() -> None:
    ws = Paused()
    limits = StreamLimits(send_timeout=5.0, idle_timeout=60.0)
    t = StreamTransport(RawDialect(), ws, WireMedia(l16(8000, little_endian=True), 20), limits)  # type: ignore[arg-type]
    t.attach(Port())  # type: ignore[arg-type]
    t.live = True
    t.start_writer()
    t.send(frame(0))
    assert len(ws.sent) == 1 and t.sent == 1  # no task ran: it went out in this call
    ws.gate = gate = asyncio.Event()
    t.send(frame(1))  # written, then waits for the peer
    t.send(frame(2))
    t.send(frame(3))  # queued behind it
    assert len(ws.sent) == 2 and t.stats()["queued"] == 2
    await asyncio.sleep(0.05)
    assert len(ws.sent) == 2  # still waiting: nothing overtakes it
    ws.gate = None
    gate.set()
    for _ in range(50):
        if t.sent == 4:
            break
        await asyncio.sleep(0.01)
    assert t.sent == 4 and [b[0] for b in ws.sent] == [0, 1, 2, 3]  # in order
    assert len(ws.sent) == 4 and t.stats()["queued"] == 0
    t.send(frame(4))
    assert t.sent == 5  # nothing in flight again: in the caller's call
    await t.close()


class Broken(Socket):
    async def send_bytes(self, data: bytes) -> None:
        raise ConnectionResetError("Cannot write to closing transport")


async def test_a_send_that_fails_in_the_callers_call_ends_the_call_without_raising_into_it() -> None:
    ws = Broken(hang=False)
    t = StreamTransport(RawDialect(), ws, WireMedia(l16(8000, little_endian=True), 20),  # type: ignore[arg-type]
                        StreamLimits(send_timeout=5.0, idle_timeout=60.0))
    port = Port()
    t.attach(port)  # type: ignore[arg-type]
    t.live = True
    t.start_writer()
    t.send(frame(0))  # does not raise
    t.send(frame(1))
    await asyncio.sleep(0.05)
    assert port.reasons and port.reasons[0] == "send failed: ConnectionResetError"
    await t.close()
