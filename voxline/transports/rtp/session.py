"""One call's RTP media, sans-I/O: datagrams and time in, frames and datagrams out.

``RtpSession`` puts the layer's parts together for one audio stream:

- in: each datagram is parsed (malformed ones counted and dropped), filtered by
  source (strict RTP: once the peer's address is learned, packets from
  elsewhere are dropped and counted; symmetric RTP: we answer to it), checked
  by the RFC 3550 receive state, and routed by payload type: the call's codec to
  the jitter buffer, telephone-event to the RFC 4733 receiver, anything else
  counted and dropped;
- ``pop(now)``, once per frame period, gives the frames now due, in order: a
  ``Payload`` for a packet, or for a lost one ``Audio`` that conceals it (G.711:
  the last frame fading, ``conceal_pcm``; other codecs, whose decoders keep
  state, silence of the frame's length), so the pipeline's timeline never skips;
- out: ``packetize(payload)`` makes the next RTP packet of our stream,
  ``dtmf(digit)`` the RFC 4733 packets of a key press with their send offsets
  (numbered by ``stamp`` as they go),
  ``report(now, wall)`` an RTCP SR (or RR) with SDES when one is due;
- ``expired(now)``: no RTP or RTCP for ``idle_timeout`` seconds while the peer
  should be sending (not on hold): the call is gone without a BYE.

The packet duration the peer really sends (sipp plays 30 ms) is learned from
the first timestamps and the jitter buffer re-made for it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from voxline.codecs import Codec
from voxline.media.frames import Audio, Dtmf, Payload
from voxline.transports.rtp.dtmf import DtmfReceiver, tone_packets
from voxline.transports.rtp.errors import RtcpError, RtpError
from voxline.transports.rtp.jitter import JitterBuffer, JitterConfig, Lost, conceal_pcm
from voxline.transports.rtp.packet import RtpPacket, is_rtcp
from voxline.transports.rtp.rtcp import (
    SDES_CNAME,
    ReceiverReport,
    SdesChunk,
    SenderReport,
    SourceDescription,
    build_compound,
    ntp_from_unix,
    parse_compound,
    round_trip_time,
)
from voxline.transports.rtp.schedule import ReportScheduler
from voxline.transports.rtp.source import Address, IdleDetector, SourceFilter
from voxline.transports.rtp.stream import ReceiveStream

__all__ = ["RtpParams", "RtpSession"]

_STATELESS = ("pcmu", "pcma")  # codecs whose frames decode alone: concealment from the last one
_PACKET_MS = (10, 20, 30, 40, 60)


@dataclass(frozen=True, slots=True)
class RtpParams:
    """What signalling settled for the stream (SDP offer/answer)."""

    codec: Codec
    pt: int
    dtmf_pt: int | None = None
    ptime: int = 20
    remote: Address | None = None  # None: the peer takes no RTP (hold, port 0)
    remote_rtcp: Address | None = None
    rtcp_mux: bool = False
    peer_sends: bool = True  # False while the peer is on hold (sendonly from us / inactive)
    learn_remote: bool = False  # no address from signalling: send to whoever we hear (ARI external media)


@dataclass(slots=True)
class _Counts:
    malformed: int = 0
    unknown_pt: int = 0
    wrong_source: int = 0
    rtcp_in: int = 0
    rtcp_out: int = 0
    sent: int = 0
    dtmf_in: int = 0
    dtmf_out: int = 0
    concealed: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class RtpSession:
    def __init__(self, params: RtpParams, now: float, *, idle_timeout: float = 30.0, cname: str = "voxline",
                 rng: random.Random | None = None, jitter: JitterConfig | None = None) -> None:
        rng = rng or random.Random()
        self.params = params
        self.ssrc = rng.getrandbits(32)
        self.cname = cname
        self.counts = _Counts()
        self.filter = SourceFilter(expected=params.remote)
        self.stream = ReceiveStream(params.codec.clock_rate)
        self._jitter_base = jitter or JitterConfig()
        self.jitter = self._make_jitter(params.ptime)
        self.dtmf_in = DtmfReceiver(params.codec.clock_rate)
        self.idle = IdleDetector(idle_timeout, now)
        self.schedule = ReportScheduler(now, rng=rng)
        self.rtt: float | None = None
        self._seq = rng.getrandbits(16)
        self._ts = rng.getrandbits(32)
        self._octets = 0
        self._last_payload: bytes | None = None
        self._lost_run = 0
        self._prev: tuple[RtpPacket, float] | None = None
        self._learned_ptime = False

    # -- signalling ---------------------------------------------------------------

    def update(self, params: RtpParams) -> None:
        """A re-INVITE or UPDATE changed the stream (address, hold); the codec stays."""
        if params.remote is not None and params.remote != self.params.remote:
            self.filter.told(params.remote)
        self.params = params

    @property
    def send_to(self) -> Address | None:
        if self.params.remote is None and not self.params.learn_remote:
            return None
        return self.filter.send_to()

    @property
    def rtcp_to(self) -> Address | None:
        if self.params.remote is None:
            return None  # learn_remote included: a peer that gave no address gets no RTCP
        if self.params.rtcp_mux:
            return self.send_to
        learned = self.filter.learned
        if learned is not None and self.params.remote_rtcp is not None and learned != self.params.remote:
            return (learned[0], learned[1] + 1)  # symmetric, behind NAT: next to the RTP we hear
        return self.params.remote_rtcp

    # -- in ---------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> list[Dtmf]:
        """One datagram on the RTP port; returns the digits it completes."""
        if is_rtcp(data):
            self.receive_rtcp(data, source, now)
            return []
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.counts.malformed += 1
            return []
        learned = self.filter.learned
        if learned is not None and source != learned:
            self.counts.wrong_source += 1
            self.filter.dropped += 1
            return []
        pt = packet.payload_type
        if pt != self.params.pt and pt != self.params.dtmf_pt:
            self.counts.unknown_pt += 1
            return []
        out: list[Dtmf] = []
        for got in self.stream.receive(packet, now):
            if not self.filter.accept(source):
                self.counts.wrong_source += 1
                continue
            self.idle.seen(now)
            p = got.packet
            if p.payload_type == self.params.dtmf_pt:
                for digit in self.dtmf_in.receive(p, got.arrival):
                    self.counts.dtmf_in += 1
                    out.append(digit.frame())
            else:
                self._learn_ptime(p, got.arrival)
                self.jitter.push_packet(p, got.arrival)
        return out

    def receive_rtcp(self, data: bytes, source: Address, now: float, wall: float | None = None) -> None:
        try:
            packets = parse_compound(data)
        except RtcpError:
            self.counts.malformed += 1
            return
        self.counts.rtcp_in += 1
        self.idle.seen(now)
        for p in packets:
            if isinstance(p, SenderReport):
                self.stream.on_sender_report(p, now)
            if isinstance(p, SenderReport | ReceiverReport) and wall is not None:
                for block in p.reports:
                    if block.ssrc == self.ssrc:
                        rtt = round_trip_time(block, ntp_from_unix(wall))
                        self.rtt = rtt if rtt is not None else self.rtt

    def expire_dtmf(self, now: float) -> list[Dtmf]:
        return [d.frame() for d in self.dtmf_in.expire(now)]

    def _learn_ptime(self, p: RtpPacket, arrival: float) -> None:
        """The second packet in sequence says how long packets are; re-make the buffer
        for that, with the first packet in it if it has not been played."""
        prev, self._prev = self._prev, (p, arrival)
        if self._learned_ptime or prev is None or (prev[0].sequence_number + 1) & 0xFFFF != p.sequence_number:
            return
        step = (p.timestamp - prev[0].timestamp) & 0xFFFFFFFF
        ms = step * 1000 // self.params.codec.clock_rate
        self._learned_ptime = True
        if ms in _PACKET_MS and ms != round(self.jitter.config.frame * 1000):
            old = self.jitter
            self.jitter = self._make_jitter(ms)
            if old.stats.played == 0:
                self.jitter.push_packet(*prev)
            self.counts.extra["ptime_learned"] = ms

    def _make_jitter(self, ptime: int) -> JitterBuffer:
        c = self.params.codec
        frame = ptime / 1000
        base = self._jitter_base
        return JitterBuffer(replace(base, codec=c.name, rate=c.clock_rate, frame=frame,
                                    min_depth=max(base.min_depth, frame), initial_depth=max(base.initial_depth, frame),
                                    max_depth=max(base.max_depth, 4 * frame)))

    # -- out to the pipeline -----------------------------------------------------

    def next_due(self) -> float | None:
        """When the jitter buffer's next slot is due (see ``JitterBuffer.next_due``)."""
        return self.jitter.next_due()

    def pop(self, now: float) -> list[Payload | Audio]:
        """Every frame due by ``now``, in order (concealment for the lost ones)."""
        out: list[Payload | Audio] = []
        while (frame := self.jitter.pop(now)) is not None:
            if isinstance(frame, Lost):
                out.append(self._conceal(frame))
                continue
            self._lost_run = 0
            self._last_payload = frame.data
            out.append(frame)
        return out

    def _conceal(self, lost: Lost) -> Audio:
        self.counts.concealed += 1
        self._lost_run += 1
        codec = self.params.codec
        samples = lost.samples * codec.rate // codec.clock_rate
        if self._last_payload is not None and codec.name.lower() in _STATELESS:
            last = codec.decoder().decode(self._last_payload)
            pcm = conceal_pcm(last, self._lost_run)
            if len(pcm) != samples:
                pcm = np.resize(pcm, samples) if len(pcm) else np.zeros(samples, np.int16)
        else:
            pcm = np.zeros(samples, np.int16)
        return Audio(pcm, codec.rate, lost.pts * codec.rate // codec.clock_rate, 0.0)

    # -- out to the wire ---------------------------------------------------------

    def packetize(self, payload: bytes, samples: int) -> bytes:
        """The next RTP packet of our stream; ``samples`` at the codec's rate."""
        codec = self.params.codec
        packet = RtpPacket(self.params.pt, self._seq, self._ts, self.ssrc, payload)
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + samples * codec.clock_rate // codec.rate) & 0xFFFFFFFF
        self.counts.sent += 1
        self._octets += len(payload)
        return bytes(packet)

    def dtmf(self, digit: str, duration: float = 0.1) -> list[tuple[float, RtpPacket]]:
        """The packets of one key press, each with its send offset in seconds. Their
        sequence numbers are given as each is sent (``stamp``), so audio sent
        meanwhile keeps one increasing sequence with them."""
        pt = self.params.dtmf_pt
        if pt is None:
            raise RtpError("the peer did not negotiate telephone-event")
        rate = self.params.codec.clock_rate
        interval = rate * self.params.ptime // 1000
        packets = tone_packets(digit, sequence_number=0, timestamp=self._ts, ssrc=self.ssrc,
                               payload_type=pt, duration=max(interval, int(duration * rate)), interval=interval)
        self.counts.dtmf_out += 1
        return [(offset / rate, p) for offset, p in packets]

    def stamp(self, packet: RtpPacket) -> bytes:
        """A packet of ours (a DTMF event) with the stream's next sequence number."""
        out = RtpPacket(packet.payload_type, self._seq, packet.timestamp, self.ssrc, packet.payload, packet.marker)
        self._seq = (self._seq + 1) & 0xFFFF
        self.counts.sent += 1
        return bytes(out)

    def report(self, now: float, wall: float) -> bytes | None:
        """An RTCP compound if one is due: SR once we have sent, else RR; SDES CNAME."""
        if not self.schedule.due(now):
            return None
        blocks = (self.stream.report_block(now),) if self.stream.ssrc is not None else ()
        first: SenderReport | ReceiverReport
        if self.counts.sent:
            first = SenderReport(self.ssrc, ntp_from_unix(wall), self._ts, self.counts.sent & 0xFFFFFFFF,
                                 self._octets & 0xFFFFFFFF, blocks)
        else:
            first = ReceiverReport(self.ssrc, blocks)
        sdes = SourceDescription((SdesChunk(self.ssrc, ((SDES_CNAME, self.cname.encode()),)),))
        data = build_compound([first, sdes])
        self.schedule.sent(now, len(data))
        self.counts.rtcp_out += 1
        return data

    # -- liveness, stats ---------------------------------------------------------

    def expired(self, now: float) -> bool:
        return self.params.peer_sends and self.idle.expired(now)

    def stats(self) -> dict[str, Any]:
        j = self.jitter.stats
        c = self.counts
        return {
            "codec": self.params.codec.name, "ptime": round(self.jitter.config.frame * 1000),
            "received": self.stream.stats.valid, "lost": self.stream.lost, "jitter": self.stream.jitter,
            "rtt": self.rtt, "sent": c.sent, "malformed": c.malformed, "unknown_pt": c.unknown_pt,
            "wrong_source": c.wrong_source, "dtmf_in": c.dtmf_in, "dtmf_out": c.dtmf_out,
            "rtcp_in": c.rtcp_in, "rtcp_out": c.rtcp_out, "concealed": c.concealed,
            "jitter_buffer": {"depth": self.jitter.depth, "late": j.late, "duplicates": j.duplicates,
                              "reordered": j.reordered, "overflow": j.overflow, "played": j.played,
                              "depths": [[round(t, 4), d] for t, d in j.depths]},
        }
