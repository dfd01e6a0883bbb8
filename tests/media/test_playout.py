import asyncio

import numpy as np
import pytest

from voxline.media.clock import FakeClock
from voxline.media.feedback import Played
from voxline.media.frames import Audio, Frame, Interrupt, Mark
from voxline.media.pipeline import Pipeline
from voxline.media.playout import Playout

from .helpers import Echo

RATE = 8000


def chunk(ms: int, turn: int = 1, value: int = 100) -> Audio:
    return Audio(np.full(RATE * ms // 1000, value, dtype=np.int16), RATE, 0, 0.0, turn)


async def test_frames_go_out_on_an_absolute_schedule_for_an_hour() -> None:
    clock = FakeClock(1000.0, auto_advance=True)
    sent: list[float] = []
    p = Pipeline([Playout(RATE, capacity=4)], lambda f: sent.append(clock.now()), clock=clock)
    await p.start()
    frames = 3600 * 50
    await p.send(chunk(20 * frames))  # one hour of audio in one chunk
    while len(sent) < frames:
        await asyncio.sleep(0)
    t0 = sent[0]
    k = np.arange(frames)
    drift = np.abs(np.array(sent) - (t0 + k * 0.02))
    assert drift.max() < 1e-6
    assert sent[-1] - t0 == pytest.approx(3599.98, abs=1e-6)
    await p.stop()


async def test_short_chunks_are_joined_not_padded_when_more_is_queued() -> None:
    clock = FakeClock()
    out: list[Frame] = []
    play = Playout(RATE)
    p = Pipeline([play], out.append, clock=clock)
    await p.start()
    for _ in range(6):
        await p.send(chunk(10))  # 60 ms as six 10 ms pieces
    for _ in range(10):
        await clock.advance(0.02)
    frames = [f for f in out if type(f) is Audio]
    assert [len(f.pcm) for f in frames] == [160, 160, 160]
    assert play.played_samples == 480
    await p.stop()


async def test_tail_is_padded_to_a_frame_when_nothing_follows() -> None:
    clock = FakeClock()
    out: list[Frame] = []
    play = Playout(RATE)
    p = Pipeline([play], out.append, clock=clock)
    await p.start()
    await p.send(chunk(30))
    for _ in range(4):
        await clock.advance(0.02)
    frames = [f for f in out if type(f) is Audio]
    assert [len(f.pcm) for f in frames] == [160, 160]
    assert np.count_nonzero(frames[1].pcm) == 80
    assert play.played_samples == 240  # the padding is not counted as heard
    await p.stop()


async def test_interrupt_stops_playout_within_one_frame_and_reports_position() -> None:
    clock = FakeClock()
    sent: list[tuple[float, Frame]] = []
    play = Playout(RATE, capacity=200, seconds=20.0)  # the whole reply queued at playout
    tts = Echo("tts", capacity=200)
    p = Pipeline([tts, play], lambda f: sent.append((clock.now(), f)), clock=clock)
    await p.start()
    for _ in range(10):
        await p.send(chunk(200, turn=4))  # 2 s of reply
    await clock.settle()
    await clock.advance(0.505)
    t_int = clock.now()
    p.interrupt("barge-in", after="tts")
    await clock.advance(1.0)
    audio_sent = [(t, f) for t, f in sent if type(f) is Audio]
    after = [t for t, _ in audio_sent if t > t_int]
    assert after == []  # not one frame went out after the interruption
    assert abs(play.heard(4) - 0.52) <= 0.02  # 26 frames: 0.0, 0.02, ... 0.50
    assert type(sent[-1][1]) is Interrupt
    await p.send(chunk(40, turn=5))
    await clock.advance(0.1)
    assert play.heard(5) == pytest.approx(0.04)
    await p.stop()


async def test_underrun_reanchors_instead_of_bursting() -> None:
    clock = FakeClock()
    sent: list[float] = []
    p = Pipeline([Playout(RATE)], lambda f: sent.append(clock.now()) if type(f) is Audio else None, clock=clock)
    await p.start()
    await p.send(chunk(40))
    await clock.advance(1.0)  # runs dry for most of a second
    await p.send(chunk(40))
    await clock.advance(0.1)
    assert sent[0] == 0.0 and sent[1] == pytest.approx(0.02)
    assert sent[2] == pytest.approx(1.0) and sent[3] == pytest.approx(1.02)
    await p.stop()


async def test_marks_report_when_played_and_first_played_is_marked() -> None:
    clock = FakeClock()
    seen: list[tuple[str, float, bool]] = []

    class Hears:  # a stage upstream that listens, as the agent does
        name = "hears"
        latency = 0.0
        listens = (Played,)

        def on_feedback(self, event: Played) -> None:
            seen.append((event.mark.name, event.at, event.confirmed))

        def process(self, frame: Frame) -> list[Frame]:
            return [frame]

    p = Pipeline([Hears(), Playout(RATE)], clock=clock)
    await p.start()
    await p.send(chunk(60, turn=2))
    await p.send(Mark("end-of-reply", turn=2))
    for _ in range(5):
        await clock.advance(0.02)
    assert seen == [("end-of-reply", pytest.approx(0.04), False)]
    assert p.latency.turns[2].marks["first_played"] == 0.0
    await p.stop()


def test_wrong_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        Playout(0)


def arrived(ms: int, at: float, turn: int = 1) -> Audio:
    return Audio(np.full(RATE * ms // 1000, 100, dtype=np.int16), RATE, 0, at, turn)


async def test_a_stall_with_audio_waiting_is_caught_up_once_not_kept() -> None:
    # An echo never runs dry: after the loop stalls 100 ms, the frames that waited
    # go out at once and the schedule is what it was; latency does not grow.
    clock = FakeClock()
    sent: list[float] = []
    playout = Playout(RATE)
    p = Pipeline([playout], lambda f: sent.append(clock.now()) if type(f) is Audio else None, clock=clock)
    await p.start()
    for k in range(5):
        await p.send(arrived(20, clock.now()))
        await clock.advance(0.02)
    stalled_at = clock.now()
    clock.stall(0.1)  # nothing runs for 100 ms; five more frames came in meanwhile, on time
    for i in range(5):
        await p.send(arrived(20, stalled_at + 0.02 * i + 0.005))
    for _ in range(10):
        await p.send(arrived(20, clock.now()))
        await clock.advance(0.02)
    due = [sent[0] + 0.02 * k for k in range(len(sent))]
    late = [s - d for s, d in zip(sent, due)]
    assert max(late) == pytest.approx(0.1, abs=1e-6)  # the stall, once
    assert late[-1] == pytest.approx(0.0, abs=1e-6)  # and then back on the schedule
    assert playout.caught_up > 0
    await p.stop()


async def test_a_stall_longer_than_catch_up_reanchors() -> None:
    clock = FakeClock()
    sent: list[float] = []
    p = Pipeline([Playout(RATE)], lambda f: sent.append(clock.now()) if type(f) is Audio else None, clock=clock)
    await p.start()
    await p.send(arrived(20, clock.now()))
    await clock.advance(0.02)
    await p.send(arrived(20, clock.now()))
    clock.stall(0.5)  # past CATCH_UP: not won back in a burst
    for _ in range(3):
        await p.send(arrived(20, clock.now() - 0.4))
    await clock.advance(0.1)
    gaps = np.diff(sent)
    assert gaps[-1] == pytest.approx(0.02) and gaps[-2] == pytest.approx(0.02)
    await p.stop()


async def test_a_relayed_stream_that_comes_earlier_slips_the_schedule_back_to_it() -> None:
    # A relay (an echo over RTP) whose jitter buffer shrank by a frame: its frames now
    # come 20 ms before their slots. They must not wait those 20 ms for the rest of the call.
    clock = FakeClock()
    sent: list[float] = []
    came: list[float] = []
    playout = Playout(RATE)
    p = Pipeline([playout], lambda f: sent.append(clock.now()) if type(f) is Audio else None, clock=clock)
    await p.start()
    t = 0.0
    for k in range(60):
        if k == 20:
            t -= 0.02  # from here on every frame is a frame early
        await clock.advance(max(0.0, t - clock.now()))
        came.append(clock.now())
        await p.send(arrived(20, clock.now()))
        t += 0.02
    await clock.advance(0.1)
    waited = np.array(sent[: len(came)]) - np.array(came)
    assert waited[:20].max() == pytest.approx(0.0, abs=1e-9)
    assert waited[20] == pytest.approx(0.02, abs=1e-6)  # the first early frame waits for its slot
    assert waited[-20:].max() == pytest.approx(0.0, abs=1e-9)  # the lag is gone
    gaps = np.diff(sent)
    assert gaps.min() >= 0.02 * 0.9 - 1e-9  # never faster than SLIP allows
    assert playout.slipped == pytest.approx(0.02, abs=1e-6)
    await p.stop()


async def test_waiting_audio_is_paced_exactly_and_never_slips() -> None:
    clock = FakeClock()
    sent: list[float] = []
    playout = Playout(RATE)
    p = Pipeline([playout], lambda f: sent.append(clock.now()) if type(f) is Audio else None, clock=clock)
    await p.start()
    for _ in range(5):  # a TTS reply: sentences far ahead of their slots
        await p.send(chunk(200))
    await clock.advance(1.2)
    assert len(sent) == 50
    assert np.diff(sent) == pytest.approx(np.full(49, 0.02))
    assert playout.slipped == 0.0
    await p.stop()
