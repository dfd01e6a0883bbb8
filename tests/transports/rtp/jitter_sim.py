"""A fake time line for the jitter buffer: packets sent every 20 ms, delivered
with chosen loss, delay, duplication and order; pulls every 20 ms."""

from __future__ import annotations

from dataclasses import dataclass, field

from voxline.media.frames import Payload
from voxline.transports.rtp.jitter import JitterBuffer, Lost

FRAME = 0.02
SAMPLES = 160


@dataclass
class Sent:
    seq: int
    ts: int
    arrival: float
    marker: bool = False
    ssrc: int = 1


@dataclass
class Run:
    out: list[Payload | Lost] = field(default_factory=list)

    @property
    def played(self) -> list[int]:
        return [int.from_bytes(o.data[:4], "big") for o in self.out if isinstance(o, Payload)]


def stream(n: int, *, first_seq: int = 0, first_ts: int = 0, start: float = 0.0) -> list[Sent]:
    return [
        Sent((first_seq + k) & 0xFFFF, (first_ts + k * SAMPLES) & 0xFFFFFFFF, start + k * FRAME, k == 0)
        for k in range(n)
    ]


def run(buffer: JitterBuffer, packets: list[Sent], *, until: float | None = None, tag: int = 0) -> Run:
    """Deliver in arrival order, pulling every 20 ms (offset 1 ms) in between."""
    packets = sorted(packets, key=lambda p: p.arrival)
    end = until if until is not None else max(p.arrival for p in packets) + 0.5
    result = Run()
    i = 0
    tick = 0.001
    while tick <= end:
        while i < len(packets) and packets[i].arrival <= tick:
            p = packets[i]
            payload = (p.seq + tag).to_bytes(4, "big")
            buffer.push(p.seq, p.ts, payload, p.arrival, marker=p.marker, ssrc=p.ssrc)
            i += 1
        item = buffer.pop(tick)
        if item is not None:
            result.out.append(item)
        tick += FRAME
    return result
