"""An in-process transport: a caller inside this process, on a wire of any codec.

``LoopbackTransport`` is an ordinary transport (push sink, a real codec on the
wire) whose far end is a ``LoopbackPeer`` in the same process instead of a
socket: the peer encodes what it says into payloads, and decodes and "plays"
what comes back, holding ``far_end_buffer`` seconds before it counts as heard
(as a telephony platform's buffer does), with ``clear()`` dropping what it has
not played yet. Tests use it to carry real audio through the whole pipeline and
back; benchmarks use it as the in-process caller. Every buffer is bounded.

Its door, ``door(config)``, has no listener and no route: ``dial(agent)`` on the
door's handle admits and opens a call through the service like any front door.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxline.codecs import PCMU, Codec
from voxline.media.clock import Clock, LoopClock
from voxline.media.frames import Audio, Dtmf, EndOfStream, Frame, Interrupt, Mark, Payload

from .base import HANGUP, Door, Port, Service, SinkMode, TransportTraits, WireMedia

__all__ = ["LoopbackTransport", "LoopbackPeer", "Received", "LoopbackDialer", "door"]

RECEIVED_CAPACITY = 3000  # frames the peer keeps of what it received: 60 s of 20 ms


@dataclass(frozen=True, slots=True)
class Received:
    """One frame the peer got: when it arrived, when it is (or was) played, what."""

    arrival: float
    plays_at: float
    pcm: np.ndarray
    turn: int


class LoopbackPeer:
    """The caller's end: ``say`` audio in, ``received``/``heard`` audio out."""

    def __init__(self, transport: LoopbackTransport) -> None:
        self.transport = transport
        self.codec = transport.traits.media.codec
        self._encoder = self.codec.encoder()
        self._decoder = self.codec.decoder()
        self.received: collections.deque[Received] = collections.deque(maxlen=RECEIVED_CAPACITY)
        self.marks: list[tuple[str, float]] = []
        self.digits_received: list[str] = []
        self.cleared = 0  # frames dropped at the far end by clear()
        self._pts = 0

    def say(self, pcm: np.ndarray, arrival: float | None = None) -> None:
        """Send one frame of caller audio (int16 at the wire rate), encoded."""
        port = self.transport.port
        if port is None:
            raise RuntimeError("the call is not open")
        at = self.transport.clock.now() if arrival is None else arrival
        port.receive(Payload(self._encoder.encode(pcm), self.codec.name, self.codec.rate, self._pts, at))
        self._pts += len(pcm)

    def press(self, digit: str) -> None:
        port = self.transport.port
        if port is not None:
            port.receive(Dtmf(digit, 0.1, self.transport.clock.now()))

    def heard(self, turn: int | None = None, now: float | None = None) -> list[Received]:
        """What the caller has heard by ``now``: frames played out of the far-end buffer."""
        t = self.transport.clock.now() if now is None else now
        return [r for r in self.received if r.plays_at <= t and (turn is None or r.turn == turn)]

    def _arrive(self, payload: Payload, at: float) -> None:
        pcm = self._decoder.decode(payload.data)
        queued = [r for r in self.received if r.plays_at > at]
        plays_at = max(at + self.transport.traits.far_end_buffer,
                       queued[-1].plays_at + len(pcm) / self.codec.rate if queued else 0.0)
        self.received.append(Received(at, plays_at, pcm, payload.turn))

    def _clear(self, at: float) -> int:
        keep = [r for r in self.received if r.plays_at <= at]
        dropped = len(self.received) - len(keep)
        self.received = collections.deque(keep, maxlen=RECEIVED_CAPACITY)
        self.cleared += dropped
        return dropped


class LoopbackTransport:
    kind = "loopback"

    def __init__(self, codec: Codec = PCMU, *, far_end_buffer: float = 0.0, frame_ms: int = 20,
                 clock: Clock | None = None) -> None:
        self.traits = TransportTraits(WireMedia(codec, frame_ms), sink=SinkMode.PUSH,
                                      far_end_buffer=far_end_buffer, can_clear=True, dtmf_out=True)
        self.clock: Clock = clock or LoopClock()
        self.port: Port | None = None
        self.peer = LoopbackPeer(self)
        self.closed = False
        self.sent = 0
        self.malformed_out = 0

    def attach(self, port: Port) -> None:
        self.port = port

    def connect(self) -> None:
        """The far end answered: media flows."""
        if self.port is not None:
            self.port.connected()

    def send(self, frame: Frame) -> None:
        t = type(frame)
        if t is Payload:
            self.sent += 1
            try:
                self.peer._arrive(frame, self.clock.now())  # type: ignore[arg-type]
            except ValueError:
                self.malformed_out += 1
        elif t is Mark:
            self.peer.marks.append((frame.name, self.clock.now()))  # type: ignore[union-attr]
        elif t is Interrupt:
            self.clear()
        elif t is Audio or t is EndOfStream:
            return

    def clear(self) -> int:
        return self.peer._clear(self.clock.now())

    def send_dtmf(self, digits: str) -> None:
        self.peer.digits_received.extend(digits)

    def hang_up(self, reason: str = HANGUP) -> None:
        """The far end goes away."""
        if self.port is not None and not self.closed:
            self.port.closed(reason)

    async def close(self) -> None:
        self.closed = True

    def stats(self) -> dict[str, Any]:
        return {"sent": self.sent, "received": len(self.peer.received), "cleared": self.peer.cleared,
                "malformed_out": self.malformed_out}


class LoopbackDialer:
    """The loopback door's handle: in-process calls through the service."""

    def __init__(self) -> None:
        self.service: Service | None = None

    async def start(self, service: Service) -> None:
        self.service = service

    async def stop(self) -> None:
        self.service = None

    async def dial(self, agent: str | None = None, *, codec: Codec = PCMU, far_end_buffer: float = 0.0,
                   tenant: str = "default", key: str = "loopback") -> tuple[Any, LoopbackTransport]:
        """Admit and open a call; return (the call, its transport), connected."""
        if self.service is None:
            raise RuntimeError("the loopback door is not started")
        call = self.service.admit("loopback", agent, tenant=tenant, key=key)
        call.extra["peer"] = key  # for the call's record: the in-process dialler
        transport = LoopbackTransport(codec, far_end_buffer=far_end_buffer)
        await self.service.open(call, transport)
        transport.connect()
        return call, transport


def door(config: Any) -> Door:
    dialer = LoopbackDialer()
    return Door("loopback", start=dialer.start, stop=dialer.stop, handle=dialer)
