"""The playout clock: egress paced against an absolute schedule.

Frame k of a talk spurt goes out at ``t0 + k * frame``, computed from integers each
time, so an hour of audio ends within a float's rounding of where it should, with
no drift from accumulated sleeps. When the outgoing audio runs dry the clock is
re-anchored at the next frame, so silence is not "caught up" with a burst.

Egress reports what was actually played: samples per turn, the last frame's
time, and each ``Mark`` as it passes. On Interrupt, playout stops within one frame:
the pipeline cancels the wait for the next slot and flushes the inbox, and the
interrupted frame is never sent.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np

from .clock import Clock, LoopClock
from .frames import Audio, EndOfStream, Frame, Mark
from .link import Link, Overflow
from .stage import Emit, StageContext

__all__ = ["Playout"]

DEFAULT_CAPACITY = 50  # frames: 1 s of 20 ms audio between TTS and the wire
DEFAULT_SECONDS = 1.0  # and at most 1 s of audio, however long each frame is
MAX_REPORTED_MARKS = 64


class Playout:
    """Egress worker: splits audio into frames and sends each in its slot."""

    mark = "first_played"

    def __init__(
        self,
        rate: int,
        frame_ms: int = 20,
        *,
        name: str = "playout",
        capacity: int = DEFAULT_CAPACITY,
        seconds: float = DEFAULT_SECONDS,
        clock: Clock | None = None,
        on_mark: Callable[[Mark, float], None] | None = None,
    ) -> None:
        if rate <= 0 or frame_ms <= 0:
            raise ValueError(f"playout needs a positive rate and frame, got {rate} Hz, {frame_ms} ms")
        self.name = name
        self.rate = rate
        self.frame_samples = rate * frame_ms // 1000
        self.frame_time = self.frame_samples / rate
        self.latency = self.frame_time  # one frame of buffering before the slot
        self.inbox_capacity = capacity
        self.inbox_seconds = seconds  # TTS hands over whole sentences: bound them in time
        self.overflow = Overflow.BLOCK
        self._clock: Clock = clock or LoopClock()
        self._ctx: StageContext | None = None
        self._inbox: Link | None = None
        self._on_mark = on_mark
        self._emit: Emit | None = None
        self._t0: float | None = None
        self._k = 0
        self._carry: np.ndarray | None = None
        self._carry_turn = 0
        self.frames_sent = 0
        self.played_samples = 0
        self.interruptions = 0
        self.played_by_turn: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.marks_played: collections.deque[tuple[str, float]] = collections.deque(
            maxlen=MAX_REPORTED_MARKS
        )
        self.last_sent_at: float | None = None
        self._pts = 0

    def bind(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._clock = ctx.clock

    def attach_inbox(self, link: Link) -> None:
        self._inbox = link

    def heard(self, turn: int) -> float:
        """Seconds of ``turn``'s audio actually sent to the caller."""
        return self.played_by_turn.get(turn, 0) / self.rate

    def next_due(self) -> float | None:
        return None if self._t0 is None else self._t0 + self._k * self.frame_time

    def attach_emit(self, emit: Emit) -> None:
        self._emit = emit

    async def on_control(self, frame: Frame) -> None:
        if type(frame) is EndOfStream:
            await self._flush_carry(self._emit)

    async def _flush_carry(self, emit: Emit | None) -> None:
        """Send a held partial frame, padded: nothing more of it is coming."""
        carry, self._carry = self._carry, None
        if carry is None or emit is None:
            return
        padded = np.zeros(self.frame_samples, dtype=np.int16)
        padded[: len(carry)] = carry
        await self._send(padded, self._carry_turn, emit, real=len(carry))

    async def process(self, frame: Frame, emit: Emit) -> None:
        if self._carry is not None and type(frame) is not Audio:
            await self._flush_carry(emit)  # a mark sits after the audio before it
        if type(frame) is Mark:
            self.marks_played.append((frame.name, self._clock.now()))
            if self._on_mark is not None:
                self._on_mark(frame, self._clock.now())
            await emit(frame)
            return
        if type(frame) is not Audio:
            await emit(frame)
            return
        if frame.rate != self.rate:
            raise ValueError(f"playout runs at {self.rate} Hz, got audio at {frame.rate} Hz")
        pcm = frame.pcm
        if self._carry is not None:
            if self._carry_turn == frame.turn:
                pcm = np.concatenate((self._carry, pcm))
                self._carry = None
            else:
                await self._flush_carry(emit)
        n = self.frame_samples
        whole = len(pcm) // n
        for i in range(whole):
            await self._send(pcm[i * n : (i + 1) * n], frame.turn, emit)
        rest = pcm[whole * n :]
        if len(rest):
            self._carry = rest
            self._carry_turn = frame.turn
            if self._inbox is None or len(self._inbox) == 0:
                await self._flush_carry(emit)  # nothing queued behind it: pad and send
            # else: more is queued; it joins the next chunk (or a mark flushes it)

    async def _send(self, pcm: np.ndarray, turn: int, emit: Emit, real: int | None = None) -> None:
        clock = self._clock
        now = clock.now()
        due = self.next_due()
        if due is None or now > due + self.frame_time:
            # First frame, or the audio ran dry: re-anchor rather than burst to catch up.
            self._t0 = due = now
            self._k = 0
        await clock.sleep_until(due)
        self._k += 1
        sent_at = clock.now()
        out = Audio(pcm, self.rate, self._pts, sent_at, turn)
        self._pts += len(pcm)
        samples = len(pcm) if real is None else real
        if turn not in self.played_by_turn:
            self.played_by_turn[turn] = 0
            while len(self.played_by_turn) > MAX_REPORTED_MARKS:
                self.played_by_turn.popitem(last=False)
            if self._ctx is not None and turn:
                self._ctx.mark(turn, "first_played", sent_at)
        self.played_by_turn[turn] += samples
        self.played_samples += samples
        self.frames_sent += 1
        self.last_sent_at = sent_at
        await emit(out)

    def interrupt(self) -> None:
        self._carry = None
        self.interruptions += 1
