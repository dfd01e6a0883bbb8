"""One call's RTP media (RtpSession) on sipp's captures and built packets, on a fake clock."""

from __future__ import annotations

import random

import numpy as np

from tests.transports.rtp.pcap import DATA, read_pcap
from voxline.codecs import G722, PCMA
from voxline.media.frames import Audio, Payload
from voxline.transports.rtp.dtmf import TelephoneEvent
from voxline.transports.rtp.packet import RtpPacket
from voxline.transports.rtp.rtcp import ReceiverReport, ReportBlock, SenderReport, build_compound, parse_compound
from voxline.transports.rtp.session import RtpParams, RtpSession

PEER = ("127.0.0.1", 6000)
PCMA_PARAMS = RtpParams(PCMA, 8, 101, 20, PEER, ("127.0.0.1", 6001))


def session(params: RtpParams = PCMA_PARAMS, **kw: object) -> RtpSession:
    return RtpSession(params, 0.0, rng=random.Random(7), **kw)  # type: ignore[arg-type]


def replay(s: RtpSession, name: str, start: float = 1.0) -> tuple[list[object], list[object]]:
    """Feed a capture at its own pace and pull every 10 ms: (frames popped, digits)."""
    grams = read_pcap(DATA / name)
    t0 = grams[0].time
    frames: list[object] = []
    digits: list[object] = []
    i, now = 0, start
    end = start + grams[-1].time - t0 + 1.0
    while now < end:
        while i < len(grams) and start + grams[i].time - t0 <= now:
            digits += s.receive(grams[i].payload, PEER, now)
            i += 1
        frames += s.pop(now)
        now += 0.01
    return frames, digits


def test_sipp_pcma_comes_out_in_order_and_the_30ms_ptime_is_learned() -> None:
    s = session()
    frames, digits = replay(s, "g711a_first20.pcap")
    sent = [RtpPacket.parse(g.payload).payload for g in read_pcap(DATA / "g711a_first20.pcap")]
    payloads = [f.data for f in frames if isinstance(f, Payload)]
    assert payloads == sent and digits == []
    assert s.stats()["ptime"] == 30 and s.counts.extra["ptime_learned"] == 30
    # After the last packet the stream ends: what follows is concealment, fading to silence.
    tail = [f for f in frames[len(sent):] if isinstance(f, Audio)]
    assert tail and all(len(a.pcm) == 240 for a in tail) and not tail[-1].pcm.any()


def test_sipp_dtmf_capture_yields_digit_1_once() -> None:
    s = session()
    _, digits = replay(s, "dtmf_2833_1.pcap")
    assert [d.digit for d in digits] == ["1"] and s.counts.dtmf_in == 1


def _packet(seq: int, ts: int, pt: int = 8, payload: bytes = b"\xd5" * 160, ssrc: int = 99) -> bytes:
    return bytes(RtpPacket(pt, seq, ts, ssrc, payload))


def test_strict_rtp_drops_other_sources_malformed_and_unknown_payload_types() -> None:
    s = session()
    s.receive(_packet(1, 160), PEER, 0.0)
    s.receive(_packet(2, 320), PEER, 0.02)
    s.receive(_packet(3, 480), ("127.0.0.1", 6666), 0.04)  # an injected stream
    s.receive(b"\x80\x08\x00", PEER, 0.05)
    s.receive(_packet(4, 640, pt=0), PEER, 0.06)
    assert (s.counts.wrong_source, s.counts.malformed, s.counts.unknown_pt) == (1, 1, 1)
    assert s.send_to == PEER  # symmetric: the learned address


def test_symmetric_rtp_answers_where_the_packets_come_from() -> None:
    s = session()
    natted = ("127.0.0.1", 40000)
    s.receive(_packet(1, 160), natted, 0.0)
    s.receive(_packet(2, 320), natted, 0.02)
    assert s.send_to == natted and s.rtcp_to == ("127.0.0.1", 40001)


def test_a_lost_g711_frame_is_concealed_with_the_last_one_fading() -> None:
    s = session()
    loud = bytes([0x80]) * 160  # a loud A-law frame
    for k, at in ((0, 0.0), (1, 0.02), (3, 0.06), (4, 0.08)):  # seq 2 is lost
        s.receive(_packet(k, k * 160, payload=loud), PEER, at)
    frames = []
    now = 0.0
    while now < 0.4:
        frames += s.pop(now)
        now += 0.01
    kinds = [type(f).__name__ for f in frames[:5]]
    assert kinds == ["Payload", "Payload", "Audio", "Payload", "Payload"]
    gap = frames[2]
    ref = PCMA.decoder().decode(loud)
    assert isinstance(gap, Audio) and np.array_equal(gap.pcm, (ref.astype(np.float32) * 0.75).astype(np.int16))
    assert s.counts.concealed >= 1


def test_packetize_counts_in_the_rtp_clock() -> None:
    s = session(RtpParams(G722, 9, None, 20, PEER))
    a = RtpPacket.parse(s.packetize(b"\x00" * 160, 320))
    b = RtpPacket.parse(s.packetize(b"\x00" * 160, 320))
    assert (b.sequence_number - a.sequence_number) & 0xFFFF == 1
    assert (b.timestamp - a.timestamp) & 0xFFFFFFFF == 160  # G.722: 16 kHz audio on an 8 kHz clock
    assert a.ssrc == s.ssrc and a.payload_type == 9


def test_dtmf_out_is_rfc4733_with_three_end_packets() -> None:
    s = session()
    packets = s.dtmf("5", duration=0.1)
    audio = RtpPacket.parse(s.packetize(b"\xd5" * 160, 160))  # audio goes on while the digit is sent
    wire = [RtpPacket.parse(s.stamp(p)) for _, p in packets]
    events = [TelephoneEvent.parse(p.payload) for p in wire]
    assert {e.digit for e in events} == {"5"} and [e.end for e in events][-3:] == [True, True, True]
    assert [round(t, 3) for t, _ in packets][:2] == [0.0, 0.02]
    assert len({p.timestamp for p in wire}) == 1 and wire[0].marker
    seqs = [audio.sequence_number] + [p.sequence_number for p in wire]
    assert [(b - a) & 0xFFFF for a, b in zip(seqs, seqs[1:])] == [1] * len(wire)  # one increasing sequence


def test_rtcp_rr_then_sr_and_round_trip_from_their_report() -> None:
    s = session()
    s.receive(_packet(1, 160), PEER, 0.0)
    s.receive(_packet(2, 320), PEER, 0.02)
    first = s.report(100.0, wall=1_000_000.0)
    assert first is not None and isinstance(parse_compound(first)[0], ReceiverReport)
    assert s.report(100.0, wall=1_000_000.0) is None  # not due again yet
    s.packetize(b"\xd5" * 160, 160)
    second = s.report(200.0, wall=1_000_100.0)
    sr = parse_compound(second)[0]  # type: ignore[arg-type]
    assert isinstance(sr, SenderReport) and sr.packet_count == 1 and sr.reports[0].ssrc == 99
    # The peer reports on our stream: LSR is our SR's middle NTP bits, DLSR 0.5 s; it arrives 0.7 s later.
    lsr = (sr.ntp_timestamp >> 16) & 0xFFFFFFFF
    block = ReportBlock(ssrc=s.ssrc, fraction_lost=0, packets_lost=0, highest_sequence=1, jitter=0, lsr=lsr,
                        dlsr=32768)
    s.receive(build_compound([ReceiverReport(99, (block,))]), PEER, 200.7)  # no wall clock: no RTT
    assert s.rtt is None
    s.receive_rtcp(build_compound([ReceiverReport(99, (block,))]), PEER, 200.7, wall=1_000_100.7)
    assert abs(s.rtt - 0.2) < 0.001 and s.counts.rtcp_in == 2  # type: ignore[operator]


def test_inactivity_expires_unless_the_peer_is_on_hold() -> None:
    s = session(idle_timeout=5.0)
    s.receive(_packet(1, 160), PEER, 1.0)
    s.receive(_packet(2, 320), PEER, 1.02)
    assert not s.expired(5.9) and s.expired(6.1)
    s.update(RtpParams(PCMA, 8, 101, 20, PEER, None, peer_sends=False))
    assert not s.expired(100.0)
