import pytest

from tests.transports.rtp.pcap import rtp_payloads
from voxline.transports.rtp.dtmf import DtmfReceiver, TelephoneEvent, digit_event, tone_packets
from voxline.transports.rtp.errors import DtmfError, RtpError
from voxline.transports.rtp.packet import RtpPacket

CAPTURES = {str(d): f"dtmf_2833_{d}.pcap" for d in range(10)} | {
    "*": "dtmf_2833_star.pcap",
    "#": "dtmf_2833_pound.pcap",
}


def _packets(name: str) -> list[tuple[RtpPacket, float]]:
    return [(RtpPacket.parse(d.payload), d.time) for d in rtp_payloads(name)]


@pytest.mark.parametrize(("digit", "name"), sorted(CAPTURES.items()))
def test_each_sipp_capture_yields_exactly_its_digit(digit: str, name: str) -> None:
    receiver = DtmfReceiver()
    packets = _packets(name)
    # sipp sends the end packet three times with one sequence number.
    ends = [p for p, _ in packets if TelephoneEvent.parse(p.payload).end]
    assert len(ends) == 3 and len({p.sequence_number for p in ends}) == 1
    digits = [d for p, t in packets for d in receiver.receive(p, t)]
    assert [d.digit for d in digits] == [digit]
    assert digits[0].ended and digits[0].duration == 0x08C0
    assert receiver.repeats == 2
    assert receiver.expire(packets[-1][1] + 10) == []


def test_captured_payload_fields() -> None:
    first, _ = _packets("dtmf_2833_1.pcap")[0]
    event = TelephoneEvent.parse(first.payload)
    assert (first.payload_type, first.marker) == (101, True)
    assert event == TelephoneEvent(1, end=False, volume=10, duration=0)
    assert bytes(event) == first.payload


def test_end_packet_alone_yields_the_digit_and_missing_marker_is_tolerated() -> None:
    receiver = DtmfReceiver()
    packets = _packets("dtmf_2833_5.pcap")
    only_end = [(p, t) for p, t in packets if TelephoneEvent.parse(p.payload).end]
    digits = [d for p, t in only_end for d in receiver.receive(p, t)]
    assert [d.digit for d in digits] == ["5"]


def test_lost_end_packets_yield_the_digit_on_the_next_event_or_on_expiry() -> None:
    receiver = DtmfReceiver(timeout=0.5)
    starts = [(p, t) for p, t in _packets("dtmf_2833_7.pcap") if not TelephoneEvent.parse(p.payload).end]
    assert [d for p, t in starts for d in receiver.receive(p, t)] == []
    last = starts[-1][1]
    assert receiver.expire(last + 0.4) == []
    expired = receiver.expire(last + 0.5)
    assert [(d.digit, d.ended) for d in expired] == [("7", False)]
    # A second event while one is open closes the first.
    receiver = DtmfReceiver()
    receiver.receive(starts[0][0], 0.0)
    nxt = RtpPacket(101, 2, starts[0][0].timestamp + 1600, starts[0][0].ssrc, bytes(TelephoneEvent(11, duration=160)))
    assert [d.digit for d in receiver.receive(nxt, 0.2)] == ["7"]


def test_sender_follows_rfc_4733_and_round_trips_through_the_receiver() -> None:
    sent = tone_packets("#", sequence_number=65534, timestamp=1000, ssrc=42, duration=800, interval=160)
    packets = [p for _, p in sent]
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert {p.timestamp for p in packets} == {1000}
    assert [p.sequence_number for p in packets] == [65534, 65535, 0, 1, 2, 3, 4]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert [offset for offset, _ in sent] == [160 * k for k in range(7)]
    receiver = DtmfReceiver()
    digits = [d for k, p in enumerate(packets) for d in receiver.receive(p, k * 0.02)]
    assert [(d.digit, d.duration) for d in digits] == [("#", 800)]
    frame = digits[0].frame()
    assert frame.digit == "#" and frame.duration == pytest.approx(0.1)


def test_all_sixteen_events() -> None:
    for k, digit in enumerate("0123456789*#ABCD"):
        assert digit_event(digit) == k
        assert TelephoneEvent(k).digit == digit
    assert TelephoneEvent(16).digit is None
    with pytest.raises(DtmfError, match="DTMF digit 'E'"):
        digit_event("E")


def test_bad_payloads_are_counted_not_raised() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(RtpPacket(101, 1, 1, 1, b"\x01\x8a"), 0.0) == []
    assert receiver.receive(RtpPacket(101, 2, 2, 1, bytes(TelephoneEvent(200, True))), 0.0) == []
    assert (receiver.bad_payloads, receiver.unknown_events) == (1, 1)
    with pytest.raises(RtpError, match="shorter than 4"):
        TelephoneEvent.parse(b"\x01")
