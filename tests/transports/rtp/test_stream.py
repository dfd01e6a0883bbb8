from voxline.transports.rtp.packet import RtpPacket
from voxline.transports.rtp.rtcp import SenderReport, ntp_from_unix
from voxline.transports.rtp.stream import ReceiveStream


def _p(seq: int, ts: int = 0, ssrc: int = 1) -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, b"x" * 160)


def _feed(stream: ReceiveStream, seqs: list[int], ssrc: int = 1) -> list[int]:
    out = []
    for seq in seqs:
        for r in stream.receive(_p(seq, seq * 160, ssrc), seq * 0.02):
            out.append(r.extended_seq)
    return out


def test_probation_holds_then_releases_and_sequence_wraps() -> None:
    stream = ReceiveStream(8000)
    assert stream.receive(_p(65534, 0), 0.0) == []
    released = stream.receive(_p(65535, 160), 0.02)
    assert [r.extended_seq for r in released] == [65534, 65535]
    assert [r.extended_seq for r in stream.receive(_p(0, 320), 0.04)] == [65536]
    assert stream.cycles == 65536 and stream.extended_max == 65536
    assert stream.lost == 0 and stream.received == 3


def test_loss_and_fraction_lost_per_interval() -> None:
    stream = ReceiveStream(8000)
    _feed(stream, [s for s in range(0, 100) if s % 10 != 5])  # 10 of 100 lost
    block = stream.report_block(2.0)
    assert block.packets_lost == 10
    assert block.fraction_lost == (10 << 8) // 100
    assert block.highest_sequence == 99
    _feed(stream, list(range(100, 200)))
    block = stream.report_block(4.0)
    assert (block.packets_lost, block.fraction_lost) == (10, 0)


def test_duplicates_make_cumulative_loss_negative() -> None:
    stream = ReceiveStream(8000)
    _feed(stream, [0, 1, 2, 2, 2])
    assert stream.lost == -2


def test_a_big_jump_is_accepted_only_when_confirmed() -> None:
    stream = ReceiveStream(8000)
    _feed(stream, [0, 1, 2])
    assert _feed(stream, [20000]) == []
    assert stream.stats.bad_jumps == 1
    assert _feed(stream, [20001]) == [20001]
    assert stream.stats.restarts == 1 and stream.base_seq == 20001


def test_ssrc_change_resets_and_counts() -> None:
    stream = ReceiveStream(8000)
    _feed(stream, [10, 11, 12])
    assert _feed(stream, [500, 501], ssrc=2) == [500, 501]
    assert stream.stats.ssrc_changes == 1 and stream.ssrc == 2 and stream.lost == 0


def test_jitter_per_a8_and_timestamp_jumps() -> None:
    stream = ReceiveStream(8000, probation=1)
    # Every other packet 10 ms late: D alternates +-80 samples.
    for k in range(200):
        stream.receive(_p(k, k * 160), k * 0.02 + (0.01 if k % 2 else 0.0))
    assert abs(stream.jitter - 0.01) < 0.001
    out = stream.receive(_p(200, 200 * 160 + 8000 * 60), 200 * 0.02)
    assert out[0].timestamp_jump and stream.stats.timestamp_jumps == 1


def test_lsr_and_dlsr_from_the_last_sender_report() -> None:
    stream = ReceiveStream(8000, probation=1)
    _feed(stream, [1])
    ntp = ntp_from_unix(1234.5)
    stream.on_sender_report(SenderReport(1, ntp, 0, 0, 0), arrival=10.0)
    block = stream.report_block(10.5)
    assert block.lsr == (ntp >> 16) & 0xFFFFFFFF
    assert block.dlsr == 32768
