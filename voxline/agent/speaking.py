"""The assistant's speaking side: drafts, and a reply from the LLM to the wire.

``Speaking`` is the half of ``Assistant`` that produces replies: the LLM's
tokens go through the sentence splitter into a bounded queue, TTS voices each
piece while the rest is written, and the audio goes out (or is held, for a
draft or a paused reply). Drafts answer a speculative transcript before the
caller's turn has ended; the turn-taking half (``assistant.py``) adopts or
discards them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import numpy as np

from voxline.media.frames import Audio, Frame, Mark
from voxline.providers.base import PCM, LanguageModel, ProviderError, TextToSpeech

from .context import Conversation
from .reply import Reply
from .sentences import SentenceSplitter
from .turns import Event, State, TurnMachine

if TYPE_CHECKING:
    from voxline.media.stage import Emit, StageContext

    from .assistant import AssistantConfig

__all__ = ["REPLY_END", "Speaking", "trim_leading_silence"]

log = logging.getLogger(__name__)

SENTENCE_QUEUE = 8  # sentences between the LLM and TTS: backpressure on the LLM

REPLY_END = "reply-end"
LEAD_LEVEL = 32  # int16 peak below which a reply's leading audio is silence (-60 dBFS)
LEAD_KEEP = 0.002  # seconds kept before the first sound


def trim_leading_silence(pcm: PCM, rate: int) -> PCM:
    """Drop the silence a voice puts before a reply's first sound (Piper: ~40 ms):
    it would only add to the caller's wait. Empty if ``pcm`` is all silence."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > LEAD_LEVEL)
    if not len(loud):
        return pcm[:0]
    return pcm[max(0, int(loud[0]) - int(LEAD_KEEP * rate)) :]


class Speaking:
    """Drafts and replies; mixed into ``Assistant``, which owns the state below."""

    config: AssistantConfig
    conversation: Conversation
    machine: TurnMachine
    llm: LanguageModel
    tts: TextToSpeech
    fallback_tts: TextToSpeech
    drafts: dict[str, int]
    _ctx: StageContext | None
    _emit: Emit | None
    _reply: Reply | None
    _draft: Reply | None
    _prefill: asyncio.Task[None] | None

    if TYPE_CHECKING:  # the turn-taking half's, called from here

        def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...
        def _report(self, kind: str, turn: int, data: dict[str, object]) -> None: ...
        def _count(self, what: str) -> None: ...
        def _apply(self, actions: list[Any]) -> None: ...
        def _now(self) -> float: ...
        def _mark(self, reply: Reply, name: str) -> None: ...
        def _cancel_reply(self) -> None: ...
        async def _release(self, reply: Reply, position: int) -> None: ...

    # -- drafts --------------------------------------------------------------

    def _start_draft(self, turn: int, text: str) -> None:
        self._discard_draft()
        if self._prefill is not None:
            self._prefill.cancel()  # its prompt is evaluated already; not its one token
        draft = Reply(turn, int(self.config.max_held_audio * self.tts.sample_rate), draft=text)
        messages = [*self.conversation.messages(), {"role": "user", "content": text}]
        draft.task = self._spawn(self._answer(draft, messages), f"draft-{turn}")
        self._draft = draft
        self.drafts["started"] += 1
        self._report("reply", turn, {"draft": True, "text": text})

    def _discard_draft(self) -> None:
        draft, self._draft = self._draft, None
        if draft is None:
            return
        if draft.task is not None and not draft.task.done():
            draft.task.cancel()
        self.drafts["discarded"] += 1

    def _adopt(self, draft: Reply) -> None:
        """The turn ended as the draft assumed: it becomes the reply, and what it
        has produced so far plays now."""
        self._draft = None
        if self._reply is not None:
            self._cancel_reply()
        text, draft.draft = draft.draft or "", None
        self.conversation.add_user(text)
        self._reply = draft
        self.drafts["adopted"] += 1
        if self._ctx is not None:
            now = self._now()
            for name, at in draft.marks.items():  # work done ahead counts from now
                self._ctx.mark(draft.turn, name, max(at, now))
        if draft.done:
            self._report("transcript", draft.turn, {"text": draft.full, "final": True, "who": "agent"})
        self._spawn(self._release(draft, 0), "adopt")

    # -- the reply -----------------------------------------------------------

    def _start_reply(self, turn: int, text: str, *, say: bool = False, offline: bool = False) -> None:
        self._discard_draft()
        if self._reply is not None:
            self._cancel_reply()
        reply = Reply(turn, int(self.config.max_held_audio * self.tts.sample_rate))
        self._reply = reply
        if say:
            coro = self._speak_text(reply, text, offline)
        else:
            self.conversation.add_user(text)
            coro = self._answer(reply, self.conversation.messages())
        reply.task = self._spawn(coro, f"reply-{turn}")

    async def _answer(self, reply: Reply, messages: list) -> None:  # type: ignore[type-arg]
        queue: asyncio.Queue[str | None] = asyncio.Queue(SENTENCE_QUEUE)
        produced: list[str] = []
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._generate(reply, messages, queue, produced))
                tg.create_task(self._voice(reply, queue, self.tts))
        except* (ProviderError, TimeoutError, OSError) as group:
            exc = group.exceptions[0]
            self._count("llm" if "llm" in str(exc).lower() else "reply")
            log.warning("reply failed: %s", exc, extra={"turn_id": reply.turn})
            self._report("error", reply.turn, {"provider": "reply", "error": str(exc)})
            await self._apologise(reply)
        reply.full = "".join(produced).strip()
        reply.done = True
        if self._reply is reply:
            self._report("transcript", reply.turn, {"text": reply.full, "final": True, "who": "agent"})
        if not reply.hold:
            await self._emit_frame(Mark(REPLY_END, self._now(), reply.turn))

    async def _apologise(self, reply: Reply) -> None:
        try:
            await self._speak(reply, self.config.apology, self.fallback_tts)
        except (ProviderError, TimeoutError, OSError) as exc:
            # Even the offline voice failed: nothing more to say this turn.
            log.error("offline voice failed: %s", exc, extra={"turn_id": reply.turn})

    async def _generate(
        self,
        reply: Reply,
        messages: list,  # type: ignore[type-arg]
        queue: asyncio.Queue[str | None],
        produced: list[str],
    ) -> None:
        splitter = SentenceSplitter()
        wait = self.config.first_piece_wait
        first_at: float | None = None
        try:
            async for piece in self.llm.stream(messages, self.config.deadlines):
                now = self._now()
                if first_at is None:
                    self._mark(reply, "first_token")
                    first_at = now
                produced.append(piece)
                hurry = wait is not None and reply.pieces == 0 and now - first_at >= wait
                for sentence in splitter.feed(piece, hurry):
                    await self._queue_sentence(reply, queue, sentence)
            for sentence in splitter.flush():
                await self._queue_sentence(reply, queue, sentence)
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    async def _queue_sentence(self, reply: Reply, queue: asyncio.Queue[str | None], sentence: str) -> None:
        if reply.pieces == 0:
            self._mark(reply, "first_sentence")
        reply.pieces += 1
        await asyncio.wait_for(queue.put(sentence), self.config.deadlines.total)

    async def _voice(self, reply: Reply, queue: asyncio.Queue[str | None], tts: TextToSpeech) -> None:
        while True:
            sentence = await asyncio.wait_for(queue.get(), self.config.deadlines.total)
            if sentence is None:
                return
            await self._speak(reply, sentence, tts)

    async def _speak_text(self, reply: Reply, text: str, offline: bool) -> None:
        tts = self.fallback_tts if offline else self.tts
        self._mark(reply, "first_sentence")
        try:
            await self._speak(reply, text, tts)
        except (ProviderError, TimeoutError, OSError) as exc:
            self._count("tts")
            self._report("error", reply.turn, {"provider": "tts", "error": str(exc)})
            if tts is not self.fallback_tts:
                await self._apologise(reply)
        reply.full = text
        reply.done = True
        self._report("transcript", reply.turn, {"text": text, "final": True, "who": "agent"})
        if not reply.hold:
            await self._emit_frame(Mark(REPLY_END, self._now(), reply.turn))

    async def _speak(self, reply: Reply, text: str, tts: TextToSpeech) -> None:
        reply.start_piece(text)
        async for pcm in tts.synthesize(text, self.config.deadlines):
            if tts.sample_rate != self.tts.sample_rate:
                from voxline.media.resample import resample_chunk

                pcm = resample_chunk(pcm, tts.sample_rate, self.tts.sample_rate)
            await self._out(reply, pcm)

    async def _out(self, reply: Reply, pcm: PCM) -> None:
        if reply.samples == 0:
            pcm = trim_leading_silence(pcm, self.tts.sample_rate)
        if not len(pcm):
            return
        if reply.samples == 0:
            self._mark(reply, "first_tts_audio")
        reply.add(pcm)
        if reply.hold:
            return
        if self.machine.state is State.THINKING:
            self._apply(self.machine.handle(Event.REPLY_AUDIO))
        await self._emit_frame(Audio(pcm, self.tts.sample_rate, 0, self._now(), reply.turn))

    async def _emit_frame(self, frame: Frame) -> None:
        if self._emit is not None:
            await self._emit(frame)

