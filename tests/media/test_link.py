import asyncio

import numpy as np
import pytest

from voxline.media.frames import (
    Audio,
    Dtmf,
    EndOfStream,
    Frame,
    Interrupt,
    Mark,
    Payload,
    SpeechEnded,
    SpeechStarted,
    Transcript,
)
from voxline.media.link import MIN_EVENTS, Link, LinkClosed, LinkFull, LinkTimeout, Overflow

from .helpers import audio


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        Link(0)


async def test_drop_oldest_counts_exactly() -> None:
    link = Link(3, Overflow.DROP_OLDEST, "l")
    for i in range(10):
        link.put_nowait(audio(i))
    assert link.dropped == 7
    got = [link.get_nowait().pts // 320 for _ in range(3)]  # type: ignore[union-attr]
    assert got == [7, 8, 9]
    assert link.get_nowait() is None
    s = link.stats()
    assert (s.put, s.got, s.dropped, s.high_water, s.depth) == (10, 3, 7, 3, 0)


async def test_block_raises_when_full_without_waiting() -> None:
    link = Link(2, Overflow.BLOCK)
    link.put_nowait(audio(0))
    link.put_nowait(audio(1))
    with pytest.raises(LinkFull, match="full"):
        link.put_nowait(audio(2))
    assert link.dropped == 0


async def test_block_put_waits_for_room_then_proceeds() -> None:
    link = Link(1, Overflow.BLOCK)
    link.put_nowait(audio(0))
    waiter = asyncio.create_task(link.put(audio(1)))
    await asyncio.sleep(0)
    assert not waiter.done()  # backpressure: the producer is held
    assert link.get_nowait().pts == 0  # type: ignore[union-attr]
    await asyncio.wait_for(waiter, 1)
    assert link.get_nowait().pts == 320  # type: ignore[union-attr]


async def test_block_put_has_a_deadline() -> None:
    link = Link(1, Overflow.BLOCK, "tts")
    link.put_nowait(audio(0))
    with pytest.raises(LinkTimeout, match="tts stayed full"):
        await link.put(audio(1), timeout=0.01)
    assert len(link) == 1


async def test_interrupt_overtakes_data_and_coalesces() -> None:
    link = Link(4, Overflow.DROP_OLDEST)
    link.put_nowait(audio(0))
    link.put_nowait(audio(1))
    link.put_nowait(Interrupt())
    link.put_nowait(Interrupt())  # redundant while one is pending
    assert type(link.get_nowait()) is Interrupt
    assert link.get_nowait().pts == 0  # type: ignore[union-attr]
    assert link.get_nowait().pts == 320  # type: ignore[union-attr]
    assert link.get_nowait() is None


async def test_end_of_stream_waits_behind_data_and_is_never_dropped() -> None:
    link = Link(2, Overflow.DROP_OLDEST)
    link.put_nowait(audio(0))
    link.put_nowait(audio(1))
    link.put_nowait(EndOfStream())  # beyond capacity, yet kept
    assert link.dropped == 0
    with pytest.raises(LinkClosed, match="ended"):
        link.put_nowait(audio(2))
    assert [type(link.get_nowait()).__name__ for _ in range(3)] == ["Audio", "Audio", "EndOfStream"]


async def test_flush_drops_data_keeps_control_and_frees_producers() -> None:
    link = Link(1, Overflow.BLOCK)
    link.put_nowait(audio(0))
    link.put_nowait(Interrupt())
    waiter = asyncio.create_task(link.put(audio(1)))
    await asyncio.sleep(0)
    assert link.flush() == 1
    await asyncio.wait_for(waiter, 1)  # let go, not failed
    assert type(link.get_nowait()) is Interrupt
    # The frame that waited across the flush is from before it: flushed too, so
    # a reply's next sentence cannot slip in behind the interruption.
    assert link.get_nowait() is None
    assert link.flushed == 2
    link.put_nowait(audio(2))  # what comes after the flush goes in
    assert link.get_nowait().pts == 640  # type: ignore[union-attr]


@pytest.mark.parametrize("flush_first", [True, False])
async def test_a_producer_cancelled_as_a_flush_wakes_it_stays_cancelled(flush_first: bool) -> None:
    # An interruption cancels the reply and flushes the playout link in one step:
    # the reply, waiting for room there, must end, not go on to its next frame.
    link = Link(1, Overflow.BLOCK)
    link.put_nowait(audio(0))
    producer = asyncio.create_task(link.put(audio(1)))
    await asyncio.sleep(0)
    if flush_first:
        link.flush()
        producer.cancel()
    else:
        producer.cancel()
        link.flush()
    with pytest.raises(asyncio.CancelledError):
        await producer
    assert link.get_nowait() is None


async def test_a_producer_waiting_across_a_flush_of_a_seconds_bound_link_is_let_go() -> None:
    link = Link(50, Overflow.BLOCK, "playout", max_audio=1.0)
    link.put_nowait(Audio(np.zeros(8000, np.int16), 8000, 0))
    sentence = asyncio.create_task(link.put(Audio(np.zeros(24000, np.int16), 8000, 8000)))
    await asyncio.sleep(0)
    assert not sentence.done()
    link.flush()
    link.put_nowait(Interrupt())
    await asyncio.wait_for(sentence, 1)
    assert type(link.get_nowait()) is Interrupt and link.get_nowait() is None
    assert link.audio_seconds == 0 and link.flushed == 2


async def test_get_wakes_on_put_and_close() -> None:
    link = Link(2)
    getter = asyncio.create_task(link.get())
    await asyncio.sleep(0)
    link.put_nowait(audio(5))
    assert (await asyncio.wait_for(getter, 1)).pts == 5 * 320  # type: ignore[union-attr]
    getter = asyncio.create_task(link.get())
    await asyncio.sleep(0)
    link.close()
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(getter, 1)
    with pytest.raises(LinkClosed):
        link.put_nowait(audio(0))


# -- only audio is dropped; events are bounded apart ------------------------


def speech(i: int) -> SpeechStarted:
    return SpeechStarted(i, 16000)


def chunk(seconds: float, i: int = 0, rate: int = 16000) -> Audio:
    return Audio(np.full(round(seconds * rate), i, dtype=np.int16), rate, i)


def drain(link: Link) -> list[Frame]:
    out: list[Frame] = []
    while (frame := link.get_nowait()) is not None:
        out.append(frame)
    return out


async def test_drop_oldest_flooded_with_audio_keeps_every_event_in_order() -> None:
    link = Link(4, Overflow.DROP_OLDEST, "agent")
    events: list[Frame] = []
    for i in range(200):
        link.put_nowait(audio(i))
        if i % 10 == 8:
            ev: Frame = SpeechStarted(i, 16000) if i % 20 == 8 else SpeechEnded(i, 16000)
            events.append(ev)
            link.put_nowait(ev)
    out = drain(link)
    assert [f for f in out if type(f) is not Audio] == events  # every one, in order
    kept = [f for f in out if type(f) is Audio]
    assert [f.pts // 320 for f in kept] == [196, 197, 198, 199]  # the newest audio
    assert link.dropped == 196 and link.events_refused == 0
    assert out[-5:] == [*kept[:3], events[-1], kept[3]]  # audio and events keep their order
    s = link.stats()
    assert (s.put, s.got, s.dropped, s.depth) == (220, 24, 196, 0)


async def test_events_do_not_count_against_audio_nor_audio_against_events() -> None:
    link = Link(2, Overflow.BLOCK, max_events=3)
    for i in range(3):
        link.put_nowait(speech(i))
    link.put_nowait(audio(0))
    link.put_nowait(audio(1))  # two audio frames fit beside three events
    with pytest.raises(LinkFull, match="2 frames"):
        link.put_nowait(audio(2))
    assert link.events_refused == 0  # audio refused by a block link is the producer's to count
    with pytest.raises(LinkFull, match="full of events"):
        link.put_nowait(speech(3))
    assert link.events_refused == 1
    assert [type(f).__name__ for f in drain(link)] == ["SpeechStarted"] * 3 + ["Audio"] * 2


async def test_a_drop_oldest_link_full_of_events_refuses_the_next_one_and_counts_it() -> None:
    link = Link(1, Overflow.DROP_OLDEST, "agent", max_events=2)
    link.put_nowait(speech(0))
    link.put_nowait(Transcript("hello", True))
    with pytest.raises(LinkFull, match="agent is full of events"):
        link.put_nowait(Dtmf("5"))
    assert (link.events_refused, link.dropped) == (1, 0)  # refused, never dropped
    for i in range(5):
        link.put_nowait(audio(i))  # audio still flows, one frame deep
    assert link.dropped == 4 and link.stats().events_refused == 1
    assert [type(f).__name__ for f in drain(link)] == ["SpeechStarted", "Transcript", "Audio"]


async def test_the_events_bound_defaults_to_the_capacity_and_at_least_min_events() -> None:
    assert Link(4).max_events == MIN_EVENTS
    assert Link(500).max_events == 500
    link = Link(1, Overflow.DROP_OLDEST)
    for i in range(MIN_EVENTS):
        link.put_nowait(speech(i))
    with pytest.raises(LinkFull):
        link.put_nowait(speech(MIN_EVENTS))


async def test_payload_is_encoded_audio_and_dropped_like_audio() -> None:
    link = Link(2, Overflow.DROP_OLDEST)
    link.put_nowait(Payload(b"\xff" * 160, "PCMU", 8000, 0))
    link.put_nowait(Mark("m"))
    link.put_nowait(Payload(b"\xff" * 160, "PCMU", 8000, 160))
    link.put_nowait(Payload(b"\xff" * 160, "PCMU", 8000, 320))
    assert link.dropped == 1
    out = drain(link)
    assert [type(f).__name__ for f in out] == ["Mark", "Payload", "Payload"]
    assert [f.pts for f in out if type(f) is Payload] == [160, 320]


async def test_an_event_put_waits_for_room_and_times_out_counted() -> None:
    link = Link(1, Overflow.DROP_OLDEST, "agent", max_events=1)
    link.put_nowait(speech(0))
    waiter = asyncio.create_task(link.put(speech(1)))
    await asyncio.sleep(0)
    assert not waiter.done()
    assert link.get_nowait() == speech(0)
    await asyncio.wait_for(waiter, 1)
    assert link.get_nowait() == speech(1)
    link.put_nowait(speech(2))
    with pytest.raises(LinkTimeout, match="agent stayed full"):
        await link.put(speech(3), timeout=0.01)
    assert link.events_refused == 1


async def test_a_waiting_event_is_woken_by_an_event_taken_behind_audio_waiters() -> None:
    link = Link(1, Overflow.BLOCK, max_events=1)
    link.put_nowait(speech(0))
    link.put_nowait(audio(0))
    audio_put = asyncio.create_task(link.put(audio(1)))
    event_put = asyncio.create_task(link.put(speech(1)))
    await asyncio.sleep(0)
    assert link.get_nowait() == speech(0)  # room for an event, none for audio
    await asyncio.wait_for(event_put, 1)
    assert not audio_put.done()
    assert type(link.get_nowait()) is Audio
    await asyncio.wait_for(audio_put, 1)
    assert [type(f).__name__ for f in drain(link)] == ["SpeechStarted", "Audio"]


# -- bounded in seconds of audio ----------------------------------------------


def test_max_audio_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_audio must be a positive"):
        Link(4, max_audio=0)
    with pytest.raises(ValueError, match="max_events must be at least 1"):
        Link(4, max_events=0)


async def test_a_block_link_bounded_in_seconds_holds_a_long_chunk_back() -> None:
    link = Link(50, Overflow.BLOCK, "playout", max_audio=1.0)
    link.put_nowait(chunk(0.2, 1))
    with pytest.raises(LinkFull, match="or 1 s of audio"):
        link.put_nowait(chunk(3.0, 2))  # one frame of 50, but 3.2 s of audio
    producer = asyncio.create_task(link.put(chunk(3.0, 2)))
    await asyncio.sleep(0)
    assert not producer.done()  # waits: the bound is in time, not in frames
    link.put_nowait(Mark("after-first"))  # events still pass
    assert link.get_nowait().pts == 1  # type: ignore[union-attr]
    await asyncio.wait_for(producer, 1)  # no audio queued: admitted alone
    assert link.audio_seconds == pytest.approx(3.0)
    assert link.stats().audio_seconds == pytest.approx(3.0)
    with pytest.raises(LinkFull):
        link.put_nowait(chunk(0.02, 3))  # past 1 s already: nothing more
    assert [type(f).__name__ for f in drain(link)] == ["Mark", "Audio"]
    assert link.audio_seconds == 0


async def test_a_block_link_bounded_in_seconds_fills_up_to_the_bound() -> None:
    link = Link(50, Overflow.BLOCK, max_audio=1.0)
    for i in range(5):
        link.put_nowait(chunk(0.2, i))
    assert link.audio_seconds == pytest.approx(1.0)
    with pytest.raises(LinkFull):
        link.put_nowait(chunk(0.02, 5))
    with pytest.raises(LinkTimeout):
        await link.put(chunk(0.02, 5), timeout=0.01)
    assert link.events_refused == 0 and link.dropped == 0


async def test_drop_oldest_bounded_in_seconds_drops_oldest_audio_until_the_frame_fits() -> None:
    link = Link(50, Overflow.DROP_OLDEST, max_audio=1.0)
    for i in range(10):
        link.put_nowait(chunk(0.3, i))
        link.put_nowait(speech(i))
    assert link.dropped == 7 and link.audio_seconds == pytest.approx(0.9)
    link.put_nowait(chunk(2.0, 10))  # longer than the bound: everything else goes
    assert link.dropped == 10 and link.audio_seconds == pytest.approx(2.0)
    out = drain(link)
    assert [f.pts for f in out if type(f) is SpeechStarted] == list(range(10))
    assert [f.pts for f in out if type(f) is Audio] == [10]
    assert link.audio_seconds == 0 and link.stats().depth == 0


async def test_audio_seconds_are_exact_through_put_get_drop_and_flush() -> None:
    link = Link(8, Overflow.DROP_OLDEST, max_audio=0.1)
    for i in range(1000):  # frames of 10, 20 and 30 ms at three rates
        ms = 10 * (1 + i % 3)
        rate = (8000, 16000, 48000)[i % 3]
        link.put_nowait(Audio(np.zeros(rate * ms // 1000, np.int16), rate, i))
        if i % 7 == 0:
            link.get_nowait()
        if i % 250 == 0:
            link.flush()
        queued = [f for f in link._data if type(f) is Audio]
        assert link.audio_seconds == pytest.approx(sum(f.duration for f in queued), abs=1e-9)
        assert link.audio_seconds <= 0.1 + 1e-9
    drain(link)
    assert link._audio_us == 0  # integer microseconds: no drift left behind


async def test_without_max_audio_seconds_are_still_reported() -> None:
    link = Link(10, Overflow.DROP_OLDEST)
    link.put_nowait(chunk(2.5))
    link.put_nowait(chunk(2.5))  # no bound in time: ten frames of any length
    assert link.dropped == 0
    s = link.stats()
    assert s.audio_seconds == pytest.approx(5.0) and s.max_audio is None
    d = s.as_dict()
    assert d["audio_seconds"] == pytest.approx(5.0) and d["events_refused"] == 0
