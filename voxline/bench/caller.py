"""One simulated caller: a mouth that sends 20 ms frames on an absolute
schedule, ears that note when reply audio arrives, and the turns of a script
played between them, each timed at the caller.

Times are the caller's ``time.monotonic()``. A sample of what is sent is
"spoken" when the frame holding it is sent, plus its offset in the frame; a
sample of what comes back is heard when its frame arrives, plus its offset.
So voice-to-voice is (first loud sample of the reply heard) - (the sample
after the caller's last loud sample spoken), each placed within an energy
window (2.5 ms) of where it lies.
"""

from __future__ import annotations

import asyncio
import contextlib
import collections
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .lines.base import Line, LineError
from .script import Turn
from .signals import ONSET, WINDOW, speech_bounds, window_rms

__all__ = ["Utterance", "Mouth", "Ears", "Caller", "Impairment", "FRAME"]

FRAME = 0.02
WIRE_MAX = 250  # frames (5 s) the impaired wire holds; past that the network drops them
QUIET_GAP = 0.15  # s without reply audio that ends a stretch of it
REPLY_TIMEOUT = 15.0
SETTLE = 0.8  # s of quiet (both ways) between turns
BARGE_AFTER = 0.4  # s into a reply the caller talks over it
COUGH_AFTER = 0.3


@dataclass
class Utterance:
    pcm: npt.NDArray[np.int16]
    bounds: tuple[int, int] | None
    onset_at: float | None = None
    end_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def of(cls, pcm: npt.NDArray[np.int16], rate: int) -> Utterance:
        return cls(pcm, speech_bounds(pcm, rate))


@dataclass(frozen=True)
class Impairment:
    """What the network does to what the caller sends: ``loss`` and ``reorder``
    as fractions of frames, ``jitter`` the most a frame is held (uniform), seeded."""

    loss: float = 0.0
    jitter: float = 0.0
    reorder: float = 0.0
    seed: int = 0

    @property
    def active(self) -> bool:
        return bool(self.loss or self.jitter or self.reorder)


class Mouth:
    """Sends a frame every 20 ms, at t0 + k * 20 ms: speech when there is some
    queued, silence otherwise (a caller's line is never quiet of packets)."""

    def __init__(self, line: Line, impair: Impairment | None = None, seed: int = 0) -> None:
        self.line = line
        self.rate = line.rate
        self.n = int(self.rate * FRAME)
        self.queue: collections.deque[Utterance] = collections.deque()
        self._cur: Utterance | None = None
        self._pos = 0
        self.frames = 0
        self.lost = 0
        self.reordered = 0
        self.late_frames = 0
        self.impair = impair if impair is not None and impair.active and line.can_impair else None
        self._rng = random.Random((impair.seed if impair else 0) * 7919 + seed)
        self._held: tuple[float, npt.NDArray[np.int16]] | None = None
        self._wire: asyncio.Queue[tuple[float, npt.NDArray[np.int16]] | None] | None = None
        self.error: str | None = None

    def say(self, utt: Utterance) -> Utterance:
        self.queue.append(utt)
        return utt

    @property
    def speaking(self) -> bool:
        return self._cur is not None or bool(self.queue)

    def _next(self, now: float) -> npt.NDArray[np.int16]:
        out = np.zeros(self.n, np.int16)
        filled = 0
        while filled < self.n:
            if self._cur is None:
                if not self.queue:
                    break
                self._cur, self._pos = self.queue.popleft(), 0
            cur = self._cur
            take = min(self.n - filled, len(cur.pcm) - self._pos)
            out[filled : filled + take] = cur.pcm[self._pos : self._pos + take]
            if cur.bounds is not None:
                start, end = cur.bounds
                if cur.onset_at is None and self._pos <= start < self._pos + take:
                    cur.onset_at = now + (filled + start - self._pos) / self.rate
                if cur.end_at is None and self._pos < end <= self._pos + take:
                    cur.end_at = now + (filled + end - self._pos) / self.rate
            self._pos += take
            filled += take
            if self._pos >= len(cur.pcm):
                cur.done.set()
                self._cur = None
        return out

    async def run(self, stop: asyncio.Event) -> None:
        if self.impair is not None:
            self._wire = asyncio.Queue(WIRE_MAX)
            sender = asyncio.ensure_future(self._impaired_sender())
        t0 = time.monotonic()
        k = 0
        try:
            while not stop.is_set():
                due = t0 + k * FRAME
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.monotonic()
                if now - due > 0.1:  # this loop stalled: re-anchor rather than burst
                    self.late_frames += 1
                    t0, k = now, 0
                pcm = self._next(now)
                if self._wire is not None:
                    self._impaired(now, pcm)
                else:
                    await self.line.send(pcm)
                self.frames += 1
                k += 1
        except LineError as exc:
            self.error = str(exc)
        finally:
            if self._wire is not None:
                if self._wire.full():
                    sender.cancel()  # it stopped taking frames (its line failed): nothing left to send
                else:
                    self._wire.put_nowait(None)
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    def _impaired(self, now: float, pcm: npt.NDArray[np.int16]) -> None:
        imp, rng = self.impair, self._rng
        assert imp is not None and self._wire is not None
        if rng.random() < imp.loss:
            self.lost += 1
            return
        depart = now + rng.uniform(0, imp.jitter)
        if self._held is not None:
            held, self._held = self._held, None
            self._put((max(depart, held[0]), pcm))
            self._put((max(depart, held[0]), held[1]))  # after the frame that followed it
            return
        if rng.random() < imp.reorder:
            self.reordered += 1
            self._held = (depart, pcm)
            return
        self._put((depart, pcm))

    def _put(self, item: tuple[float, npt.NDArray[np.int16]]) -> None:
        assert self._wire is not None
        if self._wire.full():  # the line is WIRE_MAX frames behind: the network drops it
            self.lost += 1
        else:
            self._wire.put_nowait(item)

    async def _impaired_sender(self) -> None:
        assert self._wire is not None
        last = 0.0
        while (item := await self._wire.get()) is not None:
            depart, pcm = item
            depart = max(depart, last)  # one socket: a held frame holds those behind it
            delay = depart - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            last = depart
            try:
                await self.line.send(pcm)
            except LineError as exc:
                self.error = str(exc)
                return


class Ears:
    """What the caller hears: loud stretches of the reply audio, by time."""

    def __init__(self, keep: int = 20000) -> None:
        self.loud: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)  # (first, last)
        self.clears: list[float] = []
        self.events: list[dict[str, Any]] = []
        self.latency: list[dict[str, Any]] = []
        self.frames = 0
        self.samples = 0
        self.last_arrival: float | None = None
        self.gaps = 0  # arrivals more than 3 frames after the previous, inside a reply
        self.closed_reason: str | None = None
        self.capture: list[tuple[float, int, npt.NDArray[np.int16]]] | None = None
        self._wake = asyncio.Event()

    def heard(self, pcm: npt.NDArray[np.int16], rate: int, arrival: float) -> None:
        self.frames += 1
        self.samples += len(pcm)
        if self.capture is not None:
            self.capture.append((arrival, rate, pcm))
        rms = window_rms(pcm, rate)
        loud = np.nonzero(rms > ONSET)[0]
        if len(loud):
            w = WINDOW
            first = arrival + int(loud[0]) * w
            last = arrival + min((int(loud[-1]) + 1) * w, len(pcm) / rate)
            if self.loud and self.last_arrival is not None and arrival - self.last_arrival > 3 * FRAME \
                    and first - self.loud[-1][1] < QUIET_GAP:
                self.gaps += 1
            self.loud.append((first, last))
            self._wake.set()
        self.last_arrival = arrival

    def cleared(self, at: float) -> None:
        self.clears.append(at)
        self._wake.set()

    def event(self, event: dict[str, Any]) -> None:
        if event.get("kind") == "latency":
            self.latency.append(event)
        elif len(self.events) < 2000:
            self.events.append(event)

    def closed(self, reason: str) -> None:
        self.closed_reason = reason
        self._wake.set()

    def onset_after(self, t: float) -> float | None:
        for first, last in self.loud:
            if last > t:
                return max(first, t) if first <= t else first
        return None

    def stop_after(self, t: float, now: float) -> float | None:
        """End of the reply audio heard after ``t``: its last loud sample before a
        quiet gap of QUIET_GAP (None while it goes on)."""
        prev: float | None = None
        for first, last in self.loud:
            if last <= t:
                continue
            if prev is not None and first - prev >= QUIET_GAP:
                return prev
            prev = last
        if prev is None:
            return t if now - t >= QUIET_GAP else None  # nothing more was heard after t
        return prev if now - prev >= QUIET_GAP else None

    def loud_between(self, a: float, b: float) -> bool:
        return any(last > a and first < b for first, last in self.loud)

    def quiet_since(self) -> float:
        return self.loud[-1][1] if self.loud else 0.0

    async def wait(self, timeout: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass


class _CallOver(Exception):
    """The line went away mid-turn."""


class Caller:
    """Plays ``turns`` over ``line`` and returns one row per turn."""

    def __init__(self, index: int, line: Line, ears: Ears, turns: list[Turn], impair: Impairment | None = None,
                 reply_timeout: float = REPLY_TIMEOUT) -> None:
        self.index = index
        self.line = line
        self.ears = ears
        self.turns = turns
        self.mouth = Mouth(line, impair, seed=index)
        self.reply_timeout = reply_timeout
        self.rows: list[dict[str, Any]] = []
        self.on_turn: Any = None  # called after each turn (progress)

    async def run(self) -> list[dict[str, Any]]:
        stop = asyncio.Event()
        mouth = asyncio.ensure_future(self.mouth.run(stop))
        try:
            await self._settle(0.5)
            for i, turn in enumerate(self.turns, start=1):
                if self.mouth.error or self.ears.closed_reason:
                    break
                try:
                    row = await self._turn(i, turn)
                except _CallOver:
                    break
                self.rows.append(row)
                if self.on_turn is not None:
                    self.on_turn(row)
        finally:
            stop.set()
            await mouth
        return self.rows

    async def _say(self, pcm: npt.NDArray[np.int16]) -> Utterance:
        utt = self.mouth.say(Utterance.of(pcm, self.line.rate))
        if not await self._until(utt.done.is_set, len(pcm) / self.line.rate + 5.0):
            raise _CallOver(self.mouth.error or self.ears.closed_reason or "the caller could not speak")
        return utt

    async def _until(self, check: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not check():
            left = deadline - time.monotonic()
            if left <= 0 or self.ears.closed_reason or self.mouth.error:
                return bool(check())
            await self.ears.wait(min(left, 0.05))
        return True

    async def _settle(self, quiet: float, timeout: float = 30.0) -> None:
        """Wait until nothing loud has been heard for ``quiet`` s (the reply is over)."""
        await self._until(lambda: time.monotonic() - self.ears.quiet_since() >= quiet, timeout)

    async def _reply_to(self, utt: Utterance) -> float | None:
        end = utt.end_at
        if end is None:
            return None
        ok = await self._until(lambda: self.ears.onset_after(end) is not None, self.reply_timeout)
        return self.ears.onset_after(end) if ok else None

    async def _turn(self, i: int, turn: Turn) -> dict[str, Any]:
        rate = self.line.rate
        ask = await self._say(turn.pcm(rate))
        row: dict[str, Any] = {"call": self.index, "turn": i, "kind": turn.kind, "text": turn.text,
                               "speech_end": ask.end_at}
        if turn.voice:
            row["voice"] = turn.voice
        onset = await self._reply_to(ask)
        row["reply_at"] = onset
        row["v2v_ms"] = None if onset is None or ask.end_at is None else round((onset - ask.end_at) * 1000, 1)
        row["answered"] = onset is not None
        if onset is not None and turn.kind == "bargein":
            row["bargein"] = await self._barge_in(onset, turn)
        elif onset is not None and turn.kind == "cough":
            row["cough"] = await self._cough(onset)
        await self._settle(SETTLE)
        if turn.expect and self.ears.capture is not None and onset is not None:
            row["reply_audio"] = (onset, time.monotonic())
        return row

    async def _barge_in(self, onset: float, turn: Turn) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, onset + BARGE_AFTER - time.monotonic()))
        if time.monotonic() - self.ears.quiet_since() >= QUIET_GAP:
            return {"talked_over": False}  # the reply was over before the caller could talk over it
        clears_before = len(self.ears.clears)
        utt = await self._say(turn.interruption(self.line.rate))
        out: dict[str, Any] = {"talked_over": True}
        start = utt.onset_at
        assert start is not None
        await self._until(lambda: self.ears.stop_after(start, time.monotonic()) is not None, 5.0)
        stop = self.ears.stop_after(start, time.monotonic())
        out["stop_ms"] = None if stop is None else round(max(0.0, stop - start) * 1000, 1)
        # Stopped while the caller still talked: otherwise the reply simply ran out.
        out["stopped"] = stop is not None and utt.end_at is not None and stop < utt.end_at
        clears = self.ears.clears[clears_before:]
        out["clear_ms"] = round((clears[0] - start) * 1000, 1) if clears else None
        answer = await self._reply_to(utt)
        out["answered"] = answer is not None
        out["answer_v2v_ms"] = None if answer is None or utt.end_at is None else round((answer - utt.end_at) * 1000, 1)
        return out

    async def _cough(self, onset: float) -> dict[str, Any]:
        from .signals import cough

        await asyncio.sleep(max(0.0, onset + COUGH_AFTER - time.monotonic()))
        if time.monotonic() - self.ears.quiet_since() >= QUIET_GAP:
            return {"over_reply": False}
        rate = self.line.rate
        utt = await self._say(cough(0.08, rate))
        end = utt.end_at or time.monotonic()
        # Not stopped for good: reply audio is heard again after the cough (a pause may come between).
        resumed = await self._until(lambda: self.ears.loud_between(end + 0.3, float("inf")), 4.0)
        return {"over_reply": True, "continued": resumed}
