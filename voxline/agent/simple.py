"""Agents for testing a line: ``Echo`` plays back what it hears, ``Transcribe``
only listens and reports transcripts. Neither speaks on its own: both are an
``AgentControl`` with no capabilities, whose ``say`` and ``interrupt`` raise
``Unsupported``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import numpy as np

from voxline.media.frames import Audio, Dtmf, EndOfStream, Frame, Interrupt, SpeechEnded, SpeechStarted
from voxline.media.link import Overflow
from voxline.media.stage import Emit, StageContext
from voxline.providers.base import Deadlines, ProviderError, Recognition, SpeechToText

from .control import Unsupported
from .events import AgentEvent, Observer
from .logs import SessionLog, part_log

__all__ = ["Echo", "Transcribe"]

log = logging.getLogger(__name__)


class Echo:
    """Every caller frame goes straight back out, in the same call (a transform:
    no task, no inbox), so what comes back can be compared with what was sent."""

    name = "agent"
    latency = 0.0
    state = "echoing"
    capabilities: frozenset[str] = frozenset()

    def __init__(self, observer: Observer | None = None) -> None:
        self._observer = observer
        self.frames = 0

    def say(self, text: str) -> None:
        raise Unsupported("echo", "say")

    def interrupt(self) -> None:
        raise Unsupported("echo", "interrupt")

    def process(self, frame: Frame) -> tuple[Frame, ...]:
        t = type(frame)
        if t is Audio:
            self.frames += 1
            return (frame,)
        if t is EndOfStream or t is Interrupt:
            return (frame,)
        if (t is SpeechStarted or t is SpeechEnded) and self._observer is not None:
            caller = "speaking" if t is SpeechStarted else "silent"
            self._observer(AgentEvent("state", frame.turn, {"caller": caller}))
        elif t is Dtmf and self._observer is not None:
            self._observer(AgentEvent("dtmf", frame.turn, {"digit": frame.digit}))  # type: ignore[union-attr]
        return ()


class Transcribe:
    """Speech recognition only: reports interim and final transcripts per turn."""

    name = "agent"
    inbox_capacity = 100
    inbox_seconds = 2.0
    overflow = Overflow.DROP_OLDEST
    marks = (("vad_end", 0.0), ("transcript", 0.4))
    latency = 0.4
    capabilities: frozenset[str] = frozenset()

    def __init__(
        self,
        stt: SpeechToText,
        observer: Observer | None = None,
        deadlines: Deadlines | None = None,
        preroll: float = 0.3,
    ) -> None:
        self.stt = stt
        self._observer = observer
        self._deadlines = deadlines or Deadlines()
        self._preroll_s = preroll
        self._preroll: list[Audio] = []
        self._ctx: StageContext | None = None
        self._log: SessionLog = part_log(log, None)
        self._rec: Recognition | None = None
        self._reader: asyncio.Task[None] | None = None
        self._speaking = False
        self._turn = 0
        self.transcripts: list[tuple[int, str]] = []
        self.errors = 0

    def bind(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._log = part_log(log, ctx)

    @property
    def state(self) -> str:
        return "caller_speaking" if self._speaking else "listening"

    def say(self, text: str) -> None:
        raise Unsupported("transcribe", "say")

    def interrupt(self) -> None:
        raise Unsupported("transcribe", "interrupt")

    async def process(self, frame: Frame, emit: Emit) -> None:
        t = type(frame)
        if t is Audio:
            assert isinstance(frame, Audio)
            if self._speaking:
                await self._send(frame.pcm)
            else:
                self._preroll.append(frame)
                while self._preroll and (frame.pts - self._preroll[0].pts) > self._preroll_s * frame.rate:
                    self._preroll.pop(0)
        elif t is SpeechStarted:
            assert isinstance(frame, SpeechStarted)
            self._turn = frame.turn
            self._speaking = True
            if self._rec is None:
                await self._open()
            if self._preroll:
                await self._send(np.concatenate([f.pcm for f in self._preroll]))
                self._preroll.clear()
        elif t is SpeechEnded:
            self._speaking = False
            if self._ctx is not None:
                self._ctx.mark(frame.turn, "vad_end")
            if self._rec is not None:
                try:
                    await asyncio.wait_for(self._rec.finalize(), self._deadlines.first_result)
                except (ProviderError, TimeoutError, OSError) as exc:
                    self._failed(exc)

    async def _open(self) -> None:
        try:
            self._rec = await asyncio.wait_for(self.stt.open(self._deadlines), self._deadlines.connect)
        except (ProviderError, TimeoutError, OSError) as exc:
            self._failed(exc)
            return
        self._reader = asyncio.get_running_loop().create_task(self._read(self._rec), name="transcribe:results")

    async def _send(self, pcm: np.ndarray) -> None:
        if self._rec is None:
            return
        try:
            # Per frame: a timeout scope, not wait_for (a task per frame on 3.11).
            async with asyncio.timeout(self._deadlines.idle):
                await self._rec.send(pcm)
        except (ProviderError, TimeoutError, OSError) as exc:
            self._failed(exc)

    async def _read(self, rec: Recognition) -> None:
        try:
            async for result in rec.results():
                if result.final:
                    if self._ctx is not None:
                        self._ctx.mark(self._turn, "transcript")
                        self._ctx.latency.close(self._turn)
                    self.transcripts.append((self._turn, result.text))
                if self._observer is not None:
                    self._observer(
                        AgentEvent("transcript", self._turn,
                                   {"text": result.text, "final": result.final, "who": "caller"})
                    )
        except (ProviderError, TimeoutError, OSError) as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self._log.warning("transcription failed: %s", exc, extra={"turn_id": self._turn})
        if self._observer is not None:
            self._observer(AgentEvent("error", self._turn, {"provider": "stt", "error": str(exc)}))
        self._rec = None  # the next utterance opens a new recognition

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._rec is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._rec.aclose(), self._deadlines.connect)
