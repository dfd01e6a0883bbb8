import random

import pytest

from voxline.transports.rtp.errors import RtcpError
from voxline.transports.rtp.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpUnknown,
    SdesChunk,
    SenderReport,
    SourceDescription,
    build_compound,
    ntp_from_unix,
    ntp_middle,
    parse_compound,
    round_trip_time,
)
from voxline.transports.rtp.schedule import T_MIN, ReportScheduler

BLOCK = ReportBlock(0xAABBCCDD, fraction_lost=64, packets_lost=-3, highest_sequence=70000, jitter=12, lsr=0x12345678, dlsr=65536)


def test_compound_sr_sdes_bye_round_trip_every_field() -> None:
    packets = [
        SenderReport(1, ntp_from_unix(1_700_000_000.5), 160, 10, 1600, (BLOCK,)),
        SourceDescription((SdesChunk(1, ((1, b"voxline@host"),)),)),
        Bye((1,), "call ended"),
    ]
    data = build_compound(packets)
    assert len(data) % 4 == 0
    assert data[:2] == b"\x81\xc8"  # V=2, RC=1, SR
    parsed = parse_compound(data)
    assert parsed == packets
    assert build_compound(parsed) == data
    assert parsed[1].chunks[0].cname == "voxline@host"  # type: ignore[union-attr]


def test_report_block_signed_cumulative_loss() -> None:
    rr = ReceiverReport(7, (BLOCK,))
    data = build_compound([rr])
    assert data[12:16] == b"\x40\xff\xff\xfd"  # fraction 64, lost -3 in 24 bits
    (back,) = parse_compound(data)
    assert back == rr
    with pytest.raises(RtcpError, match="cumulative lost 8388608 is not signed 24-bit"):
        ReportBlock(1, packets_lost=0x800000)


def test_unknown_types_and_padding_survive() -> None:
    app = RtcpUnknown(204, 0, b"name\x00\x00\x00\x01")
    rr = build_compound([ReceiverReport(5), app])
    assert parse_compound(rr)[1] == app
    padded = bytearray(build_compound([ReceiverReport(5)]) + b"\x00\x00\x00\x04")
    padded[0] |= 0x20
    padded[3] += 1
    assert parse_compound(bytes(padded)) == [ReceiverReport(5)]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\xc9", "RTCP packet is shorter than its 4-byte header"),
        (b"\x40\xc9\x00\x01" + bytes(4), "RTCP version 1 is not 2"),
        (b"\x80\xc9\x00\x05" + bytes(4), "RTCP length 5 exceeds the packet"),
        (b"\x81\xc9\x00\x01" + bytes(4), "RTCP RR report count 1 exceeds its length"),
        (b"\x80\xc8\x00\x01" + bytes(4), "RTCP SR is shorter than its sender info"),
        (b"\x81\xca\x00\x01" + bytes(4), "RTCP SDES chunk has no terminating null item"),
        (b"\x81\xca\x00\x02" + bytes(4) + b"\x01\x09ab", "RTCP SDES item length exceeds the packet"),
        (b"\x82\xcb\x00\x01" + bytes(4), "RTCP BYE source count 2 exceeds its length"),
        (b"\xa0\xc9\x00\x01" + bytes(3) + b"\x09", "RTCP padding length 9 exceeds payload"),
        (b"\xa0\xc9\x00\x01" + bytes(4) + b"\x80\xc9\x00\x01" + bytes(4), "RTCP padding bit set on a packet that is not last"),
    ],
)
def test_each_malformation_names_its_field(data: bytes, message: str) -> None:
    with pytest.raises(RtcpError) as caught:
        parse_compound(data)
    assert str(caught.value) == message


def test_every_truncation_raises_rtcp_error() -> None:
    data = build_compound([SenderReport(1, 2, 3, 4, 5, (BLOCK,)), SourceDescription((SdesChunk(1, ((1, b"x"),)),))])
    for cut in range(len(data)):
        if cut % 4 == 0 and cut in (52, len(data)):
            continue
        with pytest.raises(RtcpError):
            parse_compound(data[:cut])


def test_round_trip_time_from_lsr_and_dlsr() -> None:
    sent = ntp_from_unix(1000.0)
    block = ReportBlock(1, lsr=ntp_middle(sent), dlsr=int(0.25 * 65536))
    rtt = round_trip_time(block, ntp_from_unix(1000.0 + 0.25 + 0.080))
    assert rtt == pytest.approx(0.080, abs=1e-4)
    assert round_trip_time(ReportBlock(1), ntp_from_unix(5.0)) is None
    assert round_trip_time(ReportBlock(1, lsr=ntp_middle(sent), dlsr=65536), ntp_from_unix(1000.5)) == 0.0


def test_ntp_conversion() -> None:
    assert ntp_from_unix(0.0) == 2_208_988_800 << 32
    assert ntp_from_unix(0.5) & 0xFFFFFFFF == 1 << 31


class _Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_scheduler_interval_per_rfc_3550_simplified() -> None:
    compensation = 2.718281828459045 - 1.5
    first = ReportScheduler(100.0, rng=_Fixed(0.5))
    assert first.next_report_at() == pytest.approx(100.0 + T_MIN / 2 / compensation)
    assert not first.due(100.0) and first.due(first.next_report_at())
    first.sent(110.0, 100)
    assert first.next_report_at() == pytest.approx(110.0 + T_MIN / compensation)
    low = ReportScheduler(0.0, rng=_Fixed(0.0))
    high = ReportScheduler(0.0, rng=_Fixed(0.999999))
    assert low.next_report_at() == pytest.approx(T_MIN / 2 * 0.5 / compensation)
    assert high.next_report_at() == pytest.approx(T_MIN / 2 * 1.5 / compensation, rel=1e-5)
    # A thin session (1 kb/s) is bandwidth-bound, above T_MIN.
    thin = ReportScheduler(0.0, session_bandwidth=1000.0, rng=_Fixed(0.5))
    assert thin.deterministic_interval() == pytest.approx((128 + 28) * 2 / (1000 * 0.05 / 8))
