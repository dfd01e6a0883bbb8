"""A stalled consumer under a flood of live audio: links drop audio, never events,
and bound what they hold in seconds of audio as well as in frames."""

from __future__ import annotations

import asyncio
from typing import cast

import numpy as np

from voxline.agent.simple import Echo as EchoAgent
from voxline.agent.simple import Transcribe
from voxline.media.clock import FakeClock
from voxline.media.frames import Audio, Frame, Mark, SpeechEnded, SpeechStarted
from voxline.media.link import Overflow
from voxline.media.pipeline import Pipeline
from voxline.media.playout import Playout
from voxline.media.stage import Emit
from voxline.providers.base import SpeechToText

from .helpers import Echo, audio

FRAMES_PER_SECOND = 50  # 20 ms frames


class Stalled:
    """A worker stuck on its first frame until the test releases it (a model call
    that hangs, a provider that stopped answering)."""

    def __init__(self, capacity: int, seconds: float | None = None) -> None:
        self.name = "stalled"
        self.latency = 0.0
        self.inbox_capacity = capacity
        self.overflow = Overflow.DROP_OLDEST
        if seconds is not None:
            self.inbox_seconds = seconds
        self.release = asyncio.Event()
        self.seen = 0

    async def process(self, frame: Frame, emit: Emit) -> None:
        self.seen += 1
        await self.release.wait()
        await emit(frame)


def flood(p: Pipeline, seconds: int) -> list[Frame]:
    """Push ``seconds`` of 20 ms audio with a SpeechStarted/SpeechEnded pair in
    each second (turn k in second k); return the events pushed."""
    events: list[Frame] = []
    for i in range(1, seconds * FRAMES_PER_SECOND + 1):
        turn = i // FRAMES_PER_SECOND + 1
        p.push(audio(i, turn=turn))
        if i % FRAMES_PER_SECOND in (5, 40):
            start = i % FRAMES_PER_SECOND == 5
            ev: Frame = SpeechStarted(i * 320, 16000, turn=turn) if start else SpeechEnded(i * 320, 16000, turn=turn)
            events.append(ev)
            p.push(ev)
    return events


async def stall(capacity: int, seconds: float | None = None) -> tuple[Pipeline, Stalled, list[Frame]]:
    clock = FakeClock()
    out: list[Frame] = []
    worker = Stalled(capacity, seconds)
    p = Pipeline([worker], out.append, clock=clock)
    await p.start()
    p.push(audio(0))
    await clock.settle()
    assert worker.seen == 1  # holding frame 0, stuck
    return p, worker, out


async def test_a_stalled_worker_loses_audio_but_every_speech_event_in_order() -> None:
    p, worker, out = await stall(capacity=8)
    events = flood(p, 10)
    assert len(events) == 20
    link = p.links()[0]
    assert link.dropped > 0 and link.events_refused == 0 and p.head_dropped == 0
    worker.release.set()
    for _ in range(10):
        await asyncio.sleep(0)
        if len(out) == 1 + 8 + 20:
            break
    got_events = [f for f in out if type(f) is not Audio]
    assert got_events == events  # every pair, in order
    assert [type(f) for f in got_events] == [SpeechStarted, SpeechEnded] * 10
    assert [f.turn for f in got_events[::2]] == list(range(1, 11))
    got_audio = [f.pts // 320 for f in out if type(f) is Audio]
    assert got_audio[0] == 0 and got_audio[1:] == list(range(493, 501))  # the newest 8
    assert link.dropped == 500 - 8  # counted: 10 s pushed, 8 frames kept
    s = link.stats()
    assert (s.dropped, s.events_refused, s.high_water) == (492, 0, 28)
    await p.stop()


async def test_a_stalled_worker_s_inbox_holds_its_seconds_of_audio_not_its_frames() -> None:
    p, worker, out = await stall(capacity=100, seconds=0.5)
    events = flood(p, 10)
    link = p.links()[0]
    assert link.max_audio == 0.5
    assert link.stats().audio_seconds == 0.5  # 25 frames, though 100 would fit
    worker.release.set()
    await asyncio.sleep(0)
    for _ in range(10):
        await asyncio.sleep(0)
    assert [f for f in out if type(f) is not Audio] == events
    assert sum(1 for f in out if type(f) is Audio) == 1 + 25
    assert link.dropped == 500 - 25
    await p.stop()


async def test_a_worker_without_inbox_seconds_gets_a_link_bounded_in_frames_only() -> None:
    p = Pipeline([Echo("w", capacity=4, overflow=Overflow.DROP_OLDEST)])
    assert p.links()[0].max_audio is None


def test_the_line_agents_and_playout_bound_their_inboxes_in_seconds() -> None:
    assert Pipeline([EchoAgent()]).links() == []  # it relays in the caller's call: no inbox to bound
    assert Pipeline([Transcribe(cast(SpeechToText, None))]).links()[0].max_audio == 2.0
    assert Pipeline([Playout(8000)]).links()[0].max_audio == 1.0
    assert Pipeline([Playout(8000, seconds=0.3)]).links()[0].max_audio == 0.3


async def test_tts_into_playout_waits_for_the_sentence_before_to_play() -> None:
    rate = 8000
    clock = FakeClock()
    sent: list[Frame] = []
    tts = Echo("tts", capacity=8)
    play = Playout(rate, seconds=1.0)
    p = Pipeline([tts, play], sent.append, clock=clock)
    await p.start()
    inbox = p.links()[1]
    for k in range(4):  # four sentences of 3 s, handed over whole
        await p.send(Audio(np.full(3 * rate, k + 1, np.int16), rate, 0, 0.0, 1))
    await p.send(Mark("end-of-reply", turn=1))
    await clock.settle()
    # One sentence plays, the next waits in the inbox (alone, though longer than
    # the bound), the third is held back at the TTS: not 9 s queued.
    assert inbox.audio_seconds == 3.0
    assert len(p.links()[0]) == 2  # the fourth sentence and the mark
    for _ in range(13 * 50):
        await clock.advance(0.02)
        assert inbox.audio_seconds <= 3.0
    values = [int(f.pcm[0]) for f in sent if type(f) is Audio]
    assert len(values) == 4 * 150
    assert values == sorted(values) and set(values) == {1, 2, 3, 4}  # all of it, in order
    assert type(sent[-1]) is Mark and inbox.stats().dropped == 0
    await p.stop()
