"""The playout clock: egress paced against an absolute schedule. The only pacer.

Frame k of a talk spurt goes out at ``t0 + k * frame``, computed from integers each
time, so an hour of audio ends within a float's rounding of where it should, with
no drift from accumulated sleeps. When the outgoing audio runs dry the clock is
re-anchored at the next frame, so silence is not "caught up" with a burst. When
the audio was there and playout was late (the loop stalled, a burst arrived after
a hiccup upstream), the frames whose slots passed go out at once, up to
``CATCH_UP`` behind: a stall costs its length once, instead of adding to the
latency of every frame after it for the rest of the talk spurt (an echo, a
relayed stream, never runs dry). Which it is, the frame says: audio that entered
voxline by the end of its slot was waiting, not missing.

The other way round, a relayed stream whose frames start to come earlier than
their slots (an RTP jitter buffer that shrank, a stall that was past when the
schedule was anchored) would wait that long for ever. So when a frame is early
and nothing else is waiting behind it, the schedule slips earlier, by at most
``SLIP`` of a frame per frame: the lag is gone within a few hundred ms, and the
wire still never gets more than one frame per ``(1 - SLIP)`` of a frame period.
Audio that is waiting (a TTS sentence, a burst) is paced exactly as before.

Two ways to reach the wire, as the transport declares (``voxline.transports.base``):

- ``push`` (RTP, WebSocket streams, AudioSocket): each frame is emitted in its
  slot, and the transport writes it at once. It counts as heard when it was sent,
  less ``far_end_buffer`` seconds that the far end holds before playing.
- ``pull`` (aiortc's ``recv()``: the peer's side asks for frames): frames wait in
  a hand-off of one frame, and the transport's ``pull()`` takes the next one in
  *its* slot on the same schedule (silence when there is none), so nothing else
  paces. A frame counts as heard when it is taken: exactly what the peer got.

Egress reports what was actually heard: samples per turn (``heard(turn)``, given
to the pipeline's feedback), and each ``Mark`` as a ``Played`` feedback event once
the audio before it is out. On Interrupt, playout stops within one frame: the
pipeline cancels the wait for the next slot and flushes the inbox, the hand-off
is emptied, and the interrupted frame is never sent.
"""

from __future__ import annotations

import asyncio
import collections
import enum

import numpy as np

from .clock import Clock, LoopClock
from .feedback import Played
from .frames import Audio, EndOfStream, Frame, Mark
from .link import Link, Overflow
from .stage import Emit, StageContext

__all__ = ["Playout", "PlayoutMode"]

DEFAULT_CAPACITY = 50  # frames: 1 s of 20 ms audio between TTS and the wire
DEFAULT_SECONDS = 1.0  # and at most 1 s of audio, however long each frame is
MAX_REPORTED_MARKS = 64
PULL_LATE_RESET = 0.1  # a pull further behind its slot than this re-anchors (a stalled loop)
PULL_STALL = 1.0  # s a frame waits to be pulled before it is dropped (a peer that stopped)
CATCH_UP = 0.2  # s behind its slot that waiting audio is sent at once to catch up; further: re-anchor
SLIP = 0.1  # of a frame: how much earlier the schedule may move per frame when a lone frame is early


class PlayoutMode(enum.Enum):
    PUSH = "push"
    PULL = "pull"


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
        mode: PlayoutMode = PlayoutMode.PUSH,
        far_end_buffer: float = 0.0,
        far_end_clears: bool = False,
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
        self.mode = mode
        self.far_end_buffer = far_end_buffer
        self.far_end_clears = far_end_clears  # an Interrupt drops what the far end holds (clear())
        # push with a far-end buffer: (sent_at, turn, samples) of the frames sent
        # within far_end_buffer, not heard yet
        self._recent: collections.deque[tuple[float, int, int]] = collections.deque()
        # pull: the hand-off (frames and the marks after them) and its waiter
        self._handoff: collections.deque[tuple[np.ndarray, int, int] | Mark] = collections.deque()
        self._taken: asyncio.Future[None] | None = None
        self._pull_t0: float | None = None
        self._pull_k = 0
        self.pulls = 0
        self.silent_pulls = 0
        self.late_pulls = 0
        self.stalled = 0  # frames dropped because the peer did not pull them
        self._emit: Emit | None = None
        self._t0: float | None = None
        self._k = 0
        self._carry: np.ndarray | None = None
        self._carry_turn = 0
        self._carry_arrival = 0.0
        self.caught_up = 0  # frames sent late, at once, to win back a stall
        self.slipped = 0.0  # s the schedule moved earlier for relayed frames that came early
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
        ctx.feedback.provide_heard(self.heard)

    def attach_inbox(self, link: Link) -> None:
        self._inbox = link

    def heard(self, turn: int) -> float:
        """Seconds of ``turn``'s audio the caller has heard: sent into its slot
        (push, less the far end's buffer) or taken by the peer (pull)."""
        samples = self.played_by_turn.get(turn, 0)
        if self._recent:
            self._forget_heard(self._clock.now())
            samples -= sum(n for _, t, n in self._recent if t == turn)
        return samples / self.rate

    def _forget_heard(self, now: float) -> None:
        """Keep in ``_recent`` only what the far end still holds (bounded by its buffer)."""
        recent, horizon = self._recent, now - self.far_end_buffer
        while recent and recent[0][0] <= horizon:
            recent.popleft()

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
        await self._send(padded, self._carry_turn, emit, real=len(carry), arrival=self._carry_arrival)

    async def process(self, frame: Frame, emit: Emit) -> None:
        if self._carry is not None and type(frame) is not Audio:
            await self._flush_carry(emit)  # a mark sits after the audio before it
        if type(frame) is Mark:
            if self.mode is PlayoutMode.PULL and self._handoff:
                self._handoff.append(frame)  # played once the audio before it is taken
            else:
                self._played(frame)
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
        arrival = frame.arrival
        rest = pcm[whole * n :]
        # A lone frame that came while playout was idle, not one that waited behind another.
        idle = whole == 1 and not len(rest) and (self._inbox is None or len(self._inbox) == 0) \
            and (self.last_sent_at is None or self._clock.now() > self.last_sent_at)
        for i in range(whole):
            await self._send(pcm[i * n : (i + 1) * n], frame.turn, emit, arrival=arrival, alone=idle)
        if len(rest):
            self._carry = rest
            self._carry_turn = frame.turn
            self._carry_arrival = arrival
            if self._inbox is None or len(self._inbox) == 0:
                await self._flush_carry(emit)  # nothing queued behind it: pad and send
            # else: more is queued; it joins the next chunk (or a mark flushes it)

    async def _send(self, pcm: np.ndarray, turn: int, emit: Emit, real: int | None = None,
                    arrival: float = 0.0, alone: bool = False) -> None:
        samples = len(pcm) if real is None else real
        if self.mode is PlayoutMode.PULL:
            await self._hand_over(pcm, turn, samples)
            return
        clock = self._clock
        await clock.sleep_until(self._slot(clock.now(), arrival, alone))
        await emit(self._out(pcm, turn, samples, clock.now()))

    def _slot(self, now: float, arrival: float, alone: bool) -> float:
        """When the next frame goes out (the schedule moved as the frame says)."""
        due = self.next_due()
        if due is None or now > due + self.frame_time:
            if due is not None and now - due <= CATCH_UP and 0.0 < arrival <= due + self.frame_time:
                self.caught_up += 1  # it was waiting while playout was late: send it now, same schedule
            else:
                # First frame, or the audio ran dry: re-anchor rather than burst to catch up.
                self._t0 = due = now
                self._k = 0
        elif alone and now < due:
            # Early, with nothing behind it: a relayed stream ahead of the schedule. Slip.
            slip = min(due - now, SLIP * self.frame_time)
            assert self._t0 is not None  # due was computed from it
            self._t0 -= slip
            due -= slip
            self.slipped += slip
        return due

    def _out(self, pcm: np.ndarray, turn: int, samples: int, sent_at: float) -> Audio:
        """The frame of the current slot, counted as sent at ``sent_at``."""
        self._k += 1
        out = Audio(pcm, self.rate, self._pts, sent_at, turn)
        self._count(turn, samples, sent_at)
        if self.far_end_buffer > 0:
            self._forget_heard(sent_at)
            self._recent.append((sent_at, turn, samples))
        return out

    def offer(self, frame: Frame) -> tuple[Audio] | None:
        """A whole frame of audio that arrives while playout is idle and can go out
        now (its slot has come, or the schedule slips to it): sent in the caller's
        call (see ``Pipeline``). None: it waits, through the inbox, as any other.

        The decision is the worker's own (``_slot``), so both ways send the same
        frames at the same times; this one saves the hand-off to the task."""
        if type(frame) is not Audio or self.mode is not PlayoutMode.PUSH or self._carry is not None:
            return None
        pcm = frame.pcm
        if len(pcm) != self.frame_samples or frame.rate != self.rate:
            return None
        now = self._clock.now()
        alone = self.last_sent_at is None or now > self.last_sent_at
        due = self.next_due()
        if due is not None and now < due and (not alone or due - now > SLIP * self.frame_time):
            return None  # early: only a lone frame within one slip of its slot goes now
        self._slot(now, frame.arrival, alone)
        return (self._out(pcm, frame.turn, len(pcm), now),)

    def _count(self, turn: int, samples: int, at: float) -> None:
        """A frame of ``turn`` reached the wire at ``at``."""
        if turn not in self.played_by_turn:
            self.played_by_turn[turn] = 0
            while len(self.played_by_turn) > MAX_REPORTED_MARKS:
                self.played_by_turn.popitem(last=False)
            if self._ctx is not None and turn:
                self._ctx.mark(turn, "first_played", at)
        self.played_by_turn[turn] += samples
        self.played_samples += samples
        self.frames_sent += 1
        self.last_sent_at = at
        self._pts += self.frame_samples

    def _played(self, mark: Mark) -> None:
        at = self._clock.now()
        self.marks_played.append((mark.name, at))
        if self._ctx is not None:
            self._ctx.feedback.publish(Played(mark, at))

    # -- pull ------------------------------------------------------------------

    async def _hand_over(self, pcm: np.ndarray, turn: int, samples: int) -> None:
        """Leave one frame for the peer to pull, and wait until it is taken."""
        while any(type(item) is not Mark for item in self._handoff):
            await self._wait_taken()
        self._handoff.append((pcm, turn, samples))
        await self._wait_taken()

    async def _wait_taken(self) -> None:
        fut = self._taken
        if fut is None or fut.done():
            fut = self._taken = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(PULL_STALL):
                await asyncio.shield(fut)
        except TimeoutError:
            # Nobody is pulling: drop what waits rather than hold the reply forever.
            dropped = sum(1 for item in self._handoff if type(item) is not Mark)
            self.stalled += dropped
            self._handoff.clear()

    async def pull(self) -> Audio | None:
        """The transport's pull: the next frame in its slot (None: nothing to play).

        Slots run on this playout's clock, continuously (a pulling peer sends
        silence between replies); a pull further behind than ``PULL_LATE_RESET``
        re-anchors instead of returning frames in a burst."""
        clock = self._clock
        now = clock.now()
        if self._pull_t0 is None:
            self._pull_t0, self._pull_k = now, 0
        else:
            self._pull_k += 1
            due = self._pull_t0 + self._pull_k * self.frame_time
            if now > due + PULL_LATE_RESET:
                self.late_pulls += 1
                self._pull_t0, self._pull_k = now, 0
            else:
                await clock.sleep_until(due)
        self.pulls += 1
        handoff = self._handoff
        out: Audio | None = None
        while handoff:
            item = handoff[0]
            if type(item) is Mark:
                handoff.popleft()
                self._played(item)
                continue
            if out is not None:
                break
            handoff.popleft()
            pcm, turn, samples = item  # type: ignore[misc]
            at = clock.now()
            out = Audio(pcm, self.rate, self._pts, at, turn)
            self._count(turn, samples, at)
        if out is None:
            self.silent_pulls += 1
        fut = self._taken
        if fut is not None and not fut.done():
            fut.set_result(None)
        return out

    def interrupt(self) -> None:
        self._carry = None
        if self._recent and self.far_end_clears:
            self._forget_heard(self._clock.now())
            for _, turn, samples in self._recent:
                if turn in self.played_by_turn:
                    self.played_by_turn[turn] -= samples  # cleared at the far end: never heard
            self._recent.clear()
        # Not taken by the peer, so never heard; marks waiting there are dropped too.
        self._handoff.clear()
        fut = self._taken
        if fut is not None and not fut.done():
            fut.set_result(None)
        self.interruptions += 1
