"""The RTP and RTCP parsers, and a stream's receive path, fuzzed with hypothesis.

Seeded with sipp's captures (PCMA and RFC 4733 packets) and with RTCP we build:
each is mutated (bytes flipped, inserted, cut) or replaced by arbitrary bytes.
Nothing may escape but the parser's own error (``RtpError``, ``RtcpError``),
and ``RtpSession.receive`` — what a datagram from anyone meets — raises nothing
at all and keeps its counters consistent.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.transports.rtp.pcap import rtp_payloads
from voxline.codecs import PCMA
from voxline.transports.rtp.errors import RtpError
from voxline.transports.rtp.packet import RtpPacket
from voxline.transports.rtp.rtcp import ReceiverReport, ReportBlock, SenderReport, build_compound, parse_compound
from voxline.transports.rtp.session import RtpParams, RtpSession

SEEDS = [d.payload for d in rtp_payloads("g711a_first20.pcap")] + [
    d.payload for d in rtp_payloads("dtmf_2833_1.pcap")]
SOURCE = ("127.0.0.1", 40000)


def _rtcp_seeds() -> list[bytes]:
    block = ReportBlock(ssrc=1, fraction_lost=3, packets_lost=-2, highest_sequence=70000, jitter=12, lsr=5, dlsr=6)
    return [build_compound([SenderReport(7, 123456789, 160, 10, 1600, (block,))]),
            build_compound([ReceiverReport(7, (block, block))])]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "cut", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "cut" and data:
            del data[at:at + draw(st.integers(1, 8))]
        else:
            del data[at:]
    return bytes(data)


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mutated(SEEDS))
def test_rtp_parse_raises_only_rtp_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    assert RtpPacket.parse(bytes(packet)) == packet  # what parsed serialises back to itself


@FUZZ
@given(mutated(_rtcp_seeds()))
def test_rtcp_parse_raises_only_rtcp_error(data: bytes) -> None:
    try:
        parse_compound(data)
    except RtpError:  # RtcpError is one
        return


@FUZZ
@given(st.lists(mutated(SEEDS + _rtcp_seeds()), min_size=1, max_size=30))
def test_a_stream_takes_any_datagrams_without_raising(datagrams: list[bytes]) -> None:
    session = RtpSession(RtpParams(PCMA, 8, 101, 20, SOURCE), 0.0)
    now = 0.0
    for d in datagrams:
        now += 0.02
        session.receive(d, SOURCE, now)
        session.pop(now)
        session.expire_dtmf(now)
    stats = session.stats()
    taken = stats["received"] + stats["malformed"] + stats["unknown_pt"] + stats["rtcp_in"]
    assert taken <= len(datagrams)  # each datagram counted once at most (duplicates and late ones are not "received")
