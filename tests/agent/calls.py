"""A call on a fake clock: the assistant in a real pipeline (agent -> playout)
with scripted providers, and a caller who speaks, pauses and stops."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from voxline.agent.assistant import AgentEvent, Assistant, AssistantConfig
from voxline.agent.turns import State
from voxline.media.clock import FakeClock
from voxline.media.frames import Audio, Frame, SpeechEnded, SpeechPaused, SpeechStarted
from voxline.media.pipeline import Pipeline
from voxline.media.playout import Playout

from .fakes import FakeLLM, FakeSTT, FakeTTS

RATE = 16000


@dataclass
class Call:
    clock: FakeClock
    stt: FakeSTT
    llm: FakeLLM
    tts: FakeTTS
    offline: FakeTTS
    agent: Assistant
    playout: Playout
    pipe: Pipeline
    sent: list[tuple[float, Frame]] = field(default_factory=list)
    events: list[AgentEvent] = field(default_factory=list)
    pts: int = 0

    def audio_of(self, turn: int, level: int | None = None) -> list[tuple[float, Audio]]:
        return [
            (t, f) for t, f in self.sent
            if type(f) is Audio and f.turn == turn and (level is None or f.pcm.max() == level)
        ]

    def samples_of(self, turn: int) -> int:
        return sum(int(np.count_nonzero(f.pcm)) for _, f in self.audio_of(turn))

    async def speak(self, turn: int, seconds: float, end: bool = True) -> None:
        self.pipe.push(SpeechStarted(self.pts, RATE, self.clock.now(), turn))
        await self.talk(turn, seconds)
        if end:
            await self.end(turn)

    async def speak_and_pause(self, turn: int, seconds: float) -> int:
        """Start a turn, speak for ``seconds`` and pause (SpeechPaused); the pause's pts."""
        self.pipe.push(SpeechStarted(self.pts, RATE, self.clock.now(), turn))
        await self.talk(turn, seconds)
        pts = self.pts
        self.pipe.push(SpeechPaused(pts, RATE, self.clock.now(), turn))
        return pts

    async def talk(self, turn: int, seconds: float) -> None:
        for _ in range(round(seconds / 0.02)):
            self.pipe.push(Audio(np.full(320, 300, np.int16), RATE, self.pts, self.clock.now(), turn))
            self.pts += 320
            await self.clock.advance(0.02)

    async def end(self, turn: int) -> None:
        await self.end_at(turn, self.pts)

    async def end_at(self, turn: int, pts: int) -> None:
        self.pipe.push(SpeechEnded(pts, RATE, 0.0, self.clock.now(), turn))
        await self.clock.settle()


async def make_call(
    script: tuple[str, ...] = ("what time is it",),
    reply: str = "It is noon. Have a nice day.",
    greeting: str | None = None,
    per_token: float = 0.02,
    vad: object | None = None,
    endpointing: dict[State, object] | None = None,
    preemptive: bool = True,
    whole: bool = False,
    llm_chain: Callable[[FakeClock, FakeLLM], object] | None = None,
) -> Call:
    clock = FakeClock()
    stt = FakeSTT(clock, script, whole=whole)
    llm = FakeLLM(clock, reply, per_token=per_token)
    tts = FakeTTS(clock)
    offline = FakeTTS(clock, "offline", level=77)
    playout = Playout(RATE, capacity=400)
    events: list[AgentEvent] = []
    agent = Assistant(
        stt, llm if llm_chain is None else llm_chain(clock, llm), tts, fallback_tts=offline,  # type: ignore[arg-type]
        config=AssistantConfig(greeting=greeting, preemptive=preemptive), observer=events.append,
        endpointing=endpointing,  # type: ignore[arg-type]
    )
    sent: list[tuple[float, Frame]] = []
    stages: list[object] = [agent, playout] if vad is None else [vad, agent, playout]
    pipe = Pipeline(stages, lambda f: sent.append((clock.now(), f)), clock=clock)  # type: ignore[arg-type]
    await pipe.start()
    await clock.settle()
    return Call(clock, stt, llm, tts, offline, agent, playout, pipe, sent, events)
