"""Invented caller turns are rejected, reported and never answered; real words are answered."""

from __future__ import annotations

from voxline.agent.turns import State

from .calls import make_call


async def test_a_repeated_phrase_is_rejected_reported_and_not_answered() -> None:
    call = await make_call(script=("Monday, Monday, Monday, Monday, Monday,",))
    await call.speak(1, 1.0)
    await call.clock.advance(2.0)
    assert call.llm.calls == []  # nothing was answered
    assert call.agent.state is State.LISTENING
    rejected = [e for e in call.events if e.kind == "rejected"]
    assert len(rejected) == 1 and rejected[0].turn == 1
    assert rejected[0].data["text"] == "Monday, Monday, Monday, Monday, Monday,"
    assert "repetition" in str(rejected[0].data["reason"])
    assert call.agent.listener.rejected == {"repetition": 1}
    assert not [e for e in call.events if e.kind == "transcript" and e.data.get("who") == "caller"]
    await call.pipe.stop()


async def test_more_words_than_the_speech_can_carry_are_rejected() -> None:
    call = await make_call(script=("thank you so much for calling and have a wonderful day today",))
    await call.speak(1, 0.3)  # 12 words in 0.3 s of speech
    await call.clock.advance(2.0)
    assert call.llm.calls == []
    assert [e.data["reason"] for e in call.events if e.kind == "rejected"] == ["12 words in 0.30s of speech"]
    await call.pipe.stop()


async def test_the_bots_own_words_heard_back_are_an_echo() -> None:
    call = await make_call(script=("Hello there, how can I help?", "what time is it"),
                           greeting="Hello there, how can I help?")
    await call.clock.advance(3.0)  # the greeting is spoken and played
    await call.speak(1, 1.5)  # ... and comes back down the line
    await call.clock.advance(2.0)
    assert call.llm.calls == []
    assert "echo" in str([e.data["reason"] for e in call.events if e.kind == "rejected"])
    await call.speak(2, 1.0)  # the caller's own question is answered
    await call.clock.advance(3.0)
    assert call.llm.calls[0][-1] == {"role": "user", "content": "what time is it"}
    await call.pipe.stop()


async def test_a_real_question_is_answered() -> None:
    call = await make_call(script=("no, no, no, I said what time is it",))
    await call.speak(1, 2.0)
    await call.clock.advance(3.0)
    assert [e for e in call.events if e.kind == "rejected"] == []
    assert call.llm.calls[0][-1]["content"] == "no, no, no, I said what time is it"
    await call.pipe.stop()
