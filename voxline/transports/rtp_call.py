"""The RTP call transport: one call's audio over UDP, on the transport contract.

``RtpCallTransport`` is a push sink (voxline's playout paces; each encoded
frame is written at once as an RTP packet) whose media state is an
``rtp.RtpSession``; this module only moves datagrams and time. Inbound, the
datagrams go into the session as they arrive, and each call's own timer wakes
at the moment the jitter buffer's next slot is due (at the call's phase, so a
frame waits exactly the declared depth, not up to a period more for a shared
tick) and hands the frame to the runtime's port. A ``MediaTicker`` shared by
every call does the rest once per frame period: it pops anything a timer has
not (a safety net), sends RTCP when due, plays queued DTMF and notices a peer
that went silent (RTP inactivity: the call ends, the port is released, even
without a BYE).

``open_rtp`` binds the call's socket(s) on a port pair from a ``PortAllocator``
(skipping ports another process holds); ``close()`` always gives the pair back.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from voxline.media.frames import Audio, Dtmf, Frame, Interrupt, Payload

from .base import PEER_GONE, Port, SinkMode, TransportTraits, Unsupported, WireMedia, end_reason
from .rtp.errors import PortsExhausted, RtpError
from .rtp.packet import RtpPacket
from .rtp.ports import PortAllocator, PortPair
from .rtp.session import RtpParams, RtpSession

__all__ = ["MediaTicker", "RtpCallTransport", "RtpSocket", "open_rtp"]

log = logging.getLogger(__name__)

MAX_DATAGRAM = 2048  # an RTP packet of ours is ~200 bytes; anything this big is not audio
MAX_DTMF_QUEUE = 64  # RTP packets of digits waiting to go (about 8 digits)
FAR_END_BUFFER = 0.04  # s a phone holds in its jitter buffer before the caller hears it
BIND_ATTEMPTS = 8
TICK = 0.02


class RtpSocket(asyncio.DatagramProtocol):
    """One UDP socket of a call; hands each datagram to ``on_datagram``."""

    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None
        self.oversize = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > MAX_DATAGRAM:
            self.oversize += 1
            return
        self.on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("x RTP socket error: %s", exc)  # ICMP unreachable from a peer that left

    def sendto(self, data: bytes, dest: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, dest)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_rtp(ports: PortAllocator, host: str, *, rtcp: bool = True
                   ) -> tuple[PortPair, RtpSocket, RtpSocket | None]:
    """Bind a port pair (RTP, and RTCP on the odd port unless ``rtcp`` is False)."""
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for _ in range(min(BIND_ATTEMPTS, ports.size)):
        pair = ports.allocate()  # PortsExhausted when none is free
        sockets: list[RtpSocket] = []
        try:
            for port in ((pair.rtp, pair.rtcp) if rtcp and not pair.muxed else (pair.rtp,)):
                proto = RtpSocket(lambda d, a: None)
                await loop.create_datagram_endpoint(lambda p=proto: p, local_addr=(host, port))  # type: ignore[misc]
                sockets.append(proto)
        except OSError as exc:  # held by another process: try the next pair
            last = exc
            for s in sockets:
                s.close()
            ports.release(pair)
            continue
        return pair, sockets[0], sockets[1] if len(sockets) > 1 else None
    raise PortsExhausted(f"no RTP port could be bound on {host}: {last}")


class MediaTicker:
    """One task for every call: each frame period, ``tick(now)`` on each member,
    scheduled against the clock (slot k at t0 + k*period), never sleep-in-a-loop drift."""

    def __init__(self, period: float = TICK) -> None:
        self.period = period
        self.members: set[RtpCallTransport] = set()
        self._task: asyncio.Task[None] | None = None
        self.late_ticks = 0

    def add(self, member: RtpCallTransport) -> None:
        self.members.add(member)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rtp-ticker")

    def discard(self, member: RtpCallTransport) -> None:
        self.members.discard(member)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        k = 0
        while self.members:
            k += 1
            await asyncio.sleep(max(0.0, t0 + k * self.period - loop.time()))
            now = loop.time()
            behind = math.floor((now - t0) / self.period)
            if behind > k + 5:  # the loop stalled: start again from now rather than catch up in a burst
                self.late_ticks += 1
                k = behind
            for member in list(self.members):
                try:
                    member.tick(now)
                except Exception:
                    log.exception("an RTP call failed its tick; ending it")
                    self.members.discard(member)
                    member.gone("media failure")


class RtpCallTransport:
    kind = "sip"

    def __init__(self, params: RtpParams, pair: PortPair, rtp: RtpSocket, rtcp: RtpSocket | None, *,
                 release: Callable[[PortPair], None], ticker: MediaTicker, idle_timeout: float = 30.0,
                 wait_to_hear: bool = False, on_close: Callable[[str], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.session = RtpSession(params, loop.time(), idle_timeout=idle_timeout)
        self.traits = TransportTraits(WireMedia(params.codec, params.ptime), sink=SinkMode.PUSH,
                                      far_end_buffer=FAR_END_BUFFER, dtmf_out=params.dtmf_pt is not None)
        self.pair = pair
        self.port: Port | None = None
        self.wait_to_hear = wait_to_hear  # an allow-list is set: RTP only to an address we heard from
        self._rtp, self._rtcp = rtp, rtcp
        rtp.on_datagram = self._datagram
        if rtcp is not None:
            rtcp.on_datagram = self._rtcp_datagram
        self._release = release
        self._ticker = ticker
        self._on_close = on_close
        self._dtmf: collections.deque[tuple[float, RtpPacket]] = collections.deque()
        self.closed = False
        self.connected_at: float | None = None
        self.dropped_out = 0  # frames we had nowhere to send (hold, no address yet)
        self._due: asyncio.TimerHandle | None = None  # the next jitter-buffer slot
        self._due_at = 0.0

    @property
    def local_port(self) -> int:
        return self.pair.rtp

    # -- the contract --------------------------------------------------------------

    def attach(self, port: Port) -> None:
        self.port = port

    def connect(self) -> None:
        """The call is confirmed (ACK): media flows both ways."""
        if self.closed or self.connected_at is not None:
            return
        self.connected_at = asyncio.get_running_loop().time()
        self._ticker.add(self)
        if self.port is not None:
            self.port.connected()
        self._schedule(self.connected_at)

    def send(self, frame: Frame) -> None:
        t = type(frame)
        if t is Payload:
            dest = self._dest()
            if dest is None or self.closed:
                self.dropped_out += 1
                return
            codec = self.session.params.codec
            data: bytes = frame.data  # type: ignore[union-attr]
            samples = codec.frame_samples(self.traits.media.frame_ms)
            self._rtp.sendto(self.session.packetize(data, samples), dest)
        elif t is Interrupt:
            self.clear()

    def clear(self) -> int:
        return 0  # nothing is queued here: each frame went out when playout sent it

    def send_dtmf(self, digits: str) -> None:
        if self.session.params.dtmf_pt is None:
            raise Unsupported("the peer did not negotiate telephone-event")
        now = asyncio.get_running_loop().time()
        start = max(now, self._dtmf[-1][0] + 0.05) if self._dtmf else now
        for digit in digits:
            try:
                packets = self.session.dtmf(digit)
            except RtpError as exc:
                raise Unsupported(str(exc)) from exc
            if len(self._dtmf) + len(packets) > MAX_DTMF_QUEUE:
                raise Unsupported(f"more than {MAX_DTMF_QUEUE} DTMF packets queued")
            self._dtmf.extend((start + offset, packet) for offset, packet in packets)
            start += packets[-1][0] + 0.05  # a pause between digits

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._ticker.discard(self)
        if self._due is not None:
            self._due.cancel()
            self._due = None
        self._rtp.close()
        if self._rtcp is not None:
            self._rtcp.close()
        self._release(self.pair)
        if self._on_close is not None:
            self._on_close("transport closed")

    def stats(self) -> dict[str, Any]:
        return {**self.session.stats(), "local_port": self.pair.rtp, "dropped_out": self.dropped_out}

    # -- from signalling -------------------------------------------------------------

    def update(self, params: RtpParams) -> None:
        """A re-INVITE or UPDATE: new address, hold or resume (the codec stays)."""
        self.session.update(params)

    def inbound_dtmf(self, digit: str, duration: float) -> None:
        """A digit that came in SIP INFO."""
        if self.port is not None and not self.closed:
            self.port.receive(Dtmf(digit, duration, asyncio.get_running_loop().time()))

    def gone(self, reason: str) -> None:
        """The peer is gone (BYE, CANCEL, inactivity): the session ends, then closes us."""
        if self.port is not None and not self.closed:
            self.port.closed(reason)
        elif not self.closed:
            asyncio.get_running_loop().create_task(self.close())

    # -- time -------------------------------------------------------------------

    def _hand_on(self, now: float) -> None:
        """What the jitter buffer has due by ``now`` goes to the pipeline; then the
        timer for the next slot."""
        port = self.port
        s = self.session
        frames: list[Audio | Payload | Dtmf] = [*s.pop(now), *s.expire_dtmf(now)]
        if port is not None:
            for f in frames:
                port.receive(f)
        self._schedule(now)

    def _schedule(self, now: float) -> None:
        if self.connected_at is None or self.closed:
            return
        due = self.session.next_due()
        if due is None:
            return
        due = max(due, now)
        if self._due is not None:
            if abs(self._due_at - due) < 0.0005:
                return
            self._due.cancel()
        self._due_at = due
        self._due = asyncio.get_running_loop().call_at(due, self._wake)

    def _wake(self) -> None:
        self._due = None
        if self.closed:
            return
        try:
            self._hand_on(asyncio.get_running_loop().time())
        except Exception:
            log.exception("an RTP call failed to hand on its audio; ending it")
            self._ticker.discard(self)
            self.gone("media failure")

    def tick(self, now: float) -> None:
        if self.closed:
            return
        self._hand_on(now)
        s = self.session
        dest = self._dest()
        while self._dtmf and self._dtmf[0][0] <= now:
            _, packet = self._dtmf.popleft()
            if dest is not None:
                self._rtp.sendto(s.stamp(packet), dest)
        report = s.report(now, time.time())
        rtcp_dest = s.rtcp_to
        if report is not None and rtcp_dest is not None and (not self.wait_to_hear or s.filter.learned):
            (self._rtcp or self._rtp).sendto(report, rtcp_dest)
        if s.expired(now):
            log.info("x RTP on port %d silent for %.0f s: ending the call", self.pair.rtp, s.idle.timeout)
            self._ticker.discard(self)
            self.gone(end_reason(PEER_GONE, "RTP inactivity"))

    # -- datagrams -----------------------------------------------------------------

    def _dest(self) -> tuple[str, int] | None:
        s = self.session
        if s.params.remote is None and not s.params.learn_remote:
            return None  # on hold by the peer, or no address at all
        return s.filter.learned if self.wait_to_hear else s.send_to

    def _datagram(self, data: bytes, source: tuple[str, int]) -> None:
        if self.closed:
            return
        now = asyncio.get_running_loop().time()
        for digit in self.session.receive(data, source, now):
            if self.port is not None:
                self.port.receive(digit)
        if self._due is None:  # the first packet anchors the buffer; a re-anchor moves the slot
            self._schedule(now)

    def _rtcp_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        if not self.closed:
            self.session.receive_rtcp(data, source, asyncio.get_running_loop().time(), time.time())
