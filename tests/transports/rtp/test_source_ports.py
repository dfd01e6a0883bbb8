import pytest

from voxline.transports.rtp.errors import PortsExhausted
from voxline.transports.rtp.ports import PortAllocator, PortPair
from voxline.transports.rtp.source import IdleDetector, SourceFilter

A, B, SDP = ("198.51.100.7", 4000), ("203.0.113.9", 5000), ("10.0.0.2", 4000)


def test_strict_filter_latches_the_first_source() -> None:
    f = SourceFilter()
    assert f.send_to() is None
    assert f.accept(A) and f.accept(A)
    assert not f.accept(B)
    assert (f.accepted, f.dropped, f.send_to()) == (2, 1, A)


def test_symmetric_rtp_replaces_the_sdp_address_behind_nat() -> None:
    f = SourceFilter(expected=SDP)
    assert f.send_to() == SDP
    assert f.accept(A)
    assert f.send_to() == A and not f.accept(SDP)
    f.told(B)
    assert f.send_to() == B and f.accept(A) and f.send_to() == A


def test_without_latching_only_the_sdp_address_is_accepted() -> None:
    f = SourceFilter(expected=SDP, latch=False)
    assert not f.accept(A) and f.accept(SDP) and f.send_to() == SDP
    loose = SourceFilter(expected=SDP, latch=False, strict=False)
    assert loose.accept(A) and loose.dropped == 0


def test_idle_detector() -> None:
    idle = IdleDetector(5.0, now=100.0)
    assert idle.idle_for(103.0) == 3.0 and not idle.expired(104.9)
    idle.seen(104.0)
    assert not idle.expired(108.9) and idle.expired(109.0) and idle.deadline() == 109.0
    with pytest.raises(ValueError):
        IdleDetector(0, now=0.0)


def test_even_pairs_exhaust_clearly_and_never_leak() -> None:
    ports = PortAllocator(10001, 10010)
    pairs = [ports.allocate() for _ in range(ports.size)]
    assert [p.rtp for p in pairs] == [10002, 10004, 10006, 10008]
    assert all(p.rtcp == p.rtp + 1 and p.rtp % 2 == 0 for p in pairs)
    with pytest.raises(PortsExhausted, match="all 4 RTP port pairs of 10001-10010 are in use"):
        ports.allocate()
    for _ in range(200):
        for p in pairs:
            ports.release(p)
        assert ports.available == 4 and ports.in_use == 0
        pairs = [ports.allocate() for _ in range(4)]
        assert len({p.rtp for p in pairs}) == 4
    with pytest.raises(ValueError, match="not allocated"):
        ports.release(PortPair(10003, 10004))


def test_rtcp_mux_uses_every_port_and_reuses_round_robin() -> None:
    ports = PortAllocator(20000, 20002, rtcp_mux=True)
    first = ports.allocate()
    assert first == PortPair(20000, 20000) and first.muxed
    ports.release(first)
    assert ports.allocate().rtp == 20001  # the released port is the last reused
    with pytest.raises(ValueError):
        PortAllocator(5000, 4000)
