"""A synthetic agent with a known reply delay, to test the harness against.

``DelayEcho`` answers each caller utterance by playing it back, starting
exactly ``delay`` seconds after the utterance ended *as the caller spoke it*
(the end is found in the audio by energy and placed in the caller's time from
the frame's arrival and its offset in the frame), so a harness that measures
voice-to-voice correctly reports ``delay`` plus only the wire's own transit.
A caller who talks over a reply for ``bargein`` seconds stops it (an Interrupt
down the path: playout stops within a frame, the transport clears the far end);
anything shorter (a cough) is ignored, and the reply plays on.

``delay_runtime(delay, bargein)`` is the service's runtime with this agent
added as ``delay`` (needing no models), for ``voxline bench`` and its tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import numpy as np

from voxline.agent.events import AgentEvent, Observer
from voxline.control.runtime import INBOUND_RATE, Runtime
from voxline.control.session import Session
from voxline.media.frames import Audio, Frame
from voxline.media.link import Overflow
from voxline.media.stage import Emit, StageContext

from .signals import window_rms

__all__ = ["DelayEcho", "delay_runtime", "DELAY_AGENT"]

DELAY_AGENT = "delay"
LOUD = 300.0  # window RMS that counts as the caller speaking
END_GAP = 0.12  # s of quiet after which an utterance has ended (must be below the delay)
MAX_REPLY = 4.0  # s of an utterance kept to play back


class DelayEcho:
    name = "agent"
    inbox_capacity = 50
    inbox_seconds = 2.0
    overflow = Overflow.DROP_OLDEST
    capabilities: frozenset[str] = frozenset()

    def __init__(self, delay: float = 0.3, bargein: float = 0.2, observer: Observer | None = None) -> None:
        if not END_GAP < delay:
            raise ValueError(f"the delay must exceed {END_GAP} s, the quiet that ends an utterance")
        self.delay = delay
        self.bargein = bargein
        self.latency = delay
        self._observer = observer
        self._ctx: StageContext | None = None
        self._emit: Emit | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pcm: list[np.ndarray] = []  # the utterance so far
        self._start: float | None = None  # caller time of its first loud sample
        self._last: float | None = None  # caller time just after its last loud sample
        self._lead = 0
        self._announced = False
        self._reply_until = 0.0
        self._turn = 0
        self.replies = 0
        self.interrupts = 0

    @property
    def state(self) -> str:
        return "speaking" if self._now() < self._reply_until else "listening"

    def bind(self, ctx: StageContext) -> None:
        self._ctx = ctx

    def attach_emit(self, emit: Emit) -> None:
        self._emit = emit

    def _now(self) -> float:
        return self._ctx.clock.now() if self._ctx is not None else 0.0

    async def process(self, frame: Frame, emit: Emit) -> None:
        if type(frame) is not Audio:
            return
        assert isinstance(frame, Audio)
        if not self._announced and self._observer is not None:
            self._announced = True  # the session's first event: a caller learns its session id from it
            self._observer(AgentEvent("state", 0, {"agent": "listening"}))
        rate, pcm = frame.rate, frame.pcm
        rms = window_rms(pcm, rate)
        loud = np.nonzero(rms > LOUD)[0]
        n = max(1, len(pcm) // len(rms))
        # The caller spoke this frame's first sample when it was sent, i.e. at its arrival.
        if len(loud):
            first = frame.arrival + int(loud[0]) * n / rate
            if self._start is None:
                self._start = first
                self._lead = int(loud[0]) * n  # where it starts in the first frame kept
                if self._now() < self._reply_until:
                    self._spawn(self._barge_in(first))
            self._last = frame.arrival + min(len(pcm), (int(loud[-1]) + 1) * n) / rate
        if self._start is not None:
            self._pcm.append(pcm)
            assert self._last is not None
            if frame.arrival + len(pcm) / rate - self._last >= END_GAP:
                self._utterance_ended(rate)

    def _utterance_ended(self, rate: int) -> None:
        start, end = self._start, self._last
        assert start is not None and end is not None
        pcm = np.concatenate(self._pcm)
        self._pcm, self._start, self._last = [], None, None
        if end - start < self.bargein:
            return  # a cough, a click: not an utterance
        body = pcm[self._lead : self._lead + round((end - start) * rate)][: int(MAX_REPLY * rate)]
        self._turn += 1
        if self._ctx is not None:
            self._ctx.mark(self._turn, "speech_end", end)
        self._spawn(self._reply(self._turn, end + self.delay, body, rate))

    async def _reply(self, turn: int, at: float, pcm: np.ndarray, rate: int) -> None:
        assert self._ctx is not None and self._emit is not None
        await self._ctx.clock.sleep_until(at)
        self.replies += 1
        self._reply_until = self._now() + len(pcm) / rate
        await self._emit(Audio(pcm, rate, 0, self._now(), turn))
        await self._ctx.clock.sleep_until(self._reply_until + 0.05)
        self._close_turn(turn)

    def _close_turn(self, turn: int) -> None:
        assert self._ctx is not None
        record = self._ctx.latency.turns.get(turn)
        if record is None or record.closed:
            return
        self._ctx.latency.close(turn)
        if self._observer is not None:
            self._observer(AgentEvent("latency", turn, record.as_dict()))

    async def _barge_in(self, onset: float) -> None:
        assert self._ctx is not None
        await self._ctx.clock.sleep_until(onset + self.bargein)
        last = self._last
        if last is None or self._now() - last > 2 * END_GAP / 3:
            return  # it was over before the onset was long enough
        self.interrupts += 1
        self._reply_until = 0.0
        self._close_turn(self._turn)
        for task in list(self._tasks):
            if task.get_name() == "delay:reply":
                task.cancel()
        self._ctx.interrupt("barge-in", after=self.name)
        if self._observer is not None:
            self._observer(AgentEvent("reply", self._turn, {"interrupted": True}))

    def _spawn(self, coro: Any) -> None:
        name = "delay:reply" if coro.__name__ == "_reply" else "delay:barge-in"
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def say(self, text: str) -> None:
        from voxline.agent.control import Unsupported

        raise Unsupported(DELAY_AGENT, "say")

    def interrupt(self) -> None:
        from voxline.agent.control import Unsupported

        raise Unsupported(DELAY_AGENT, "interrupt")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def delay_runtime(delay: float = 0.3, bargein: float = 0.2) -> type[Runtime]:
    """The service's runtime with ``DelayEcho`` as agent ``delay`` (no models needed)."""

    class DelayRuntime(Runtime):
        agents = (*Runtime.agents, DELAY_AGENT)
        model_free = ("echo", DELAY_AGENT)

        def _agent(self, session: Session) -> tuple[Any, int]:
            if session.agent_kind != DELAY_AGENT:
                return super()._agent(session)

            def observe(event: AgentEvent) -> None:
                session.events.publish(event.kind, event.turn, **event.data)
                if self.observer is not None:
                    self.observer(session, event)

            return DelayEcho(delay, bargein, observe), INBOUND_RATE

    DelayRuntime.__name__ = f"DelayRuntime_{int(delay * 1000)}ms"
    return DelayRuntime
