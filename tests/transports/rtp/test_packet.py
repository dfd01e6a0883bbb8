import pytest

from tests.transports.rtp.pcap import rtp_payloads
from voxline.transports.rtp.errors import RtpError
from voxline.transports.rtp.packet import (
    HeaderExtension,
    RtpPacket,
    is_rtcp,
    make_padding,
    seq_delta,
    seq_newer,
    ts_delta,
)


def test_captured_pcma_packets_parse_and_round_trip() -> None:
    datagrams = rtp_payloads("g711a_first20.pcap")
    assert len(datagrams) == 20
    packets = [RtpPacket.parse(d.payload) for d in datagrams]
    first = packets[0]
    assert first.payload_type == 8  # PCMA
    assert first.marker is True
    assert first.sequence_number == 0xE6FD
    assert first.timestamp == 0xF0
    assert first.ssrc == 0xDEE0EE8F
    assert first.csrc == () and first.extension is None and first.padding == b""
    assert len(first.payload) == 240  # 30 ms of 8 kHz A-law
    for d, p in zip(datagrams, packets):
        assert bytes(p) == d.payload
    for a, b in zip(packets, packets[1:]):
        assert seq_delta(b.sequence_number, a.sequence_number) == 1
        assert b.timestamp - a.timestamp == 240
        assert not b.marker


def test_every_field_round_trips() -> None:
    packet = RtpPacket(
        payload_type=111,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=0x12345678,
        payload=b"\x01\x02\x03",
        marker=True,
        csrc=(1, 2, 0xFFFFFFFF),
        extension=HeaderExtension(0xBEDE, b"\x10\xff\x00\x00"),
        padding=make_padding(5),
    )
    data = bytes(packet)
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert data[1] == 0x80 | 111
    assert len(data) == 12 + 12 + 4 + 4 + 3 + 5
    assert data[-1] == 5
    assert RtpPacket.parse(data) == packet
    assert bytes(RtpPacket.parse(data)) == data


def test_padding_octets_are_kept_byte_exact() -> None:
    raw = bytes(RtpPacket(0, 1, 2, 3, b"ab")) + b"\xaa\xbb\x03"
    raw = bytes([raw[0] | 0x20]) + raw[1:]
    packet = RtpPacket.parse(raw)
    assert packet.payload == b"ab"
    assert packet.padding == b"\xaa\xbb\x03"
    assert bytes(packet) == raw


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00" + bytes(9), "RTP packet is shorter than its 12-byte header"),
        (b"\x40" + bytes(11), "RTP version 1 is not 2"),
        (b"\x82" + bytes(11) + bytes(4), "RTP CSRC count 2 exceeds the packet"),
        (b"\x90" + bytes(11) + b"\xbe", "RTP header extension is truncated"),
        (b"\x90" + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4), "RTP header extension length 2 exceeds the packet"),
        (b"\xa0" + bytes(11) + b"ab\x00", "RTP padding length 0 is invalid"),
        (b"\xa0" + bytes(11) + bytes(3) + b"\x11", "RTP padding length 17 exceeds payload"),
        (bytes(65_508), "RTP packet of 65508 bytes exceeds 65507"),
    ],
)
def test_each_malformation_names_its_field(data: bytes, message: str) -> None:
    with pytest.raises(RtpError) as caught:
        RtpPacket.parse(data)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


def test_every_truncation_of_a_full_packet_raises_rtp_error() -> None:
    packet = RtpPacket(
        96, 7, 8, 9, b"xyz", csrc=(5,), extension=HeaderExtension(1, bytes(8)), padding=make_padding(2)
    )
    data = bytes(packet)
    for cut in range(len(data)):
        try:
            parsed = RtpPacket.parse(data[:cut])
        except RtpError:
            continue
        # A cut that still parses must be a shorter, self-consistent packet.
        assert bytes(parsed) == data[:cut]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"payload_type": 128}, "RTP payload type 128 is not 0-127"),
        ({"sequence_number": 65536}, "RTP sequence number 65536 is not 16-bit"),
        ({"timestamp": -1}, "RTP timestamp -1 is not 32-bit"),
        ({"csrc": tuple(range(16))}, "RTP CSRC count 16 exceeds 15"),
        ({"padding": b"\x00\x03"}, "RTP padding of 2 bytes does not end with its own length"),
    ],
)
def test_building_a_bad_packet_is_refused(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"payload_type": 0, "sequence_number": 0, "timestamp": 0, "ssrc": 0}
    fields.update(kwargs)
    with pytest.raises(RtpError, match=message):
        RtpPacket(**fields)  # type: ignore[arg-type]


def test_header_extension_must_be_whole_words() -> None:
    with pytest.raises(RtpError, match="not whole 32-bit words"):
        HeaderExtension(1, b"abc")


def test_sequence_arithmetic_wraps() -> None:
    assert seq_delta(0, 65535) == 1
    assert seq_delta(65535, 0) == -1
    assert seq_delta(100, 100) == 0
    assert seq_delta(0x8000 + 5, 5) == -0x8000
    assert seq_newer(2, 65530)
    assert not seq_newer(65530, 2)
    assert ts_delta(10, 0xFFFFFFF0) == 26
    assert ts_delta(0xFFFFFFF0, 10) == -26


def test_rtcp_demultiplexing_by_packet_type() -> None:
    assert is_rtcp(b"\x80\xc8\x00\x06")  # SR
    assert is_rtcp(b"\x81\xc9\x00\x07")  # RR
    assert not is_rtcp(bytes(RtpPacket(0, 1, 2, 3)))
    assert not is_rtcp(bytes(RtpPacket(96, 1, 2, 3, marker=True)))  # 0xE0: 224
    assert not is_rtcp(b"\x80")
