"""The assistant: listen, understand, think, speak, and yield the floor.

A worker stage between the caller's side of the pipeline (audio and VAD events
in) and the bot's side (reply audio out, towards resampling and playout). It
drives ``TurnMachine`` and performs its actions:

- caller audio goes to the recogniser only while the caller speaks, with the
  pre-roll before the VAD's onset, so a batch engine decodes just the utterance;
- a final transcript starts a reply task (``speaking.py``, the half of this
  class that produces replies): the LLM streams into a sentence splitter,
  pieces go through a bounded queue to TTS, and TTS audio is emitted while the
  rest is still being generated;
- preemptive drafts: the transcript of a speculative finalize (at the VAD's
  pause, before the turn has ended) starts the reply at once, as a draft whose
  audio and marks are held. If the turn ends with nothing more said, the draft
  is adopted and its held audio plays at once; if the caller goes on, it is
  cancelled unheard and the context never sees it;
- barge-in pauses playout at once (the pipeline's interrupt) and holds the reply;
  confirmed, it cancels LLM and TTS and the context keeps only what the caller
  heard (from the playout position); not confirmed, the reply resumes from there;
- a provider failure costs that turn: the caller hears an apology in the offline
  voice, and the call goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from voxline.media.frames import (
    Audio,
    Dtmf,
    Frame,
    Mark,
    SpeechEnded,
    SpeechPaused,
    SpeechStarted,
)
from voxline.media.link import Overflow
from voxline.media.stage import Emit, StageContext
from voxline.providers.base import (
    Deadlines,
    LanguageModel,
    ProviderError,
    SpeechToText,
    TextToSpeech,
    Transcription,
)

from .context import Conversation
from .events import AgentEvent, Observer
from .listener import Listener
from .prompts import APOLOGY, GREETING, SYSTEM_PROMPT
from .reply import Reply
from .speaking import REPLY_END, Speaking, trim_leading_silence
from .turns import Action, Event, State, TurnMachine

__all__ = ["AgentEvent", "Assistant", "AssistantConfig", "trim_leading_silence"]

log = logging.getLogger(__name__)

PREPARE_TIMEOUT = 10.0  # seconds for the LLM to evaluate the conversation between turns
# At most one prefill of the caller's words per this many seconds: each is ~0.1-0.2 s
# of the LLM, and one still running when the caller pauses slows the decode of
# their last words on 2 cores.
PREFILL_INTERVAL = 0.6


@dataclass(frozen=True, slots=True)
class AssistantConfig:
    system_prompt: str = SYSTEM_PROMPT
    greeting: str | None = GREETING
    apology: str = APOLOGY
    max_context_tokens: int = 1024
    barge_in_confirm: float = 0.6  # seconds of caller speech that make a pause an interruption
    preroll: float = 0.3  # audio before the VAD's onset that goes to the recogniser
    max_utterance: float = 30.0
    max_held_audio: float = 120.0  # reply audio kept for a resume after a false barge-in
    # On SpeechPaused, finalize the recogniser while the VAD's hangover runs and
    # hold later audio; the turn's end then finds the transcript (nearly) ready.
    speculative: bool = True
    # Start the reply on that speculative transcript, held until the turn ends.
    preemptive: bool = True
    # Once the first token is this old and no clause has ended, the first piece
    # may end at a phrase boundary (see agent/sentences.py); None: never.
    first_piece_wait: float | None = 0.1
    # After each reply, let the LLM evaluate the conversation so far (llama.cpp:
    # the next turn's prompt then starts warm).
    prepare_between_turns: bool = True
    # While the caller speaks, let the LLM evaluate their words so far (from the
    # recogniser's interim results), so the prompt of the reply is mostly warm.
    prefill_interims: bool = True
    deadlines: Deadlines = field(default_factory=Deadlines)
    # Budgets per turn mark (seconds); see voxline.media.budget.
    budget_transcript: float = 0.40
    budget_first_token: float = 0.25
    budget_first_sentence: float = 0.25
    budget_first_tts_audio: float = 0.15


class Assistant(Speaking):
    """The conversational agent as a pipeline worker."""

    name = "agent"
    inbox_capacity = 100  # 2 s of 20 ms caller frames
    overflow = Overflow.DROP_OLDEST

    def __init__(
        self,
        stt: SpeechToText,
        llm: LanguageModel,
        tts: TextToSpeech,
        *,
        fallback_tts: TextToSpeech | None = None,
        heard: Callable[[int], float] | None = None,
        vad: object | None = None,
        endpointing: dict[State, object] | None = None,
        config: AssistantConfig | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.stt = stt
        self.llm = llm
        self.tts = tts
        self.fallback_tts = fallback_tts or tts
        self.config = config or AssistantConfig()
        cfg = self.config
        self.marks = (
            ("vad_end", 0.0),
            ("transcript", cfg.budget_transcript),
            ("first_token", cfg.budget_first_token),
            ("first_sentence", cfg.budget_first_sentence),
            ("first_tts_audio", cfg.budget_first_tts_audio),
        )
        self.latency = sum(s for _, s in self.marks)
        self.machine = TurnMachine()
        self.conversation = Conversation(cfg.system_prompt, cfg.max_context_tokens)
        self._heard = heard
        self._vad = vad
        self._endpointing = endpointing or {}
        self._observer = observer
        self._ctx: StageContext | None = None
        self._emit: Emit | None = None
        self._confirm: asyncio.Task[None] | None = None
        self._reply: Reply | None = None
        self._draft: Reply | None = None  # a reply to a speculative transcript, held
        self._prefill: asyncio.Task[None] | None = None  # the LLM evaluating interim words
        self._prefill_at = float("-inf")
        self.prefills = 0
        self.drafts = {"started": 0, "adopted": 0, "discarded": 0}
        self._tasks: set[asyncio.Task[None]] = set()
        self._turn = 0
        self._offline_next = False  # the next START_SAY speaks in the offline voice
        self.errors: dict[str, int] = {}
        self.listener = Listener(
            stt, preroll=cfg.preroll, max_utterance=cfg.max_utterance, speculative=cfg.speculative,
            deadlines=cfg.deadlines, on_result=self._on_result, on_failure=self._stt_failed,
            spawn=self._spawn,
        )

    # -- pipeline hooks ------------------------------------------------------

    def bind(self, ctx: StageContext) -> None:
        self._ctx = ctx

    def attach_emit(self, emit: Emit) -> None:
        self._emit = emit
        # Open the recogniser now, so the first utterance does not wait on a connect.
        self._spawn(self.listener.open(), "stt-open")
        if self.config.greeting:
            self.say(self.config.greeting)

    async def process(self, frame: Frame, emit: Emit) -> None:
        t = type(frame)
        if t is Audio:
            await self.listener.audio(frame)  # type: ignore[arg-type]
        elif t is SpeechStarted:
            await self._on_speech_started(frame)  # type: ignore[arg-type]
        elif t is SpeechPaused:
            self._discard_draft()  # a second pause: the transcript will grow
            await self.listener.paused(frame)  # type: ignore[arg-type]
        elif t is SpeechEnded:
            await self._on_speech_ended(frame)  # type: ignore[arg-type]
        elif t is Dtmf:
            self._report("dtmf", frame.turn, {"digit": frame.digit})  # type: ignore[union-attr]

    async def close(self) -> None:
        tasks = [t for t in (self._confirm,) if t is not None]
        tasks += list(self._tasks)
        if self._draft is not None and self._draft.task is not None:
            tasks.append(self._draft.task)
        if self._reply is not None and self._reply.task is not None:
            tasks.append(self._reply.task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.listener.close()

    def on_mark(self, mark: Mark, at: float) -> None:
        """Playout reached ``mark`` (wire this to ``Playout(on_mark=...)``)."""
        reply = self._reply
        if mark.name == REPLY_END and reply is not None and mark.turn == reply.turn:
            self._reply = None  # played in full: nothing left to pause, resume or cancel
            self.conversation.add_assistant(reply.full)
            heard_text = self._heard_text(reply, complete=True)
            self._report("heard", reply.turn, {"text": heard_text, "complete": True})
            self._close_turn(reply.turn)
            self._apply(self.machine.handle(Event.REPLY_PLAYED))
            self._prepare_next()

    def _prefill_interim(self, text: str) -> None:
        """The caller's words so far: the LLM may evaluate them while they speak,
        if it is free (never delaying a reply, a draft or a prefill in flight)."""
        prepare = getattr(self.llm, "prepare", None)
        m = self.machine
        if (
            prepare is None
            or not self.config.prefill_interims
            or not text.strip()
            or m.state is not State.CALLER_SPEAKING
            or m.replying
            or self.listener.pausing  # the final is coming: the draft needs the model
            or self._draft is not None
            or (self._prefill is not None and not self._prefill.done())
            or self._now() - self._prefill_at < PREFILL_INTERVAL
        ):
            return
        self._prefill_at = self._now()
        # A whole-utterance recogniser's interims cover the utterance from its start.
        said = text.strip() if self.listener.whole else " ".join(p for p in (m.pending_text, text.strip()) if p)
        messages = [*self.conversation.messages(), {"role": "user", "content": said}]
        self._prefill = self._spawn(self._prepare(prepare, messages, open_turn=False), "llm-prefill")
        self.prefills += 1

    def _prepare_next(self) -> None:
        """Let the LLM evaluate the conversation so far while the caller thinks
        (engines that keep a prompt cache have ``prepare``; others need nothing)."""
        prepare = getattr(self.llm, "prepare", None)
        if prepare is not None and self.config.prepare_between_turns:
            self._spawn(self._prepare(prepare, self.conversation.messages()), "llm-prepare")

    async def _prepare(self, prepare: Callable[..., Coroutine[Any, Any, None]], messages: list,  # type: ignore[type-arg]
                       **kw: object) -> None:
        try:
            await asyncio.wait_for(prepare(messages, **kw), PREPARE_TIMEOUT)
        except (ProviderError, TimeoutError, OSError) as exc:
            log.info("llm prepare failed: %s", exc)

    def _close_turn(self, turn: int) -> None:
        if self._ctx is None or not turn:
            return
        record = self._ctx.latency.close(turn)
        if record is not None:
            self._report("latency", turn, record.as_dict())

    # -- public actions ------------------------------------------------------

    @property
    def state(self) -> State:
        return self.machine.state

    def say(self, text: str) -> None:
        """Speak ``text`` now (a greeting, the control API's say)."""
        self._apply(self.machine.handle(Event.SAY, text))

    def interrupt(self) -> None:
        """Stop speaking now (the control API's interrupt)."""
        if self.machine.replying:
            self._cancel_reply()
            self._apply(self.machine.handle(Event.REPLY_PLAYED))

    # -- caller side ---------------------------------------------------------

    async def _on_speech_started(self, ev: SpeechStarted) -> None:
        self._turn = ev.turn
        self._report("state", ev.turn, {"caller": "speaking"})
        await self.listener.started(ev)
        self._apply(self.machine.handle(Event.SPEECH_STARTED))

    async def _on_speech_ended(self, ev: SpeechEnded) -> None:
        if self._ctx is not None:
            self._ctx.mark(ev.turn, "speech_end", self.listener.speech_end_time(ev))
            self._ctx.mark(ev.turn, "vad_end")
        if self.listener.resumed(ev):
            self._discard_draft()  # the caller went on after the pause it answered
        await self.listener.ended(ev)
        self._report("state", ev.turn, {"caller": "silent"})
        self._apply(self.machine.handle(Event.SPEECH_ENDED))

    def _on_result(self, result: Transcription, replaces: bool = False) -> None:
        turn = self._turn
        if result.final and replaces:
            self.machine.restart_pending()
        if not result.final:
            self._report("transcript", turn, {"text": result.text, "final": False, "who": "caller"})
            self._prefill_interim(result.text)
            return
        if result.text.strip():  # an empty final (after a speculative one) says nothing
            self._report("transcript", turn, {"text": result.text, "final": True, "who": "caller"})
        self._apply(self.machine.handle(Event.TRANSCRIPT, result.text))
        m = self.machine
        if (
            self.config.preemptive
            and m.state is State.CALLER_SPEAKING
            and m.pending_text
            and not m.paused
            and self.listener.pausing
            and self._reply is None
        ):
            self._start_draft(self._turn, m.pending_text)

    def _stt_failed(self, exc: BaseException) -> None:
        self._count("stt")
        log.warning("speech recognition failed: %s", exc, extra={"turn_id": self._turn})
        self._report("error", self._turn, {"provider": "stt", "error": str(exc)})
        # Whatever the caller said this turn is lost: apologise once their turn has
        # ended (now, or at finalize), and listen again; the next SpeechStarted
        # opens a new recognition.
        if self.machine.state is State.THINKING:
            self._apologise_offline()

    def _apologise_offline(self) -> None:
        self._offline_next = True
        self._apply(self.machine.handle(Event.SAY, self.config.apology))

    # -- actions -------------------------------------------------------------

    def _apply(self, actions: list[tuple[Action, str]]) -> None:
        for action, text in actions:
            if action is Action.FINALIZE_STT:
                self._spawn(self._finalize(), "stt-finalize")
            elif action is Action.START_REPLY:
                if self._ctx is not None:
                    # The caller's whole turn is transcribed now (a speculative final
                    # heard mid-turn does not count until the turn has ended).
                    self._ctx.mark(self._turn, "transcript")
                draft = self._draft
                if draft is not None and draft.turn == self._turn and draft.draft == text:
                    self._adopt(draft)
                else:
                    self._start_reply(self._turn, text)
            elif action is Action.START_SAY:
                offline, self._offline_next = self._offline_next, False
                self._start_reply(self._turn, text, say=True, offline=offline)
            elif action is Action.PAUSE_REPLY:
                self._pause()
            elif action is Action.CANCEL_REPLY:
                self._cancel_reply()
            elif action is Action.RESUME_REPLY:
                self._spawn(self._resume(), "resume")
            elif action is Action.START_CONFIRM_TIMER:
                self._start_confirm_timer()
        state = self.machine.state
        cfg = self._endpointing.get(state)
        if cfg is not None and self._vad is not None:
            self._vad.config = cfg  # type: ignore[attr-defined]
        self._report("state", self._turn, {"agent": state.value})

    async def _finalize(self) -> None:
        if not await self.listener.finalize():
            self._apologise_offline()

    def _start_confirm_timer(self) -> None:
        if self._confirm is not None:
            self._confirm.cancel()
        self._confirm = self._spawn(self._confirm_after(self.config.barge_in_confirm), "barge-in")

    async def _confirm_after(self, seconds: float) -> None:
        clock = self._ctx.clock if self._ctx is not None else None
        if clock is not None:
            await clock.sleep_until(clock.now() + seconds)
        else:
            await asyncio.sleep(seconds)
        self._apply(self.machine.handle(Event.BARGE_IN_CONFIRMED))
        if self.machine.state is State.CALLER_SPEAKING and not self.machine.replying:
            self._prepare_next()  # the cut reply, while the caller goes on

    def _interrupt_downstream(self, reason: str) -> None:
        if self._ctx is not None:
            self._ctx.interrupt(reason, after=self.name)

    def _pause(self) -> None:
        self._interrupt_downstream("barge-in")  # playout stops within a frame
        reply = self._reply
        if reply is not None:
            reply.hold = True
            self._report("reply", reply.turn, {"paused": True, "heard_s": self._heard_s(reply)})

    def _cancel_reply(self) -> None:
        reply = self._reply
        if reply is None:
            return
        self._reply = None
        if reply.task is not None and not reply.task.done():
            reply.task.cancel()
        self._interrupt_downstream("cancel")
        heard = self._heard_text(reply, complete=False)
        # The context keeps what the caller heard, not what the model wrote.
        self.conversation.add_assistant(heard)
        self._report("heard", reply.turn, {"text": heard, "complete": False})
        self._close_turn(reply.turn)

    async def _resume(self) -> None:
        """Replay from the playout position: what was sent but not heard, and what
        was produced while paused. New audio stays held until this has caught up,
        so nothing is played out of order."""
        reply = self._reply
        if reply is None:
            return
        await self._release(reply, int(self._heard_s(reply) * self.tts.sample_rate))

    async def _release(self, reply: Reply, position: int) -> None:
        """Emit the held audio from ``position`` on, then let new audio through."""
        while (pcm := reply.unheard(position)) is not None and self._reply is reply:
            position = reply.samples
            if self.machine.state is State.THINKING:
                self._apply(self.machine.handle(Event.REPLY_AUDIO))
            await self._emit_frame(Audio(pcm, self.tts.sample_rate, 0, self._now(), reply.turn))
        if self._reply is not reply:
            return
        reply.hold = False
        if reply.done:
            await self._emit_frame(Mark(REPLY_END, self._now(), reply.turn))

    # -- reporting -----------------------------------------------------------

    def _heard_s(self, reply: Reply) -> float:
        return self._heard(reply.turn) if self._heard is not None else 0.0

    def _heard_text(self, reply: Reply, complete: bool) -> str:
        """The reply's words up to the playout position (pieces cut proportionally)."""
        return reply.heard_text(None if complete else int(self._heard_s(reply) * self.tts.sample_rate))

    def _mark(self, reply: Reply, name: str) -> None:
        if reply.draft is not None:
            reply.marks.setdefault(name, self._now())
        elif self._ctx is not None:
            self._ctx.mark(reply.turn, name)

    def _now(self) -> float:
        return self._ctx.clock.now() if self._ctx is not None else 0.0

    def _count(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def _report(self, kind: str, turn: int, data: dict[str, object]) -> None:
        if self._observer is not None:
            try:
                self._observer(AgentEvent(kind, turn, data))
            except Exception:
                log.exception("agent observer failed")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=f"agent:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
