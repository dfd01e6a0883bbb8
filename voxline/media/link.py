"""Links: the bounded queues between worker stages.

A link has one consumer (the worker that owns it) and any number of producers.
Every link declares a capacity and what happens when it is full:

- ``block``: the producer waits (backpressure; e.g. TTS into egress). A waiting
  producer always has a deadline; ``put`` raises ``LinkTimeout`` past it.
- ``drop_oldest``: the oldest queued *audio* frame is dropped to make room (live
  audio that cannot wait). Dropped frames are counted.

Audio and events are bounded apart, because they are lost differently. Losing
20 ms of live audio is a glitch; losing a ``SpeechEnded`` leaves the turn machine
waiting for a turn that has ended. So only audio is ever dropped: ``Audio``, and
``Payload`` (encoded audio, one codec frame). Every other data frame — speech
events, transcripts, text, DTMF, marks — is an *event*, never dropped:

- Audio is bounded by ``capacity`` frames and, where the link is given
  ``max_audio``, by seconds of audio: a frame is as long as its PCM
  (``pcm.shape[0] / rate``), so a link carrying whole TTS sentences is bounded
  in time, not in sentences. The link is full when ``capacity`` audio frames are
  queued or when the new frame would take the queued audio past ``max_audio``;
  a frame longer than ``max_audio`` on its own goes into a link holding no audio
  (else it could never go in). ``block`` waits for room by both bounds;
  ``drop_oldest`` drops the oldest audio until the new frame fits both.
  ``Payload`` counts as a frame but not in seconds (its length is the codec's
  business). Seconds are summed in integer microseconds as frames come and go
  (exact, so the sum never drifts), and only on links given ``max_audio``.
- Events have a bound of their own, ``max_events`` (by default the capacity, and
  at least ``MIN_EVENTS``: they hold no PCM, and a link of a few audio frames must
  still carry the events of a stalled turn). Events ahead of audio do not count
  against the audio's bounds, nor audio against theirs. Past ``max_events``,
  under either policy, ``put_nowait`` raises ``LinkFull`` and ``put`` waits up to
  its deadline, then raises ``LinkTimeout``; either is counted in
  ``events_refused``. That many unread events means the consumer has stopped:
  a fault, surfaced to the producer, never a silent loss.

Order is kept: dropping audio takes frames out of the middle of the queue, but
what remains, audio and events alike, comes out in the order it went in.

Control frames are never dropped and never count against the capacity, but they
differ in order. ``Interrupt`` goes in a separate lane that the consumer reads
first, so an interruption never waits behind queued audio; that lane is bounded
too (one pending frame), and since a pending interruption makes a second one
redundant, duplicates coalesce. ``EndOfStream`` is delivered *after* the data
queued before it: if it overtook that data, draining a pipeline would lose the
last audio. A data frame offered after EndOfStream is refused (``LinkClosed``).

This is deliberately not ``asyncio.Queue``: a deque and one waiter future per side
cost a fraction of a queue's locking on the per-frame path, and the policies,
control lane and counters are what a voice pipeline actually needs. The per-frame
path costs a type check or two and a counter beyond the deque itself: no
allocation, no scan (the scan for the oldest audio behind queued events happens
only on overflow).
"""

from __future__ import annotations

import asyncio
import collections
import enum
from dataclasses import dataclass

from .frames import Audio, EndOfStream, Frame, Interrupt, Payload

__all__ = ["Overflow", "Link", "LinkFull", "LinkTimeout", "LinkClosed", "LinkStats", "MIN_EVENTS"]

DEFAULT_PUT_TIMEOUT = 5.0
MIN_EVENTS = 64  # the least a link holds of events, whatever its audio capacity
_US = 1_000_000  # audio seconds are summed in integer microseconds


class Overflow(enum.Enum):
    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"


class LinkFull(Exception):
    """The link has no room for this frame and the producer asked not to wait:
    audio on a full ``block`` link, or an event past ``max_events``."""


class LinkTimeout(TimeoutError):
    """A producer waited on a full link past its deadline."""


class LinkClosed(Exception):
    """The link's consumer has gone; nothing more can be put."""


@dataclass(frozen=True, slots=True)
class LinkStats:
    name: str
    capacity: int
    policy: str
    depth: int
    high_water: int
    put: int
    got: int
    dropped: int
    flushed: int
    audio_seconds: float = 0.0  # depth in seconds of the Audio queued
    max_audio: float | None = None
    max_events: int = MIN_EVENTS
    events_refused: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "capacity": self.capacity,
            "policy": self.policy,
            "depth": self.depth,
            "high_water": self.high_water,
            "put": self.put,
            "got": self.got,
            "dropped": self.dropped,
            "flushed": self.flushed,
            "audio_seconds": self.audio_seconds,
            "max_audio": self.max_audio,
            "max_events": self.max_events,
            "events_refused": self.events_refused,
        }


class Link:
    """A bounded single-consumer queue of frames with a priority control lane."""

    __slots__ = (
        "name",
        "capacity",
        "policy",
        "max_audio",
        "max_events",
        "_max_us",
        "_audio_us",
        "_events",
        "_data",
        "_control",
        "_getter",
        "_putters",
        "_closed",
        "_eos",
        "put_count",
        "got_count",
        "dropped",
        "flushed",
        "high_water",
        "events_refused",
        "_epoch",
    )

    def __init__(
        self,
        capacity: int,
        policy: Overflow = Overflow.BLOCK,
        name: str = "link",
        *,
        max_audio: float | None = None,
        max_events: int | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"link capacity must be at least 1, got {capacity}")
        if max_audio is not None and not max_audio > 0:
            raise ValueError(f"link max_audio must be a positive number of seconds, got {max_audio}")
        if max_events is not None and max_events < 1:
            raise ValueError(f"link max_events must be at least 1, got {max_events}")
        self.name = name
        self.capacity = capacity
        self.policy = policy
        self.max_audio = max_audio
        self.max_events = max(capacity, MIN_EVENTS) if max_events is None else max_events
        self._max_us = 0 if max_audio is None else max(1, round(max_audio * _US))
        self._audio_us = 0  # queued Audio in microseconds; kept only where _max_us is set
        self._events = 0  # queued data frames that are not audio
        self._data: collections.deque[Frame] = collections.deque()
        self._control: collections.deque[Frame] = collections.deque()
        self._getter: asyncio.Future[None] | None = None
        self._putters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._eos: Frame | None = None
        self.put_count = 0
        self.got_count = 0
        self.dropped = 0
        self.flushed = 0
        self.high_water = 0
        self.events_refused = 0
        self._epoch = 0  # flushes so far: a frame waiting for room across one is stale

    @property
    def consumer_waiting(self) -> bool:
        """The consumer is parked in ``get()`` and nothing is queued: it holds no
        frame, so one handed to it directly overtakes nothing."""
        return self._getter is not None and not self._data and not self._control and self._eos is None \
            and not self._closed

    def __len__(self) -> int:
        return len(self._data) + len(self._control) + (self._eos is not None)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def audio_seconds(self) -> float:
        """Seconds of Audio queued (summed as frames come and go where the link
        has ``max_audio``; counted afresh otherwise, which only reports do)."""
        if self._max_us:
            return self._audio_us / _US
        us = 0
        for f in self._data:
            if type(f) is Audio:
                us += f.pcm.shape[0] * _US // f.rate
        return us / _US

    # -- producer side -----------------------------------------------------

    def put_nowait(self, frame: Frame) -> None:
        """Queue a frame without waiting.

        Control frames always go in. Audio on a full ``drop_oldest`` link displaces
        the oldest queued audio; on a full ``block`` link raises ``LinkFull``. An
        event past ``max_events`` raises ``LinkFull`` under either policy.
        """
        if not self._offer(frame):
            raise self._refuse(frame)

    async def put(self, frame: Frame, timeout: float = DEFAULT_PUT_TIMEOUT) -> None:
        """Queue a frame, waiting up to ``timeout`` for room where the link has none."""
        if not self._offer(frame):
            await self._wait_for_room(frame, timeout)

    def _offer(self, frame: Frame) -> bool:
        """Queue ``frame`` if there is room (making room by policy); False if not."""
        if self._closed:
            raise LinkClosed(f"link {self.name} is closed")
        t = type(frame)
        data = self._data
        if t is Audio or t is Payload:
            if self._eos is not None:
                raise LinkClosed(f"link {self.name} has ended (EndOfStream queued)")
            us = 0
            if self._max_us and t is Audio:
                us = frame.pcm.shape[0] * _US // frame.rate  # type: ignore[union-attr]
            if len(data) - self._events >= self.capacity or (
                us and self._audio_us and self._audio_us + us > self._max_us
            ):
                if self.policy is Overflow.BLOCK:
                    return False
                self._drop_audio(us)
            data.append(frame)
            self._audio_us += us
        elif t is Interrupt:
            self._put_control(frame)
            return True
        elif self._eos is not None:
            raise LinkClosed(f"link {self.name} has ended (EndOfStream queued)")
        elif t is EndOfStream:
            self._eos = frame
            self.put_count += 1
            self._wake_getter()
            return True
        else:
            if self._events >= self.max_events:
                return False
            data.append(frame)
            self._events += 1
        self.put_count += 1
        if len(data) > self.high_water:
            self.high_water = len(data)
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)
        return True

    def _drop_audio(self, us: int) -> None:
        """Drop the oldest audio until a frame of ``us`` microseconds fits both bounds."""
        data = self._data
        while len(data) - self._events >= self.capacity or (
            us and self._audio_us and self._audio_us + us > self._max_us
        ):
            head = data[0]
            t = type(head)
            if t is Audio or t is Payload:
                data.popleft()
            else:  # events at the head: the oldest audio is behind them
                for i, head in enumerate(data):
                    t = type(head)
                    if t is Audio or t is Payload:
                        break
                else:
                    return  # no audio queued: nothing a bound counts (not reached)
                del data[i]
            if t is Audio and self._max_us:
                self._audio_us -= head.pcm.shape[0] * _US // head.rate  # type: ignore[union-attr]
            self.dropped += 1

    def _refuse(self, frame: Frame) -> LinkFull:
        t = type(frame)
        if t is Audio or t is Payload:
            seconds = "" if self.max_audio is None else f" or {self.max_audio:g} s of audio"
            return LinkFull(f"link {self.name} is full ({self.capacity} frames{seconds})")
        self.events_refused += 1
        return LinkFull(f"link {self.name} is full of events ({self.max_events}): its consumer has stopped")

    def _wake_getter(self) -> None:
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    async def _wait_for_room(self, frame: Frame, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        epoch = self._epoch
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                t = type(frame)
                if t is not Audio and t is not Payload:
                    self.events_refused += 1
                raise LinkTimeout(f"link {self.name} stayed full for {timeout:.3f}s")
            fut: asyncio.Future[None] = loop.create_future()
            self._putters.append(fut)
            try:
                # Not wait_for: on 3.11 it can swallow a cancellation that meets
                # the wake-up (a flush on Interrupt), and the cancelled producer
                # would go on putting frames.
                async with asyncio.timeout(remaining):
                    await fut
            except TimeoutError:
                pass
            finally:
                if not fut.done():
                    fut.cancel()
                try:
                    self._putters.remove(fut)
                except ValueError:
                    pass
            if self._closed:
                raise LinkClosed(f"link {self.name} is closed")
            if self._epoch != epoch:
                # Flushed while this frame waited: had there been room it would
                # have been queued and flushed with the rest (an interruption must
                # not let the reply's next frame in behind it).
                self.flushed += 1
                return
            if self._offer(frame):
                return

    def _put_control(self, frame: Frame) -> None:
        ctl = self._control
        if ctl:
            return  # an interruption is already pending: a second one adds nothing
        ctl.append(frame)
        self.put_count += 1
        self._wake_getter()

    # -- consumer side -----------------------------------------------------

    def get_nowait(self) -> Frame | None:
        if self._control:
            self.got_count += 1
            return self._control.popleft()
        if self._data:
            frame = self._data.popleft()
            t = type(frame)
            if t is Audio:
                if self._max_us:
                    self._audio_us -= frame.pcm.shape[0] * _US // frame.rate  # type: ignore[union-attr]
            elif t is not Payload:
                self._events -= 1
            self.got_count += 1
            if self._putters:
                self._wake_putters()
            return frame
        if self._eos is not None:
            frame, self._eos = self._eos, None
            self.got_count += 1
            return frame
        return None

    async def get(self) -> Frame:
        while True:
            frame = self.get_nowait()
            if frame is not None:
                return frame
            if self._closed:
                raise LinkClosed(f"link {self.name} is closed")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getter = fut
            try:
                await fut
            finally:
                if self._getter is fut:
                    self._getter = None

    def _wake_putters(self) -> None:
        # Every waiting producer, not one: one may wait for audio room and another
        # for event room, and the one woken must not be the one that cannot go.
        while self._putters:
            fut = self._putters.popleft()
            if not fut.done():
                fut.set_result(None)

    def flush(self) -> int:
        """Drop all queued data frames (control frames stay); return how many.

        A producer waiting for room is let go, its frame dropped with the rest
        (counted in ``flushed``, not in the return value: it never was queued)."""
        n = len(self._data)
        self._data.clear()
        self._events = 0
        self._audio_us = 0
        self.flushed += n
        self._epoch += 1
        self._wake_putters()
        return n

    def close(self) -> None:
        """Refuse further frames and wake everyone waiting on this link."""
        self._closed = True
        self._wake_getter()
        self._wake_putters()

    def stats(self) -> LinkStats:
        return LinkStats(
            self.name,
            self.capacity,
            self.policy.value,
            len(self._data),
            self.high_water,
            self.put_count,
            self.got_count,
            self.dropped,
            self.flushed,
            round(self.audio_seconds, 6),
            self.max_audio,
            self.max_events,
            self.events_refused,
        )
