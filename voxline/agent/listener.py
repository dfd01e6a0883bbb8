"""The caller's side of a turn: what goes to the recogniser, and when.

Caller audio is sent only while the caller speaks, starting with the pre-roll
before the VAD's onset, so a batch recogniser decodes the utterance and not the
silence around it. On ``SpeechPaused`` the recogniser is finalized speculatively
and later audio is held: if the turn really ends, the held silence is dropped
(the second finalize is empty and instant); if speech resumes, the held audio is
sent and the recogniser's pieces are joined by the turn machine.

A recogniser that decodes each finalized stretch of audio as a whole
(``whole_utterances``: whisper) would join two independent decodes, each cut
mid-sentence. For it, speech resuming after a pause re-sends the whole
utterance so far, and the next final replaces the speculative one
(``Transcribed(result, replaces=True)``). A short pause is then cheap: a false
one costs a decode (~0.1 s of CPU), not accuracy. A streaming recogniser
(Deepgram) keeps the join: re-sent audio would be transcribed twice.

The ``Listener`` is the caller's side of the ``Assistant``: what it has to say
(a result, a failure) it hands on as actions (actions.py), from the task that
reads the recogniser.

Invented turns: a final transcript is judged before it is handed on
(providers/stt/guard.py). The recogniser judges its own decode; here it is
judged against the turn's voiced length (from the VAD's onset to its end: more
words than that speech can carry are invented) and against what the bot said
just before (``bot_spoke``: its own voice heard back). A rejected transcript is
reported as a ``rejected`` event, counted in ``rejected``, and handed on with no
words, so the turn machine treats it as a cough: nothing is answered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses

import numpy as np

from voxline.media.frames import Audio, SpeechEnded, SpeechPaused, SpeechStarted
from voxline.providers.base import (
    PCM,
    Deadlines,
    ProviderError,
    Recognition,
    SpeechToText,
    Transcription,
)
from voxline.providers.stt.guard import GuardConfig, judge_turn

from .actions import Perform, RecognitionFailed, Transcribed
from .events import AgentEvent
from .tasks import TaskSet

__all__ = ["Listener"]

ONSET_MARGIN = 0.1  # seconds of audio before the VAD's onset that go to the recogniser
RESUME_MARGIN = 0.05  # seconds kept after the end of speech that resumed after a pause
BOT_SAID_KEPT = 2  # the bot's latest utterances an echo is compared with


class Listener:
    def __init__(
        self,
        stt: SpeechToText,
        *,
        preroll: float,
        max_utterance: float,
        speculative: bool,
        deadlines: Deadlines,
        tasks: TaskSet,
        perform: Perform,
        guard: GuardConfig | None = None,
    ) -> None:
        self.stt = stt
        self.rate = stt.sample_rate
        self.preroll = preroll
        self.max_samples = int(max_utterance * self.rate)
        self.speculative = speculative
        self.deadlines = deadlines
        self._tasks = tasks
        self._perform = perform
        self._rec: Recognition | None = None
        self._results: asyncio.Task[None] | None = None
        self._preroll: collections.deque[Audio] = collections.deque()
        self._listening = False
        self._sent = 0  # samples sent this utterance
        self._paused_at: int | None = None  # pts where the caller paused (speculative finalize)
        self._held: list[Audio] = []  # caller audio since that pause, not yet sent
        self._last: tuple[int, float] = (0, 0.0)  # (end pts, arrival) of the newest audio
        self.whole = bool(getattr(stt, "whole_utterances", False))
        self._utterance: list[PCM] = []  # sent this utterance (whole-utterance recognisers)
        self._resent = False  # the utterance was sent again since the last finalize
        self._replaces: collections.deque[bool] = collections.deque()  # per pending finalize
        self.too_long = 0  # frames not sent: the utterance passed max_utterance
        self.guard = guard or GuardConfig()
        self._bot_said: collections.deque[str] = collections.deque(maxlen=BOT_SAID_KEPT)
        self._turn = 0
        self._over_bot = False  # the current turn began while the bot's reply played
        self._voiced = (0, 0)  # (onset pts, end pts) of the current or last turn, in samples
        self.rejected: dict[str, int] = {}  # transcripts not handed on, by the guard's first word

    @property
    def connected(self) -> bool:
        return self._rec is not None

    async def open(self) -> None:
        if self._rec is not None:
            return
        try:
            self._rec = await asyncio.wait_for(self.stt.open(self.deadlines), self.deadlines.connect)
        except (ProviderError, TimeoutError, OSError) as exc:
            self.fail(exc)
            return
        self._results = self._tasks.spawn(self._read(self._rec), "stt-results")

    async def audio(self, frame: Audio) -> None:
        self._last = (frame.pts + frame.samples, frame.arrival)
        if not self._listening:
            self._preroll.append(frame)
            limit = int(self.preroll * self.rate)
            while self._preroll and frame.pts - self._preroll[0].pts > limit:
                self._preroll.popleft()
            return
        if self._sent > self.max_samples:
            self.too_long += 1
            return
        if self._paused_at is not None:
            if len(self._held) * frame.samples < self.max_samples:
                self._held.append(frame)
            return
        await self._send(frame.pcm)

    async def started(self, ev: SpeechStarted, *, over_bot: bool = False) -> None:
        """The caller started speaking; ``over_bot``: while the bot's reply played."""
        if self._rec is None:
            await self.open()
        self._listening = True
        self._over_bot = over_bot
        self._turn = ev.turn
        self._voiced = (ev.pts, ev.pts)
        self._sent = 0
        self._utterance = []
        self._held, self._paused_at = [], None
        start = ev.pts - int(ONSET_MARGIN * self.rate)  # a little before the onset the VAD found
        preroll = [f.pcm for f in self._preroll if f.pts + f.samples > start]
        self._preroll.clear()
        if preroll:
            await self._send(np.concatenate(preroll))

    async def paused(self, ev: SpeechPaused) -> None:
        if not (self.speculative and self._listening and self._rec is not None):
            return
        if self._paused_at is not None:
            await self._release(ev.pts)  # it spoke again, and paused again
        self._paused_at = ev.pts
        self._tasks.spawn(self._finalize_quietly(), "stt-speculative")

    @property
    def pausing(self) -> bool:
        """Finalized speculatively at a pause, and the turn has not ended yet."""
        return self._paused_at is not None

    def resumed(self, ev: SpeechEnded) -> bool:
        """The speech went on after the speculative pause (so its transcript is partial)."""
        return self._paused_at is not None and ev.pts > self._paused_at

    async def ended(self, ev: SpeechEnded) -> None:
        self._voiced = (self._voiced[0], max(self._voiced[0], ev.pts))
        if self._paused_at is not None:
            # Speech after the speculative pause goes to the recogniser; silence does not.
            resumed = self.resumed(ev)
            await self._release(ev.pts + int(RESUME_MARGIN * ev.rate) if resumed else None)
        self._listening = False

    def speech_end_time(self, ev: SpeechEnded) -> float:
        """When the speech ended in the audio, from the newest frame's arrival:
        voice-to-voice counts the VAD's hangover, as the caller does."""
        pts, arrival = self._last
        return arrival - max(0, pts - ev.pts) / ev.rate

    async def finalize(self) -> bool:
        """Ask for the final transcript of what was sent; False if there is no recogniser."""
        rec = self._rec
        if rec is None:
            return False
        self._replaces.append(self._resent)
        self._resent = False
        try:
            await asyncio.wait_for(rec.finalize(), self.deadlines.first_result)
        except (ProviderError, TimeoutError, OSError) as exc:
            self.fail(exc)
        return True

    def fail(self, exc: BaseException) -> None:
        """Drop the recogniser (the next utterance opens a new one) and report."""
        rec, self._rec = self._rec, None
        self._replaces.clear()
        if self._results is not None and self._results is not asyncio.current_task():
            self._results.cancel()
        if rec is not None:
            self._tasks.spawn(self._close(rec), "stt-close")
        self._perform(RecognitionFailed(exc))

    async def close(self) -> None:
        if self._results is not None:
            self._results.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._results
        if self._rec is not None:
            await self._close(self._rec)
            self._rec = None

    async def _send(self, pcm: PCM) -> None:
        rec = self._rec
        if rec is None:
            return
        try:
            # Per frame: a timeout scope, not wait_for (a task per frame on 3.11).
            async with asyncio.timeout(self.deadlines.idle):
                await rec.send(pcm)
            self._sent += len(pcm)
            if self.whole:
                self._utterance.append(pcm)
        except (ProviderError, TimeoutError, OSError) as exc:
            self.fail(exc)

    async def _release(self, until: int | None) -> None:
        """Send held audio before ``until`` (speech went on after the pause); drop the rest."""
        held, self._held = self._held, []
        self._paused_at = None
        if until is not None:
            keep = [f.pcm for f in held if f.pts < until]
            if self.whole and self._utterance:
                # Decode the utterance again from its start: its next final replaces the speculative one.
                keep = [*self._utterance, *keep]
                self._utterance = []
                self._sent = 0
                self._resent = True
            if keep:
                await self._send(np.concatenate(keep))

    async def _finalize_quietly(self) -> None:
        await self.finalize()

    async def _read(self, rec: Recognition) -> None:
        try:
            async for result in rec.results():
                replaces = bool(result.final and self._replaces and self._replaces.popleft())
                if result.final:
                    result = self._judge(result)
                self._perform(Transcribed(result, replaces))
        except asyncio.CancelledError:
            raise
        except (ProviderError, TimeoutError, OSError) as exc:
            self.fail(exc)

    def bot_spoke(self, text: str) -> None:
        """The bot said ``text`` (a reply, a greeting): its echo is not a caller turn."""
        if text.strip():
            self._bot_said.append(text)

    def voiced_seconds(self) -> float:
        """The turn's span from the VAD's onset to its end (to now while it speaks)."""
        start, end = self._voiced
        if self._listening:
            end = max(end, self._last[0])
        return max(0, end - start) / self.rate

    def _judge(self, result: Transcription) -> Transcription:
        """A final the recogniser or the turn's own measures reject: reported,
        counted, and handed on with no words."""
        reason = result.rejected or judge_turn(
            result.text, voiced_seconds=self.voiced_seconds(), bot_said=" ".join(self._bot_said),
            config=self.guard, over_bot=self._over_bot,
        )
        if not reason:
            return result
        heard = result.heard or result.text
        key = reason.split(" ", 1)[0]
        self.rejected[key] = self.rejected.get(key, 0) + 1
        self._perform(AgentEvent("rejected", self._turn, {"text": heard, "reason": reason, "who": "caller"}))
        return dataclasses.replace(result, text="", rejected=reason, heard=heard)

    async def _close(self, rec: Recognition) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(rec.aclose(), self.deadlines.connect)
