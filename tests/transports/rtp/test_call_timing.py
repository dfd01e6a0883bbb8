"""The RTP call hands each frame on when its jitter-buffer slot is due, at the
call's own phase: not at a shared tick. The ticker here ticks once a second, so
frames that reach the pipeline before it come from the call's own timer; none
may come before its slot (arrival of the fastest packet + the declared depth)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from voxline.codecs import PCMU
from voxline.media.frames import Frame, Payload
from voxline.transports.rtp.packet import RtpPacket
from voxline.transports.rtp.ports import PortAllocator
from voxline.transports.rtp.session import RtpParams
from voxline.transports.rtp_call import MediaTicker, RtpCallTransport, open_rtp

FRAMES = 15


class Port:
    def __init__(self) -> None:
        self.got: list[tuple[Frame, float]] = []

    def receive(self, frame: Frame) -> None:
        self.got.append((frame, asyncio.get_running_loop().time()))

    def connected(self) -> None:
        pass

    def closed(self, reason: str) -> None:
        pass


async def test_frames_are_handed_on_at_their_slot_by_the_calls_own_timer() -> None:
    loop = asyncio.get_running_loop()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    ports = PortAllocator(41000, 41999)
    pair, rtp, rtcp = await open_rtp(ports, "127.0.0.1")
    ticker = MediaTicker(period=1.0)
    params = RtpParams(PCMU, 0, remote=peer.getsockname(), remote_rtcp=None)
    call = RtpCallTransport(params, pair, rtp, rtcp, release=ports.release, ticker=ticker)
    port = Port()
    call.attach(port)  # type: ignore[arg-type]
    started = loop.time()
    call.connect()
    sent: list[float] = []
    try:
        for k in range(FRAMES):
            packet = RtpPacket(0, 1000 + k, 160 * k, 0x1234, b"\xff" * 160, marker=k == 0)
            peer.sendto(bytes(packet), ("127.0.0.1", pair.rtp))
            sent.append(loop.time())
            await asyncio.sleep(0.02)
        depth = call.session.jitter.depth
        while len([f for f, _ in port.got if type(f) is Payload]) < FRAMES and loop.time() - started < 0.9:
            await asyncio.sleep(0.005)
        payloads = [(f, t) for f, t in port.got if type(f) is Payload]
        # All before the ticker's first tick (1 s): the call's own timer handed them on.
        assert len(payloads) == FRAMES and all(t < started + 1.0 for _, t in payloads)
        assert [f.pts for f, _ in payloads] == [160 * k for k in range(FRAMES)]  # type: ignore[attr-defined]
        # Never before the slot: the fastest transit plus the declared depth.
        transit = min(f.arrival - k * 0.02 for k, (f, _) in enumerate(payloads))  # type: ignore[attr-defined]
        assert all(t >= transit + k * 0.02 + depth - 1e-3 for k, (_, t) in enumerate(payloads))
        stats: dict[str, Any] = call.stats()
        assert stats["jitter_buffer"]["depths"][0][1] == depth  # the depth declared from the first packet
    finally:
        await call.close()
        await ticker.stop()
        peer.close()
    assert ports.size == len(ports._free)  # the pair went back
