"""RFC 4733 telephone-events (DTMF): the payload, a receiver and a sender.

The payload (§2.3), 4 bytes::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     event     |E|R| volume    |          duration             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Events 0-9 are the digits, 10 ``*``, 11 ``#``, 12-15 ``A``-``D`` (§3.2). One
event keeps one RTP timestamp, its start, in every packet (§2.3.1), while the
duration grows; the marker bit is on the first packet (§2.5.1.2).

**The final packet.** §2.5.1.4 asks that the final packet (E bit set) be sent
three times, at the interval used for updates, with the same timestamp and
duration; it does not ask for the sequence number to be reused, and RFC 3550
§5.1 increments it for every RTP data packet sent, so ``tone_packets`` gives
each of the three its own sequence number. Senders in the wild differ: sipp's
captures (like Asterisk) send the three back to back with one sequence number.
The receiver keys on the timestamp, so either way makes one digit.

**The receiver** reports each event once, keyed on (SSRC, timestamp), when its
end is seen: from an E packet (so an end packet alone, its start lost, still
yields the digit, and repeated ends count once); when a packet of a later event
arrives while one is open (its end packets were all lost); or when
``expire(now)`` finds an open event silent for ``timeout`` seconds. A missing
marker bit changes nothing, since the timestamp says which event a packet is.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from voxline.media.frames import Dtmf
from voxline.transports.rtp.errors import DtmfError
from voxline.transports.rtp.packet import RtpPacket, ts_delta

__all__ = [
    "DIGITS",
    "TelephoneEvent",
    "DtmfDigit",
    "DtmfReceiver",
    "digit_event",
    "tone_packets",
]

DIGITS = "0123456789*#ABCD"
_PAYLOAD = struct.Struct("!BBH")
# How many finished events a receiver remembers, to ignore their late repeats.
_REMEMBERED = 16


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0
    reserved: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise DtmfError(f"telephone-event code {self.event} is not 8-bit")
        if not 0 <= self.volume <= 63:
            raise DtmfError(f"telephone-event volume {self.volume} is not 0-63")
        if not 0 <= self.duration <= 0xFFFF:
            raise DtmfError(f"telephone-event duration {self.duration} is not 16-bit")

    @classmethod
    def parse(cls, data: bytes) -> TelephoneEvent:
        # §2.5.2.1 allows several events in one payload (redundancy, RFC 2198
        # aside); the first one is the current event.
        if len(data) < 4:
            raise DtmfError(f"telephone-event payload of {len(data)} bytes is shorter than 4")
        event, flags, duration = _PAYLOAD.unpack_from(data)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration, bool(flags & 0x40))

    def __bytes__(self) -> bytes:
        flags = self.volume | (0x80 if self.end else 0) | (0x40 if self.reserved else 0)
        return _PAYLOAD.pack(self.event, flags, self.duration)

    @property
    def digit(self) -> str | None:
        return DIGITS[self.event] if self.event < len(DIGITS) else None


def digit_event(digit: str) -> int:
    """The event code of a DTMF digit (``"0"``-``"9"``, ``*``, ``#``, ``A``-``D``)."""
    index = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise DtmfError(f"DTMF digit {digit!r} is not one of {DIGITS}")
    return index


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """One key press: ``duration`` in timestamp units at ``rate``."""

    digit: str
    timestamp: int
    duration: int
    rate: int
    arrival: float
    ended: bool = True

    def frame(self, turn: int = 0) -> Dtmf:
        return Dtmf(self.digit, duration=self.duration / self.rate, time=self.arrival, turn=turn)


@dataclass(slots=True)
class _Open:
    ssrc: int
    timestamp: int
    event: int
    duration: int
    last_seen: float


class DtmfReceiver:
    """Turns telephone-event packets into one ``DtmfDigit`` per event."""

    def __init__(self, rate: int = 8000, *, timeout: float = 0.5) -> None:
        self.rate = rate
        self.timeout = timeout
        self._open: _Open | None = None
        self._done: deque[tuple[int, int]] = deque(maxlen=_REMEMBERED)
        self.packets = 0
        self.repeats = 0
        self.unknown_events = 0
        self.bad_payloads = 0

    def receive(self, packet: RtpPacket, arrival: float) -> list[DtmfDigit]:
        """Feed one telephone-event packet; returns the digits it completes."""
        self.packets += 1
        try:
            event = TelephoneEvent.parse(packet.payload)
        except DtmfError:
            self.bad_payloads += 1
            return []
        if event.digit is None:
            self.unknown_events += 1
            return []
        key = (packet.ssrc, packet.timestamp)
        if key in self._done:
            self.repeats += 1
            return []
        out: list[DtmfDigit] = []
        current = self._open
        if current is not None and (current.ssrc, current.timestamp) != key:
            if current.ssrc == packet.ssrc and ts_delta(packet.timestamp, current.timestamp) < 0:
                # A straggler of an event older than the open one: too late to matter.
                self.repeats += 1
                return []
            out.append(self._finish(current, ended=False))
            current = None
        if current is None:
            current = _Open(packet.ssrc, packet.timestamp, event.event, 0, arrival)
            self._open = current
        current.duration = max(current.duration, event.duration)
        current.last_seen = arrival
        if event.end:
            out.append(self._finish(current, ended=True))
        return out

    def expire(self, now: float) -> list[DtmfDigit]:
        """The open event, if it has been silent for ``timeout`` (all its ends lost)."""
        current = self._open
        if current is not None and now - current.last_seen >= self.timeout:
            return [self._finish(current, ended=False)]
        return []

    def _finish(self, current: _Open, *, ended: bool) -> DtmfDigit:
        self._open = None
        self._done.append((current.ssrc, current.timestamp))
        return DtmfDigit(
            DIGITS[current.event],
            current.timestamp,
            current.duration,
            self.rate,
            current.last_seen,
            ended,
        )


def tone_packets(
    digit: str,
    *,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    payload_type: int = 101,
    duration: int = 800,
    interval: int = 160,
    volume: int = 10,
) -> list[tuple[int, RtpPacket]]:
    """The packets that send one digit, each with its send offset in timestamp units.

    One packet per ``interval`` while the tone lasts, its duration growing by
    ``interval`` each (§2.5.1.2), the marker on the first; then the final packet
    three times, one ``interval`` apart, each with the next sequence number
    (§2.5.1.4, RFC 3550 §5.1). ``duration`` is capped by the 16-bit field: longer
    tones would need segments (§2.5.1.3), which a key press never does.
    """
    event = digit_event(digit)
    if not 0 < interval <= duration <= 0xFFFF:
        raise DtmfError(f"DTMF duration {duration} with interval {interval} is invalid")
    out: list[tuple[int, RtpPacket]] = []
    updates = -(-duration // interval)
    for k in range(updates + 2):
        end = k >= updates - 1
        payload = TelephoneEvent(event, end, volume, min((k + 1) * interval, duration))
        out.append(
            (
                k * interval,
                RtpPacket(
                    payload_type=payload_type,
                    sequence_number=(sequence_number + k) & 0xFFFF,
                    timestamp=timestamp & 0xFFFFFFFF,
                    ssrc=ssrc,
                    payload=bytes(payload),
                    marker=k == 0,
                ),
            )
        )
    # The last update is itself the first of the three final packets.
    return out
