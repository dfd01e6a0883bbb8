"""A pause mid-sentence longer than the hangover: the reply in the making is
dropped when the caller goes on, and the words it answered are not lost."""

from __future__ import annotations

from voxline.agent.turns import Action, Event, State, TurnMachine

from .calls import make_call


def test_words_of_a_dropped_reply_are_answered_with_the_rest() -> None:
    m = TurnMachine()
    m.handle(Event.SPEECH_STARTED)
    m.handle(Event.SPEECH_ENDED)
    assert m.handle(Event.TRANSCRIPT, "what is the capital") == [(Action.START_REPLY, "what is the capital")]
    assert m.handle(Event.SPEECH_STARTED) == [(Action.CANCEL_REPLY, "")]
    m.restart_pending()  # a re-decode of the new turn from its start keeps them too
    m.handle(Event.SPEECH_ENDED)
    assert m.handle(Event.TRANSCRIPT, "of Germany") == [(Action.START_REPLY, "what is the capital of Germany")]
    assert m.state is State.THINKING and m.carried == ""


def test_a_reply_the_caller_heard_is_not_carried() -> None:
    m = TurnMachine()
    m.handle(Event.SPEECH_STARTED)
    m.handle(Event.SPEECH_ENDED)
    m.handle(Event.TRANSCRIPT, "hello")
    m.handle(Event.REPLY_AUDIO)
    m.handle(Event.REPLY_PLAYED)
    m.handle(Event.SPEECH_STARTED)
    m.handle(Event.SPEECH_ENDED)
    assert m.handle(Event.TRANSCRIPT, "what time is it") == [(Action.START_REPLY, "what time is it")]


async def test_the_assistant_answers_both_halves_of_a_paused_question() -> None:
    call = await make_call(script=("what is the capital", "of Germany"), per_token=0.2)
    await call.speak(1, 0.8)
    await call.clock.advance(0.15)  # transcript in, LLM started, no audio yet
    await call.speak(2, 0.5)
    await call.clock.advance(4.0)
    assert call.llm.cancelled == 1
    assert call.llm.calls[-1][-1] == {"role": "user", "content": "what is the capital of Germany"}
    await call.pipe.stop()
