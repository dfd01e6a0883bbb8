import random

import numpy as np
import pytest

from tests.transports.rtp.jitter_sim import FRAME, SAMPLES, Sent, run, stream
from voxline.media.frames import Payload
from voxline.transports.rtp.jitter import JitterBuffer, JitterConfig, Lost, conceal_pcm


# Depth fixed at 40 ms: these tests are about order and accounting, not adapting.
FIXED = JitterConfig(min_depth=0.04, initial_depth=0.04)


def _gaps_in_place(out: list[Payload | Lost]) -> None:
    """Between two played frames, exactly as many Lost slots as missing frames."""
    last = None
    lost_run = 0
    for item in out:
        if isinstance(item, Lost):
            lost_run += 1
            continue
        seq = int.from_bytes(item.data, "big")
        if last is not None:
            assert seq - last - 1 == lost_run, (last, seq, lost_run)
        last, lost_run = seq, 0


def test_clean_stream_plays_every_frame_in_order_after_the_initial_depth() -> None:
    buffer = JitterBuffer(JitterConfig(stable=60.0))
    result = run(buffer, stream(100))
    assert result.played == list(range(100))
    first = next(o for o in result.out if isinstance(o, Payload))
    assert first.codec == "PCMU" and first.rate == 8000 and first.pts == 0
    assert buffer.stats.played == 100 and buffer.stats.lost == 0
    assert buffer.depth == pytest.approx(0.06) == buffer.latency
    pts = [o.pts for o in result.out]
    assert pts == [k * SAMPLES for k in range(len(pts))]


@pytest.mark.parametrize("loss", [0.05, 0.20])
def test_losses_are_reported_in_place_and_counted(loss: float) -> None:
    rng = random.Random(7)
    sent = stream(500)
    kept = [p for p in sent[:-1] if p.seq == 0 or rng.random() >= loss] + [sent[-1]]
    buffer = JitterBuffer(FIXED)
    result = run(buffer, kept)
    assert result.played == [p.seq for p in kept]
    _gaps_in_place(result.out)
    assert buffer.stats.lost == 500 - len(kept)
    assert sum(isinstance(o, Lost) for o in result.out) >= buffer.stats.lost
    assert buffer.stats.late == 0 and buffer.stats.received == len(kept)


def test_reordered_and_duplicated_packets() -> None:
    sent = stream(100)
    for k in range(10, 90, 10):  # swap pairs: the later one arrives first
        sent[k].arrival, sent[k + 1].arrival = sent[k + 1].arrival, sent[k].arrival - 0.001
    dups = [Sent(p.seq, p.ts, p.arrival + 0.005) for p in sent[20:30]]
    buffer = JitterBuffer(FIXED)
    result = run(buffer, sent + dups)
    assert result.played == list(range(100))
    assert buffer.stats.reordered == 8
    assert buffer.stats.duplicates == 10
    assert buffer.stats.lost == 0 and buffer.stats.late == 0


def test_60ms_jitter_adapts_and_keeps_order() -> None:
    rng = random.Random(3)
    sent = stream(1000)
    for p in sent[1:]:
        p.arrival += rng.uniform(0.0, 0.060)
    lost = {p.seq for p in sent[1:-1] if rng.random() < 0.05}
    kept = [p for p in sent if p.seq not in lost]
    buffer = JitterBuffer(JitterConfig(initial_depth=0.02))
    result = run(buffer, kept)
    played = result.played
    assert played == sorted(played) and len(set(played)) == len(played)
    s = buffer.stats
    assert s.played + s.late + s.discarded + s.overflow + buffer.held == s.received
    assert s.lost == len(lost)
    assert 0.05 <= buffer.depth <= 0.2
    assert s.late < 0.05 * len(kept)  # it grew fast: lateness stops early
    # Between the first and last frame, a Lost slot only for a lost or late packet.
    last = max(i for i, o in enumerate(result.out) if isinstance(o, Payload))
    assert sum(isinstance(o, Lost) for o in result.out[:last]) == len(lost) + s.late


def test_depth_grows_fast_on_a_late_packet_and_shrinks_slowly_when_stable() -> None:
    sent = stream(600)
    sent[20].arrival += 0.15  # 150 ms late
    buffer = JitterBuffer(JitterConfig(initial_depth=0.04, stable=2.0))
    depths = []
    for k in range(0, 600, 50):
        run(buffer, [p for p in sent if k <= p.seq < k + 50], until=(k + 50) * FRAME)
        depths.append(buffer.depth)
    assert buffer.stats.late == 1
    assert max(depths) >= 0.04 + 0.1
    assert depths[-1] < max(depths)  # shrinking after 2 s without lateness
    assert buffer.stats.discarded >= 1
    assert depths[-1] >= buffer.config.min_depth
    # Every change is logged with when it happened: what was declared when is known afterwards.
    log = list(buffer.stats.depths)
    assert log[0][1] == 0.04 and log[-1][1] == buffer.depth
    assert [t for t, _ in log] == sorted(t for t, _ in log)
    assert any(d >= 0.14 for _, d in log) and len({d for _, d in log}) >= 3
    assert buffer.next_due() is not None and JitterBuffer().next_due() is None


def test_sequence_and_timestamp_wrap() -> None:
    buffer = JitterBuffer(FIXED)
    result = run(buffer, stream(60, first_seq=65500, first_ts=0xFFFFFFFF - 1000))
    assert result.played == [(65500 + k) & 0xFFFF for k in range(60)]
    assert buffer.stats.lost == 0 and buffer.stats.late == 0


def test_talk_spurt_after_silence_re_anchors_on_the_marker() -> None:
    first = stream(50)
    # 1 s of silence (DTX): the sequence continues, the timestamp moves on.
    second = stream(50, first_seq=50, first_ts=50 * SAMPLES + 8000, start=50 * FRAME + 1.0)
    buffer = JitterBuffer(FIXED)
    result = run(buffer, first + second)
    assert result.played == list(range(100))
    assert buffer.stats.lost == 0 and buffer.stats.late == 0


def test_a_marker_behind_the_play_point_re_anchors_instead_of_being_late() -> None:
    first = stream(50)
    second = stream(50, first_seq=50, first_ts=50 * SAMPLES - 4000, start=50 * FRAME + 0.2)
    buffer = JitterBuffer(FIXED)
    result = run(buffer, first + second)
    assert result.played == list(range(100)) and buffer.stats.late == 0


def test_ssrc_change_and_timestamp_jump_reset() -> None:
    one = stream(50)
    two = [Sent(p.seq, p.ts, p.arrival, p.marker, ssrc=2) for p in stream(50, first_seq=9000, first_ts=123456, start=1.2)]
    buffer = JitterBuffer(FIXED)
    result = run(buffer, one + two)
    assert buffer.stats.resets == 1
    assert result.played[-50:] == list(range(9000, 9050))
    jump = stream(50)
    after = stream(50, first_seq=50, first_ts=50 * SAMPLES + 8000 * 3600, start=1.0)
    for p in after:
        p.marker = False
    buffer = JitterBuffer(FIXED)
    result = run(buffer, jump + after)
    assert buffer.stats.jumps == 1
    assert result.played[-40:] == list(range(60, 100))


def test_never_holds_more_than_its_capacity() -> None:
    buffer = JitterBuffer(JitterConfig(max_depth=0.1))
    for p in stream(50):
        buffer.push(p.seq, p.ts, b"x", p.arrival)
        assert buffer.held <= buffer.config.capacity == 6
    assert buffer.stats.overflow == 50 - 6


def test_nothing_before_the_first_packet() -> None:
    assert JitterBuffer().pop(100.0) is None


def test_conceal_pcm_repeats_then_fades_to_silence() -> None:
    last = np.full(160, 1000, dtype=np.int16)
    assert conceal_pcm(last, 1)[0] == 750
    assert conceal_pcm(last, 2)[0] == 375
    assert not conceal_pcm(last, 8).any()
    assert conceal_pcm(last, 1).dtype == np.int16
    with pytest.raises(ValueError):
        conceal_pcm(last, 0)
