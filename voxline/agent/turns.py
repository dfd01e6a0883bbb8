"""The turn state machine: who has the floor, and what to do when that changes.

Sans-I/O: ``handle(event)`` returns the actions to take; the agent performs them.
Every transition is a row of ``_TABLE``; an event with no row for the current state
changes nothing (and is counted, so surprises show up in stats).

States: LISTENING (nobody speaks), CALLER_SPEAKING, THINKING (the caller's turn
ended; transcript and reply under way), SPEAKING (the bot's reply is playing).

Barge-in is two steps, so a cough does not cost the caller the answer:
caller speech while SPEAKING *pauses* the reply at once (playout stops within one
frame; generation goes on into a held buffer). The pause becomes a real
interruption (reply cancelled, context cut to what was heard) when the caller has
spoken for ``confirm`` seconds or said words; if the speech ends with no words,
the reply *resumes* where it stopped.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["State", "Event", "Action", "TurnMachine"]


class State(enum.StrEnum):
    """A string too: the control API's ``agent_state`` (control.AgentControl)."""

    LISTENING = "listening"
    CALLER_SPEAKING = "caller_speaking"
    THINKING = "thinking"
    SPEAKING = "speaking"


class Event(enum.Enum):
    SPEECH_STARTED = "speech_started"
    SPEECH_ENDED = "speech_ended"
    TRANSCRIPT = "transcript"  # a final transcript; carries text
    BARGE_IN_CONFIRMED = "barge_in_confirmed"  # caller kept talking over a paused reply
    REPLY_AUDIO = "reply_audio"  # first audio of a reply left the agent
    REPLY_PLAYED = "reply_played"  # the reply's last audio was played
    REPLY_FAILED = "reply_failed"
    SAY = "say"  # speak text now (greeting, API); carries text


class Action(enum.Enum):
    FINALIZE_STT = "finalize_stt"
    START_REPLY = "start_reply"  # carries the caller's text
    START_SAY = "start_say"  # carries the text to speak
    PAUSE_REPLY = "pause_reply"
    CANCEL_REPLY = "cancel_reply"
    RESUME_REPLY = "resume_reply"
    START_CONFIRM_TIMER = "start_confirm_timer"


@dataclass(slots=True)
class Step:
    state: State
    actions: list[tuple[Action, str]] = field(default_factory=list)


Handler = Callable[["TurnMachine", str], Step]


class TurnMachine:
    def __init__(self) -> None:
        self.state = State.LISTENING
        self.paused = False  # a reply is paused by caller speech, not yet cancelled
        self.replying = False  # a reply (LLM/TTS) is under way or playing
        self.pending_text = ""  # caller words not yet answered
        self.answering = ""  # the caller words the reply under way answers
        # Words of an earlier turn whose reply was dropped unheard (the caller
        # went on): answered with this turn's; a re-decode of this turn keeps them.
        self.carried = ""
        self.ignored: dict[str, int] = {}
        self.transitions = 0

    def handle(self, event: Event, text: str = "") -> list[tuple[Action, str]]:
        handler = _TABLE.get((self.state, event))
        if handler is None:
            key = f"{self.state.value}:{event.value}"
            self.ignored[key] = self.ignored.get(key, 0) + 1
            return []
        step = handler(self, text)
        if step.state is not self.state:
            self.transitions += 1
        self.state = step.state
        for action, _ in step.actions:
            if action in (Action.START_REPLY, Action.START_SAY, Action.RESUME_REPLY):
                self.replying = True
            elif action is Action.CANCEL_REPLY:
                self.replying = False
        return step.actions

    def restart_pending(self) -> None:
        """The recogniser decoded the caller's turn again from its start: its next
        final replaces the words heard so far instead of adding to them."""
        self.pending_text = ""

    # -- rows ----------------------------------------------------------------

    def _caller_starts(self, _: str) -> Step:
        return Step(State.CALLER_SPEAKING)

    def _caller_ends(self, _: str) -> Step:
        return Step(State.THINKING, [(Action.FINALIZE_STT, "")])

    def _words_while_speaking(self, text: str) -> Step:
        # A streaming recogniser may finalise words before the speech ends.
        if text.strip():
            self.pending_text = _join(self.pending_text, text)
            if self.paused:
                self.paused = False
                return Step(State.CALLER_SPEAKING, [(Action.CANCEL_REPLY, "")])
        return Step(State.CALLER_SPEAKING)

    def _transcript(self, text: str) -> Step:
        said = _join(self.pending_text, text)
        if said:
            said = _join(self.carried, said)
            self.pending_text = self.carried = ""
            self.answering = said
            actions: list[tuple[Action, str]] = []
            if self.paused or self.replying:
                actions.append((Action.CANCEL_REPLY, ""))
            self.paused = False
            actions.append((Action.START_REPLY, said))
            return Step(State.THINKING, actions)
        if self.paused:
            # No words: a cough or a door. Carry on where the reply stopped.
            self.paused = False
            return Step(State.SPEAKING, [(Action.RESUME_REPLY, "")])
        # No words: nothing to answer. If a reply is already being prepared (from a
        # speculative final), it stays in hand.
        return Step(self.state if self.replying else State.LISTENING)

    def _caller_interrupts_thinking(self, _: str) -> Step:
        # The caller goes on before the bot said anything (a pause mid-sentence
        # longer than the hangover): drop the reply in the making and answer
        # everything once they finish, the words it answered included, since
        # the caller heard none of it.
        actions: list[tuple[Action, str]] = []
        if self.replying:
            actions.append((Action.CANCEL_REPLY, ""))
            self.carried = _join(self.carried, self.answering)
        self.answering = ""
        return Step(State.CALLER_SPEAKING, actions)

    def _barge_in(self, _: str) -> Step:
        self.paused = True
        return Step(
            State.CALLER_SPEAKING,
            [(Action.PAUSE_REPLY, ""), (Action.START_CONFIRM_TIMER, "")],
        )

    def _confirm(self, _: str) -> Step:
        if not self.paused:
            return Step(self.state)
        self.paused = False
        return Step(State.CALLER_SPEAKING, [(Action.CANCEL_REPLY, "")])

    def _reply_audio(self, _: str) -> Step:
        return Step(State.SPEAKING)

    def _reply_done(self, _: str) -> Step:
        self.replying = False
        return Step(State.LISTENING)

    def _say(self, text: str) -> Step:
        actions: list[tuple[Action, str]] = []
        if self.replying:
            actions.append((Action.CANCEL_REPLY, ""))
        actions.append((Action.START_SAY, text))
        return Step(State.THINKING, actions)


def _join(a: str, b: str) -> str:
    return " ".join(p for p in (a.strip(), b.strip()) if p)


S, E = State, Event
_TABLE: dict[tuple[State, Event], Handler] = {
    (S.LISTENING, E.SPEECH_STARTED): TurnMachine._caller_starts,
    (S.LISTENING, E.SAY): TurnMachine._say,
    (S.LISTENING, E.TRANSCRIPT): TurnMachine._transcript,
    (S.CALLER_SPEAKING, E.SPEECH_ENDED): TurnMachine._caller_ends,
    (S.CALLER_SPEAKING, E.TRANSCRIPT): TurnMachine._words_while_speaking,
    (S.CALLER_SPEAKING, E.BARGE_IN_CONFIRMED): TurnMachine._confirm,
    (S.CALLER_SPEAKING, E.REPLY_FAILED): TurnMachine._caller_starts,
    (S.THINKING, E.TRANSCRIPT): TurnMachine._transcript,
    (S.THINKING, E.SPEECH_STARTED): TurnMachine._caller_interrupts_thinking,
    (S.THINKING, E.REPLY_AUDIO): TurnMachine._reply_audio,
    (S.THINKING, E.REPLY_FAILED): TurnMachine._reply_done,
    (S.THINKING, E.REPLY_PLAYED): TurnMachine._reply_done,
    (S.THINKING, E.SAY): TurnMachine._say,
    (S.SPEAKING, E.SPEECH_STARTED): TurnMachine._barge_in,
    (S.SPEAKING, E.REPLY_PLAYED): TurnMachine._reply_done,
    (S.SPEAKING, E.REPLY_FAILED): TurnMachine._reply_done,
    (S.SPEAKING, E.SAY): TurnMachine._say,
}
