"""An adaptive jitter buffer: RTP packets in, one frame per pull out, in order.

``push`` takes what arrived (sequence number, timestamp, payload, arrival time);
``pop(now)``, called once per frame period by the decode side, returns the
next frame as a ``Payload``, a ``Lost`` marker for a frame that is not there
(the decoder conceals it: Opus with its PLC, G.711 with ``conceal_pcm``), or
``None`` when the next frame is not due yet. Nothing here reads a clock.

**Play-out.** Frame ``ts`` is due at ``offset + ts / rate``, with ``offset`` the
smallest transit time (arrival minus RTP time) seen over the last ``window``
packets, plus the current ``depth``: a packet delayed by up to ``depth`` more
than the fastest one is in time. Packets are held by extended sequence number,
so reordering within the depth is undone and sequence wrap is invisible; a
packet whose slot has passed is late and dropped, a second copy is a duplicate
and dropped, and both are counted. The buffer never holds more than
``capacity`` packets (``max_depth`` of frames): past it the oldest are dropped
(``overflow``), as a live link would.

**Adapting.** The target depth is the spread of transit times over the window
plus a margin, between ``min_depth`` and ``max_depth``. A late packet grows the
depth at once by how late it was (the next pulls return ``None`` while the
delay builds: one short gap instead of a run of losses). Shrinking is slow:
after ``stable`` seconds without a late packet, by at most one frame per
``stable`` seconds, by dropping one frame (``discarded``) — or freely at the
start of a talk spurt (a marker packet after a gap), where the silence absorbs
it and the play-out point is re-anchored. ``depth`` is readable at any time,
so the pipeline declares it as this stage's latency; ``depths`` keeps the last
changes as (time, depth), so what was declared when is known afterwards.

**Output time.** ``pts`` counts the samples of the slots pulled (frames and
``Lost`` alike), so what the decoder makes of them is one contiguous stream
whatever the network did; ``arrival`` on a ``Payload`` is its packet's.

**Discontinuities.** A transit time that moves by more than ``jump`` seconds is a
new timeline (the sender's timestamps jumped), and a sequence number far from
the expected one is a restart; both flush and re-anchor. A new SSRC resets the
buffer. Each is counted.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from voxline.media.frames import Payload
from voxline.transports.rtp.packet import RtpPacket, seq_delta, ts_delta

__all__ = ["JitterConfig", "JitterStats", "Lost", "JitterBuffer", "conceal_pcm"]

# A sequence number this far from the expected one is a sender restart (RFC 3550
# A.1's MAX_DROPOUT / MAX_MISORDER), not loss or reordering.
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100
_REMEMBERED = 64
_DEPTHS = 64  # depth changes remembered


@dataclass(frozen=True, slots=True)
class JitterConfig:
    codec: str = "PCMU"
    rate: int = 8000
    frame: float = 0.02
    min_depth: float = 0.02
    max_depth: float = 0.2
    initial_depth: float = 0.06
    margin: float = 0.005
    window: int = 100
    stable: float = 2.0
    jump: float = 1.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.frame <= 0:
            raise ValueError("jitter buffer rate and frame must be positive")
        if not 0 <= self.min_depth <= self.initial_depth <= self.max_depth:
            raise ValueError("jitter buffer depths must be min <= initial <= max")
        if self.window < 1:
            raise ValueError("jitter buffer window must be at least one packet")

    @property
    def frame_samples(self) -> int:
        return max(1, round(self.rate * self.frame))

    @property
    def capacity(self) -> int:
        """Packets held at most: ``max_depth`` of frames, plus the one being due."""
        return max(1, math.ceil(self.max_depth / self.frame - 1e-9)) + 1


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    played: int = 0
    lost: int = 0
    late: int = 0
    duplicates: int = 0
    reordered: int = 0
    concealed: int = 0
    overflow: int = 0
    discarded: int = 0
    flushed: int = 0
    resets: int = 0
    restarts: int = 0
    jumps: int = 0
    depth: float = 0.0
    depths: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=_DEPTHS))


@dataclass(frozen=True, slots=True)
class Lost:
    """No frame for this slot: the decoder conceals ``samples`` at ``rate``."""

    pts: int
    samples: int
    rate: int


@dataclass(slots=True)
class _Entry:
    ts: int
    payload: bytes
    arrival: float
    marker: bool


@dataclass(slots=True)
class _Unwrap:
    """Extends 16- or 32-bit counters by distance from the newest value seen."""

    raw: int = 0
    ext: int = 0
    bits: int = 16
    started: bool = False

    def extend(self, value: int) -> int:
        if not self.started:
            self.started = True
            self.raw, self.ext = value, value
            return value
        delta = seq_delta(value, self.raw) if self.bits == 16 else ts_delta(value, self.raw)
        ext = self.ext + delta
        if delta > 0:
            self.raw, self.ext = value, ext
        return ext


class JitterBuffer:
    """One stream's play-out buffer. Pure: time is the ``arrival``/``now`` given."""

    def __init__(self, config: JitterConfig = JitterConfig()) -> None:
        self.config = config
        self.stats = JitterStats()
        self._ssrc: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._packets: dict[int, _Entry] = {}
        self._seq = _Unwrap(bits=16)
        self._ts = _Unwrap(bits=32)
        self._started = False
        self._offset = 0.0
        self._play_ts = 0
        self._next_seq = 0
        self._highest = 0
        self._played: deque[int] = deque(maxlen=_REMEMBERED)
        self._late_seqs: set[int] = set()
        self._transits: deque[float] = deque(maxlen=self.config.window)
        self._depth = self.config.initial_depth
        self._last_late = -math.inf
        self._last_shrink = -math.inf
        self._pts = 0
        self.stats.depth = self._depth

    # -- reading ---------------------------------------------------------------

    @property
    def depth(self) -> float:
        """The current play-out delay in seconds: this stage's latency."""
        return self._depth

    latency = depth

    @property
    def held(self) -> int:
        return len(self._packets)

    def _due(self, ts: int) -> float:
        return self._offset + ts / self.config.rate

    def next_due(self) -> float | None:
        """When the next slot is due (a frame, or its concealment); None before the first packet."""
        return self._due(self._play_ts) if self._started else None

    def target(self) -> float:
        """The depth the measured jitter asks for."""
        c = self.config
        spread = max(self._transits) - min(self._transits) if self._transits else 0.0
        return min(c.max_depth, max(c.min_depth, spread + c.margin))

    # -- input -----------------------------------------------------------------

    def push_packet(self, packet: RtpPacket, arrival: float) -> str:
        return self.push(
            packet.sequence_number,
            packet.timestamp,
            packet.payload,
            arrival,
            marker=packet.marker,
            ssrc=packet.ssrc,
        )

    def push(
        self,
        seq: int,
        timestamp: int,
        payload: bytes,
        arrival: float,
        *,
        marker: bool = False,
        ssrc: int | None = None,
    ) -> str:
        """Take one packet; returns what became of it: ``"buffered"``,
        ``"duplicate"``, ``"late"`` (each counted) or ``"reset"`` (a new SSRC,
        restart or timestamp jump re-anchored the buffer on this packet)."""
        self.stats.received += 1
        outcome = "buffered"
        if ssrc is not None and self._ssrc is not None and ssrc != self._ssrc:
            self.stats.resets += 1
            self.stats.flushed += len(self._packets)
            self._reset()
            outcome = "reset"
        if ssrc is not None:
            self._ssrc = ssrc
        ext_seq = self._seq.extend(seq)
        ext_ts = self._ts.extend(timestamp)
        transit = arrival - ext_ts / self.config.rate
        if not self._started:
            self._start(ext_seq, ext_ts, arrival)
        elif not -_MAX_MISORDER <= ext_seq - self._highest < _MAX_DROPOUT:
            self.stats.restarts += 1
            ext_seq, ext_ts = self._restart(seq, timestamp, arrival)
            outcome = "reset"
        elif self._transits and (
            transit < min(self._transits) - self.config.jump
            or transit > max(self._transits) + self.config.jump
        ):
            self.stats.jumps += 1
            ext_seq, ext_ts = self._restart(seq, timestamp, arrival)
            outcome = "reset"
        if ext_seq in self._packets or ext_seq in self._played:
            self.stats.duplicates += 1
            return "duplicate"
        half = self.config.frame_samples // 2
        if ext_seq < self._next_seq or (
            ext_ts < self._play_ts - half and not (marker and not self._older_held(ext_seq))
        ):
            self._late(ext_seq, ext_ts, arrival)
            return "late"
        if ext_seq < self._highest:
            self.stats.reordered += 1
        self._highest = max(self._highest, ext_seq)
        self._transits.append(transit)
        self._packets[ext_seq] = _Entry(ext_ts, payload, arrival, marker)
        self._trim()
        return outcome

    def _start(self, ext_seq: int, ext_ts: int, arrival: float) -> None:
        self._started = True
        # Stability is measured from the anchor: a new estimate needs time.
        self._last_late = self._last_shrink = arrival
        transit = arrival - ext_ts / self.config.rate
        self._next_seq = ext_seq
        self._highest = ext_seq
        self._play_ts = ext_ts
        self._offset = transit + self._depth
        self.stats.depths.append((arrival, self._depth))

    def _restart(self, seq: int, timestamp: int, arrival: float) -> tuple[int, int]:
        """Flush, and start the sequence and time lines again at this packet."""
        self.stats.flushed += len(self._packets)
        self._packets.clear()
        self._played.clear()
        self._late_seqs.clear()
        self._transits.clear()
        self._seq = _Unwrap(bits=16)
        self._ts = _Unwrap(bits=32)
        ext_seq, ext_ts = self._seq.extend(seq), self._ts.extend(timestamp)
        self._start(ext_seq, ext_ts, arrival)
        return ext_seq, ext_ts

    def _older_held(self, ext_seq: int) -> bool:
        return any(s < ext_seq for s in self._packets)

    def _late(self, ext_seq: int, ext_ts: int, arrival: float) -> None:
        self.stats.late += 1
        if ext_seq >= self._next_seq:
            self._late_seqs.add(ext_seq)
        # Grow at once by how late it was, so the next such packet is in time.
        late_by = max(0.0, arrival - self._due(ext_ts))
        grown = min(self.config.max_depth, self._depth + late_by + self.config.margin)
        self._offset += grown - self._depth
        self._set_depth(grown, arrival)
        self._last_late = arrival

    def _trim(self) -> None:
        while len(self._packets) > self.config.capacity:
            oldest = min(self._packets)
            entry = self._packets.pop(oldest)
            self.stats.overflow += 1
            self._account(oldest)
            self._play_ts = max(self._play_ts, entry.ts + self.config.frame_samples)

    def _account(self, ext_seq: int) -> None:
        """Packet ``ext_seq`` leaves (played or dropped): count the gap before it."""
        gap = range(self._next_seq, ext_seq)
        late = {s for s in self._late_seqs if s < ext_seq}
        self.stats.lost += max(0, len(gap) - len(late))
        self._late_seqs -= late
        self._next_seq = max(self._next_seq, ext_seq + 1)
        self._played.append(ext_seq)

    def _set_depth(self, depth: float, at: float) -> None:
        if depth != self._depth:
            self.stats.depths.append((at, depth))
        self._depth = depth
        self.stats.depth = depth

    # -- output ----------------------------------------------------------------

    def pop(self, now: float) -> Payload | Lost | None:
        """The frame for the next slot if it is due at ``now``, else ``None``."""
        if not self._started:
            return None
        c = self.config
        samples = c.frame_samples
        half = samples // 2
        head = min(self._packets) if self._packets else None
        if head is not None:
            entry = self._packets[head]
            if entry.marker and abs(entry.ts - self._play_ts) > half:
                self._reanchor(entry, now)
        if now < self._due(self._play_ts):
            return None
        while head is not None and self._packets[head].ts < self._play_ts - half:
            # Can only follow an odd timestamp order; its slot is gone.
            self._packets.pop(head)
            self.stats.late += 1
            self._account(head)
            head = min(self._packets) if self._packets else None
        if head is None or self._packets[head].ts > self._play_ts + half:
            self.stats.concealed += 1
            self._play_ts += samples
            lost = Lost(self._pts, samples, c.rate)
            self._pts += samples
            return lost
        entry = self._packets.pop(head)
        self._account(head)
        self.stats.played += 1
        self._play_ts = entry.ts + samples
        out = Payload(entry.payload, c.codec, c.rate, pts=self._pts, arrival=entry.arrival)
        self._pts += samples
        self._maybe_shrink(now)
        return out

    def _reanchor(self, entry: _Entry, now: float) -> None:
        """A talk spurt starts after a gap: play it from here, at the target depth."""
        if now - self._last_late >= self.config.stable:
            self._set_depth(self.target(), now)
        else:
            self._set_depth(max(self._depth, self.target()), now)
        base = min(self._transits) if self._transits else entry.arrival - entry.ts / self.config.rate
        self._offset = base + self._depth
        self._play_ts = entry.ts

    def _maybe_shrink(self, now: float) -> None:
        c = self.config
        if now - self._last_late < c.stable or now - self._last_shrink < c.stable:
            return
        if self.target() > self._depth - c.frame:
            return
        nxt = min(self._packets) if self._packets else None
        if nxt is None or nxt != self._next_seq:
            return
        entry = self._packets.pop(nxt)
        self._account(nxt)
        self.stats.discarded += 1
        self._play_ts = entry.ts + c.frame_samples
        self._offset -= c.frame
        self._set_depth(self._depth - c.frame, now)
        self._last_shrink = now


def conceal_pcm(last: npt.NDArray[np.int16], lost_run: int) -> npt.NDArray[np.int16]:
    """A stand-in for a lost G.711 frame: the last good frame, fading out.

    ``lost_run`` counts the consecutive lost frames so far (1 for the first).
    The first repeat is at 3/4 level and each further one at half the one before,
    so a single loss is barely heard and a long gap fades to silence in about
    five frames instead of buzzing. This is far simpler than G.711 Appendix I's
    pitch-period repetition, and is offered as that: a small, cheap default.
    """
    if lost_run < 1:
        raise ValueError(f"lost run {lost_run} must be at least 1")
    gain = 0.75 * 0.5 ** (lost_run - 1)
    if gain < 1 / 64:
        return np.zeros_like(last)
    return (last.astype(np.float32) * gain).astype(np.int16)
