"""Scripted providers on a fake clock: they honour the contracts in
voxline.providers.base, and record what they were asked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import numpy as np

from voxline.media.clock import Clock
from voxline.providers.base import Deadlines, Message, ProviderError, Transcription


class FakeRecognition:
    def __init__(self, stt: "FakeSTT") -> None:
        self.stt = stt
        self.samples = 0
        self.queue: asyncio.Queue[Transcription | None] = asyncio.Queue(16)
        self.closed = False

    async def send(self, pcm: np.ndarray) -> None:
        if self.stt.fail_send:
            raise ProviderError("fake-stt", "socket dropped")
        if self.stt.gate is not None:
            await self.stt.gate.wait()  # a stalled recogniser: the agent waits here
        self.samples += len(pcm)

    async def finalize(self) -> None:
        self.stt.utterances.append(self.samples)
        self.samples = 0
        text = self.stt.script.pop(0) if self.stt.script else ""
        if self.stt.utterances[-1]:  # like whisper, nothing sent costs no decode
            await self.stt.clock.sleep_until(self.stt.clock.now() + self.stt.delay)
        self.queue.put_nowait(Transcription(text, True))

    async def results(self) -> AsyncIterator[Transcription]:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            yield item

    async def aclose(self) -> None:
        self.closed = True
        self.queue.put_nowait(None)


class FakeSTT:
    name = "fake-stt"
    sample_rate = 16000

    def __init__(self, clock: Clock, script: Sequence[str] = (), delay: float = 0.1, whole: bool = False) -> None:
        self.whole_utterances = whole
        self.clock = clock
        self.script = list(script)
        self.delay = delay
        self.utterances: list[int] = []
        self.fail_open = False
        self.fail_send = False
        self.gate: asyncio.Event | None = None  # set: send waits until the event is set
        self.opened = 0

    async def open(self, deadlines: Deadlines | None = None) -> FakeRecognition:
        self.opened += 1
        if self.fail_open:
            raise ProviderError(self.name, "connect refused")
        self.recognition = FakeRecognition(self)
        return self.recognition

    def interim(self, text: str) -> None:
        """An interim result, as a recogniser sends while the caller speaks."""
        self.recognition.queue.put_nowait(Transcription(text, False))


class FakeLLM:
    name = "fake-llm"

    def __init__(self, clock: Clock, reply: str, per_token: float = 0.02, first: float = 0.1) -> None:
        self.clock = clock
        self.reply = reply
        self.per_token = per_token
        self.first = first
        self.calls: list[list[Message]] = []
        self.tokens_out = 0
        self.fail_at: int | None = None
        self.cancelled = 0

    async def stream(self, messages: Sequence[Message], deadlines: Deadlines | None = None) -> AsyncIterator[str]:
        self.calls.append(list(messages))
        words = self.reply.split(" ")
        try:
            await self.clock.sleep_until(self.clock.now() + self.first)
            for i, w in enumerate(words):
                if self.fail_at is not None and i >= self.fail_at:
                    raise ProviderError(self.name, "stream dropped")
                self.tokens_out += 1
                yield w if i == 0 else " " + w
                await self.clock.sleep_until(self.clock.now() + self.per_token)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


class FakeTTS:
    """0.25 s of audio per word, in 0.1 s chunks; the samples carry the word number."""

    sample_rate = 16000

    def __init__(self, clock: Clock, name: str = "fake-tts", level: int = 1000) -> None:
        self.clock = clock
        self.name = name
        self.level = level
        self.texts: list[str] = []
        self.fail = False

    async def synthesize(self, text: str, deadlines: Deadlines | None = None) -> AsyncIterator[np.ndarray]:
        self.texts.append(text)
        if self.fail:
            raise ProviderError(self.name, "voice unavailable")
        await self.clock.sleep_until(self.clock.now() + 0.01)
        n = len(text.split()) * 4000
        for start in range(0, n, 1600):
            yield np.full(min(1600, n - start), self.level, dtype=np.int16)
