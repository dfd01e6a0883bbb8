"""Per-stream receive state (RFC 3550 A.1, A.3, A.8): sequence, loss, jitter, SSRC.

``ReceiveStream.receive(packet, arrival)`` is fed every parsed RTP packet of one
stream and returns the packets that are now valid, each with its extended
sequence number. It follows RFC 3550 A.1:

- a new source is on probation until ``MIN_SEQUENTIAL`` packets arrive in
  sequence; A.1 discards the probation packets, but here they are held (at most
  ``MIN_SEQUENTIAL`` of them) and released once the source is valid, so a call's
  first 20 ms and a DTMF start packet are not lost to the check;
- a forward jump of less than ``MAX_DROPOUT`` is loss; a backward step of at most
  ``MAX_MISORDER`` is a duplicate or a reordered packet; anything else is a
  jump, accepted only when the next packet confirms it (the sender restarted);
- a packet from a new SSRC resets the state (counted), as a new source.

It also keeps A.8's interarrival jitter and A.3's loss, which become the
report block of an RTCP RR (``report_block``), and notes timestamp jumps: the
transit time (arrival minus RTP time) moving by more than ``jump`` seconds,
which is what a jitter buffer must re-anchor on.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxline.transports.rtp.packet import RtpPacket, ts_delta
from voxline.transports.rtp.rtcp import ReportBlock, SenderReport, ntp_middle

__all__ = [
    "MAX_DROPOUT",
    "MAX_MISORDER",
    "MIN_SEQUENTIAL",
    "Received",
    "StreamStats",
    "ReceiveStream",
]

MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
_SEQ_MOD = 1 << 16


@dataclass(frozen=True, slots=True)
class Received:
    """A valid packet with its extended (32-bit, wrap-free) sequence number."""

    packet: RtpPacket
    arrival: float
    extended_seq: int
    timestamp_jump: bool = False


@dataclass(slots=True)
class StreamStats:
    packets: int = 0
    octets: int = 0
    valid: int = 0
    probation_dropped: int = 0
    bad_jumps: int = 0
    restarts: int = 0
    ssrc_changes: int = 0
    timestamp_jumps: int = 0


class ReceiveStream:
    """The receive side of one RTP stream; pure state over (packet, arrival)."""

    def __init__(self, clock_rate: int, *, probation: int = MIN_SEQUENTIAL, jump: float = 1.0):
        if clock_rate <= 0:
            raise ValueError(f"clock rate {clock_rate} is not positive")
        self.clock_rate = clock_rate
        self.probation_packets = probation
        self.jump = jump
        self.stats = StreamStats()
        self.ssrc: int | None = None
        self._reset_source()

    def _reset_source(self) -> None:
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self._bad_seq = _SEQ_MOD + 1
        self._expected_prior = 0
        self._received_prior = 0
        self._probation = self.probation_packets
        self._held: list[tuple[RtpPacket, float]] = []
        self._jitter = 0.0
        self._transit: float | None = None
        self._last_ts: int | None = None
        self._unwrapped_ts = 0
        self._last_sr: int = 0
        self._last_sr_at: float | None = None

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self._bad_seq = _SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self._expected_prior = 0
        self._received_prior = 0

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    def _extend(self, seq: int) -> int:
        """The extended number of ``seq``, taken as the nearest to the highest so far."""
        delta = ((seq - self.max_seq + 0x8000) & 0xFFFF) - 0x8000
        return self.extended_max + delta

    def receive(self, packet: RtpPacket, arrival: float) -> list[Received]:
        """Account for one packet; return the packets that are now valid, in order."""
        self.stats.packets += 1
        self.stats.octets += len(packet.payload)
        if packet.ssrc != self.ssrc:
            if self.ssrc is not None:
                self.stats.ssrc_changes += 1
            self.ssrc = packet.ssrc
            self._reset_source()
            self._init_seq(packet.sequence_number)
            self.max_seq = (packet.sequence_number - 1) & 0xFFFF
        seq = packet.sequence_number
        if self._probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self._probation -= 1
                self.max_seq = seq
                self._held.append((packet, arrival))
                if self._probation:
                    return []
                # Valid now: A.1 restarts the counts at this packet; the held
                # ones before it count as received too.
                held = self._held
                self._held = []
                self._init_seq(held[0][0].sequence_number)
                out = []
                for p, t in held:
                    self.max_seq = p.sequence_number
                    if p.sequence_number < held[0][0].sequence_number:
                        self.cycles = _SEQ_MOD
                    out.append(self._accept(p, t))
                return out
            self.stats.probation_dropped += len(self._held)
            self._held = [(packet, arrival)]
            self._probation = self.probation_packets - 1
            self.max_seq = seq
            if not self._probation:
                self._held = []
                self._init_seq(seq)
                return [self._accept(packet, arrival)]
            return []
        udelta = (seq - self.max_seq) & 0xFFFF
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += _SEQ_MOD
            self.max_seq = seq
        elif udelta <= _SEQ_MOD - MAX_MISORDER:
            if seq == self._bad_seq:
                # Two sequential packets after a big jump: the sender restarted.
                self.stats.restarts += 1
                self._init_seq(seq)
                self._transit = None
            else:
                self.stats.bad_jumps += 1
                self._bad_seq = (seq + 1) & 0xFFFF
                return []
        # else: a duplicate or reordered packet, within MAX_MISORDER.
        return [self._accept(packet, arrival)]

    def _accept(self, packet: RtpPacket, arrival: float) -> Received:
        self.received += 1
        self.stats.valid += 1
        jumped = self._update_jitter(packet, arrival)
        return Received(packet, arrival, self._extend(packet.sequence_number), jumped)

    def _update_jitter(self, packet: RtpPacket, arrival: float) -> bool:
        # Packets of one sampling instant (DTMF updates, a frame split over
        # packets) say nothing about the network's timing: A.8 is per frame.
        if packet.timestamp == self._last_ts:
            return False
        if self._last_ts is None:
            unwrapped = packet.timestamp
        else:
            unwrapped = self._unwrapped_ts + ts_delta(packet.timestamp, self._last_ts)
        self._last_ts = packet.timestamp
        self._unwrapped_ts = unwrapped
        transit = arrival * self.clock_rate - unwrapped
        if self._transit is None:
            self._transit = transit
            return False
        d = abs(transit - self._transit)
        self._transit = transit
        if d > self.jump * self.clock_rate:
            # A new timeline, not network jitter: count it and start afresh.
            self.stats.timestamp_jumps += 1
            return True
        self._jitter += (d - self._jitter) / 16.0
        return False

    @property
    def jitter(self) -> float:
        """Interarrival jitter in seconds (A.8)."""
        return self._jitter / self.clock_rate

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1 if self.received else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3), clamped to the report's signed 24 bits."""
        return max(-0x800000, min(0x7FFFFF, self.expected - self.received))

    def on_sender_report(self, report: SenderReport, arrival: float) -> None:
        """Note an SR from this source, for the LSR/DLSR of our next report."""
        self._last_sr = ntp_middle(report.ntp_timestamp)
        self._last_sr_at = arrival

    def report_block(self, now: float) -> ReportBlock:
        """This stream's report block for an RR or SR (A.3); starts a new interval."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self.received - self._received_prior
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = (lost_interval << 8) // expected_interval
        dlsr = 0
        if self._last_sr_at is not None:
            dlsr = int(max(0.0, now - self._last_sr_at) * 65536) & 0xFFFFFFFF
        return ReportBlock(
            ssrc=self.ssrc or 0,
            fraction_lost=min(fraction, 255),
            packets_lost=self.lost,
            highest_sequence=self.extended_max & 0xFFFFFFFF,
            jitter=int(self._jitter) & 0xFFFFFFFF,
            lsr=self._last_sr,
            dlsr=dlsr,
        )
