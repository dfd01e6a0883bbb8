"""The assistant: listen, understand, think, speak, and yield the floor.

A worker stage between the caller's side of the pipeline (audio and VAD events
in) and the bot's side (reply audio out, towards resampling and playout). It is
composed of two parts and the turn-taking between them:

- the ``Listener`` (listener.py), the caller's side: caller audio goes to the
  recogniser only while the caller speaks, with the pre-roll before the VAD's
  onset, so a batch engine decodes just the utterance; at the VAD's pause it
  finalizes speculatively and holds later audio;
- the ``Speaker`` (speaker.py), the bot's side: every reply's life, from the
  LLM through the sentence splitter and TTS to the wire; drafts answering a
  speculative transcript before the turn has ended (adopted if the turn ends as
  they assumed, discarded unheard if not); pause, resume, cancel, and what the
  caller heard;
- the ``TurnMachine`` (turns.py) decides who has the floor; this class performs
  its actions on the parts, and the parts' actions (actions.py) in one dispatch,
  ``_perform``.

Barge-in pauses playout at once (the pipeline's interrupt) and holds the reply;
confirmed, it cancels LLM and TTS and the context keeps only what the caller
heard; not confirmed, the reply resumes from there. A provider failure costs
that turn: the caller hears an apology in the offline voice, and the call goes on.

With a ``Toolbox`` the assistant acts as well as talks (end the call, transfer
it, press keys, call HTTP tools): the Speaker runs the tools the LLM asks for
between its rounds, and every action is reported as an ``action`` event.

What flows against the media goes through the pipeline's feedback bus
(media/feedback.py): playout's ``Played`` tells this stage that a reply was
played in full, ``ctx.feedback.heard(turn)`` how much of it the caller heard, and
this stage publishes ``Endpointing`` with the VAD's configuration for each state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import assert_never

from voxline.media.endpoint import EndpointConfig
from voxline.media.feedback import Endpointing, Played
from voxline.media.frames import Audio, Dtmf, Frame, SpeechEnded, SpeechPaused, SpeechStarted
from voxline.media.link import Overflow
from voxline.media.stage import Emit, StageContext
from voxline.providers.base import LanguageModel, SpeechToText, TextToSpeech, Transcription

from .actions import Audible, Failed, PartAction, RecognitionFailed, Transcribed
from .config import AssistantConfig
from .context import Conversation
from .control import INTERRUPT, SAY
from .events import AgentEvent, Observer
from .listener import Listener
from .logs import SessionLog, part_log
from .speaker import REPLY_END, Speaker, trim_leading_silence
from .tasks import TaskSet
from .toolbox import Toolbox
from .turns import Action, Event, State, TurnMachine

__all__ = ["REPLY_END", "AgentEvent", "Assistant", "AssistantConfig", "trim_leading_silence"]

log = logging.getLogger(__name__)


class Assistant:
    """The conversational agent as a pipeline worker."""

    name = "agent"
    inbox_capacity = 100  # 2 s of 20 ms caller frames
    inbox_seconds = 2.0  # the same bound in seconds of audio (frames of any length)
    overflow = Overflow.DROP_OLDEST
    listens = (Played,)  # playout reports the reply's end mark (feedback.py)
    capabilities = frozenset({SAY, INTERRUPT})

    def __init__(
        self,
        stt: SpeechToText,
        llm: LanguageModel,
        tts: TextToSpeech,
        *,
        fallback_tts: TextToSpeech | None = None,
        endpointing: Mapping[State, EndpointConfig] | None = None,
        config: AssistantConfig | None = None,
        observer: Observer | None = None,
        toolbox: Toolbox | None = None,
    ) -> None:
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
        self._endpointing = dict(endpointing or {})
        self._endpointing_now: EndpointConfig | None = None  # the config last published
        self._observer = observer
        self._ctx: StageContext | None = None
        self._log: SessionLog = part_log(log, None)
        self._confirm: asyncio.Task[None] | None = None
        self._tasks = TaskSet(self.name)
        self._turn = 0
        self._offline_next = False  # the next START_SAY speaks in the offline voice
        self.errors: dict[str, int] = {}
        self.listener = Listener(
            stt, preroll=cfg.preroll, max_utterance=cfg.max_utterance, speculative=cfg.speculative,
            deadlines=cfg.deadlines, tasks=self._tasks, perform=self._perform, guard=cfg.guard,
        )
        self.speaker = Speaker(
            llm, tts, fallback_tts or tts, cfg, tasks=self._tasks, perform=self._perform, stage=self.name,
            toolbox=toolbox,
        )

    # -- pipeline hooks ------------------------------------------------------

    def bind(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._log = part_log(log, ctx)
        self.speaker.bind(ctx)

    def attach_emit(self, emit: Emit) -> None:
        self.speaker.attach_emit(emit)
        self._publish_endpointing()  # the VAD starts with this state's config
        # Open the recogniser now, so the first utterance does not wait on a connect.
        self._tasks.spawn(self.listener.open(), "stt-open")
        if self.config.greeting:
            self.say(self.config.greeting)

    async def process(self, frame: Frame, emit: Emit) -> None:
        t = type(frame)
        if t is Audio:
            await self.listener.audio(frame)  # type: ignore[arg-type]
        elif t is SpeechStarted:
            await self._on_speech_started(frame)  # type: ignore[arg-type]
        elif t is SpeechPaused:
            self.speaker.discard_draft()  # a second pause: the transcript will grow
            await self.listener.paused(frame)  # type: ignore[arg-type]
        elif t is SpeechEnded:
            await self._on_speech_ended(frame)  # type: ignore[arg-type]
        elif t is Dtmf:
            self._report(AgentEvent("dtmf", frame.turn, {"digit": frame.digit}))  # type: ignore[union-attr]

    def on_feedback(self, event: Played) -> None:
        """Playout reached a mark: the reply's end mark means it was played in full.

        A peer's confirmation of a mark (``confirmed``) comes later, names the mark
        only (no turn), and would end a newer reply of the same turn: the reply's
        end is playout's, which is also what ``heard`` counts."""
        if not event.confirmed and self.speaker.played(event.mark):
            self._apply(self.machine.handle(Event.REPLY_PLAYED))
            self.speaker.prepare_next()

    async def close(self) -> None:
        await self._tasks.close()  # the replies, drafts, timers and readers of both parts
        await self.listener.close()

    # -- the control API (control.AgentControl) -------------------------------

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def conversation(self) -> Conversation:
        return self.speaker.conversation

    @property
    def drafts(self) -> dict[str, int]:
        return self.speaker.drafts

    @property
    def prefills(self) -> int:
        return self.speaker.prefills

    def say(self, text: str) -> None:
        """Speak ``text`` now (a greeting, the control API's say)."""
        self._apply(self.machine.handle(Event.SAY, text))

    def interrupt(self) -> None:
        """Stop speaking now (the control API's interrupt)."""
        if self.machine.replying:
            self.speaker.cancel()
            self._apply(self.machine.handle(Event.REPLY_PLAYED))

    # -- caller side ---------------------------------------------------------

    async def _on_speech_started(self, ev: SpeechStarted) -> None:
        self._turn = ev.turn
        self._report(AgentEvent("state", ev.turn, {"caller": "speaking"}))
        await self.listener.started(ev, over_bot=self.machine.state is State.SPEAKING)
        self._apply(self.machine.handle(Event.SPEECH_STARTED))

    async def _on_speech_ended(self, ev: SpeechEnded) -> None:
        if self._ctx is not None:
            self._ctx.mark(ev.turn, "speech_end", self.listener.speech_end_time(ev))
            self._ctx.mark(ev.turn, "vad_end")
        if self.listener.resumed(ev):
            self.speaker.discard_draft()  # the caller went on after the pause it answered
        await self.listener.ended(ev)
        self._report(AgentEvent("state", ev.turn, {"caller": "silent"}))
        self._apply(self.machine.handle(Event.SPEECH_ENDED))

    # -- the parts' actions --------------------------------------------------

    def _perform(self, action: PartAction) -> None:
        """The one place where what the Listener and the Speaker hand on is done."""
        match action:
            case Transcribed(result=result, replaces=replaces):
                self._on_result(result, replaces)
            case RecognitionFailed(error=error):
                self._stt_failed(error)
            case Audible():
                if self.machine.state is State.THINKING:
                    self._apply(self.machine.handle(Event.REPLY_AUDIO))
            case Failed(count=count, provider=provider, turn=turn, error=error):
                self._count(count)
                self._log.warning("%s failed: %s", provider, error, extra={"turn_id": turn})
                self._report(AgentEvent("error", turn, {"provider": provider, "error": str(error)}))
            case AgentEvent():
                if action.kind == "transcript" and action.data.get("who") == "agent":
                    self.listener.bot_spoke(str(action.data.get("text", "")))  # its echo is no caller turn
                self._report(action)
            case _:
                assert_never(action)

    def _on_result(self, result: Transcription, replaces: bool) -> None:
        turn = self._turn
        if result.final and replaces:
            self.machine.restart_pending()
        if not result.final:
            self._report(AgentEvent("transcript", turn, {"text": result.text, "final": False, "who": "caller"}))
            self._prefill_interim(result.text)
            return
        if result.text.strip():  # an empty final (after a speculative one) says nothing
            self._report(AgentEvent("transcript", turn, {"text": result.text, "final": True, "who": "caller"}))
        self._apply(self.machine.handle(Event.TRANSCRIPT, result.text))
        m = self.machine
        if (
            self.config.preemptive
            and m.state is State.CALLER_SPEAKING
            and m.pending_text
            and not m.paused
            and self.listener.pausing
            and not self.speaker.replying
        ):
            self.speaker.draft(self._turn, m.pending_text)

    def _prefill_interim(self, text: str) -> None:
        """The caller's words so far, for the LLM to evaluate while they speak:
        only while the caller holds the floor and nothing else needs the model."""
        m = self.machine
        if (
            not text.strip()
            or m.state is not State.CALLER_SPEAKING
            or m.replying
            or self.listener.pausing  # the final is coming: the draft needs the model
        ):
            return
        # A whole-utterance recogniser's interims cover the utterance from its start.
        said = text.strip() if self.listener.whole else " ".join(p for p in (m.pending_text, text.strip()) if p)
        self.speaker.prefill(said)

    def _stt_failed(self, exc: BaseException) -> None:
        self._count("stt")
        self._log.warning("speech recognition failed: %s", exc, extra={"turn_id": self._turn})
        self._report(AgentEvent("error", self._turn, {"provider": "stt", "error": str(exc)}))
        # Whatever the caller said this turn is lost: apologise once their turn has
        # ended (now, or at finalize), and listen again; the next SpeechStarted
        # opens a new recognition.
        if self.machine.state is State.THINKING:
            self._apologise_offline()

    def _apologise_offline(self) -> None:
        self._offline_next = True
        self._apply(self.machine.handle(Event.SAY, self.config.apology))

    # -- the turn machine's actions ------------------------------------------

    def _apply(self, actions: list[tuple[Action, str]]) -> None:
        for action, text in actions:
            if action is Action.FINALIZE_STT:
                self._tasks.spawn(self._finalize(), "stt-finalize")
            elif action is Action.START_REPLY:
                if self._ctx is not None:
                    # The caller's whole turn is transcribed now (a speculative final
                    # heard mid-turn does not count until the turn has ended).
                    self._ctx.mark(self._turn, "transcript")
                self.speaker.answer(self._turn, text)
            elif action is Action.START_SAY:
                offline, self._offline_next = self._offline_next, False
                self.speaker.say(self._turn, text, offline=offline)
            elif action is Action.PAUSE_REPLY:
                self.speaker.pause()
            elif action is Action.CANCEL_REPLY:
                self.speaker.cancel()
            elif action is Action.RESUME_REPLY:
                self.speaker.resume()
            elif action is Action.START_CONFIRM_TIMER:
                self._start_confirm_timer()
        self._publish_endpointing()
        self._report(AgentEvent("state", self._turn, {"agent": self.machine.state.value}))

    def _publish_endpointing(self) -> None:
        """Tell the VAD how to endpoint in the current state, when that changes."""
        cfg = self._endpointing.get(self.machine.state)
        if cfg is None or cfg == self._endpointing_now or self._ctx is None:
            return
        self._endpointing_now = cfg
        self._ctx.feedback.publish(Endpointing(cfg))

    async def _finalize(self) -> None:
        if not await self.listener.finalize():
            self._apologise_offline()

    def _start_confirm_timer(self) -> None:
        if self._confirm is not None:
            self._confirm.cancel()
        self._confirm = self._tasks.spawn(self._confirm_after(self.config.barge_in_confirm), "barge-in")

    async def _confirm_after(self, seconds: float) -> None:
        clock = self._ctx.clock if self._ctx is not None else None
        if clock is not None:
            await clock.sleep_until(clock.now() + seconds)
        else:
            await asyncio.sleep(seconds)
        self._apply(self.machine.handle(Event.BARGE_IN_CONFIRMED))
        if self.machine.state is State.CALLER_SPEAKING and not self.machine.replying:
            self.speaker.prepare_next()  # the cut reply, while the caller goes on

    # -- reporting -----------------------------------------------------------

    def _count(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def _report(self, event: AgentEvent) -> None:
        if self._observer is not None:
            try:
                self._observer(event)
            except Exception:
                self._log.exception("agent observer failed", extra={"turn_id": event.turn})
