"""The assistant in a real pipeline (agent -> playout) on a fake clock, with
scripted providers: every turn-taking behaviour, barge-in and failure."""

from __future__ import annotations

import numpy as np

from voxline.agent.assistant import AgentEvent
from voxline.agent.simple import Echo, Transcribe
from voxline.agent.turns import State
from voxline.media.clock import Clock, FakeClock
from voxline.providers.resilience import FallbackLLM
from voxline.media.feedback import Endpointing
from voxline.media.frames import Audio, Frame, SpeechEnded, SpeechPaused, SpeechStarted
from voxline.media.pipeline import Pipeline
from voxline.media.playout import Playout

from .calls import RATE, make_call
from .fakes import FakeLLM, FakeSTT


async def test_a_whole_turn_listen_think_speak_listen() -> None:
    call = await make_call()
    assert call.agent.state is State.LISTENING
    await call.speak(1, 1.0)
    assert call.agent.state is State.THINKING
    await call.clock.advance(0.3)
    assert call.agent.state is State.SPEAKING
    await call.clock.advance(3.0)
    assert call.agent.state is State.LISTENING
    # The recogniser got the utterance (with some pre-roll), not the silence around it.
    assert 16000 <= call.stt.utterances[0] <= 16000 + 0.3 * RATE
    assert call.samples_of(1) == 7 * 4000  # every word of the reply was played
    assert call.llm.calls[0][-1] == {"role": "user", "content": "what time is it"}
    assert [m["role"] for m in call.agent.conversation.history()] == ["user", "assistant"]
    marks = call.pipe.latency.turns[1].marks
    order = ["speech_end", "vad_end", "transcript", "first_token", "first_sentence",
             "first_tts_audio", "first_played"]
    assert all(m in marks for m in order)
    assert [marks[m] for m in order] == sorted(marks[m] for m in order)
    latency = [e for e in call.events if e.kind == "latency"]
    assert latency and latency[0].turn == 1 and latency[0].data["voice_to_voice_ms"] is not None
    await call.pipe.stop()


async def test_first_clause_is_spoken_while_the_rest_is_generated() -> None:
    call = await make_call(reply="Sure, here is a longer answer, it goes on for a while and then ends.",
                           per_token=0.1)
    await call.speak(1, 0.5)
    await call.clock.advance(0.9)
    assert call.tts.texts and call.tts.texts[0] == "Sure, here is a longer answer,"
    assert call.llm.tokens_out < 15  # the model is still writing while we speak
    assert call.audio_of(1)
    await call.pipe.stop()


async def test_a_slow_model_s_first_piece_ends_at_a_phrase_a_fast_one_s_is_the_sentence() -> None:
    slow = await make_call(reply="The capital of France is Paris.", per_token=0.05)
    await slow.speak(1, 0.5)
    await slow.clock.advance(2.0)
    assert slow.tts.texts == ["The capital of France", "is Paris."]
    assert slow.samples_of(1) == 6 * 4000  # every word voiced once
    assert slow.agent.conversation.history()[-1]["content"] == "The capital of France is Paris."
    await slow.pipe.stop()

    fast = await make_call(reply="The capital of France is Paris.", per_token=0.01)
    await fast.speak(1, 0.5)
    await fast.clock.advance(2.0)
    assert fast.tts.texts == ["The capital of France is Paris."]
    await fast.pipe.stop()


def test_a_reply_starts_at_its_first_sound() -> None:
    from voxline.agent.assistant import trim_leading_silence

    pcm = np.concatenate([np.zeros(880, np.int16), np.full(10, 20, np.int16), np.full(100, 3000, np.int16)])
    trimmed = trim_leading_silence(pcm, 22050)  # Piper's ~40 ms before the first sound
    assert len(trimmed) == 100 + 44 and trimmed[-100:].min() == 3000  # 2 ms kept before it
    assert len(trim_leading_silence(np.zeros(500, np.int16), 22050)) == 0
    loud = np.full(50, -32768, np.int16)
    assert len(trim_leading_silence(loud, 22050)) == 50


async def test_the_llm_prepares_the_conversation_between_turns() -> None:
    call = await make_call()
    prepared: list[list[dict[str, str]]] = []

    async def prepare(messages: list[dict[str, str]]) -> None:
        prepared.append(messages)

    call.llm.prepare = prepare  # type: ignore[attr-defined]
    await call.speak(1, 1.0)
    await call.clock.advance(1.0)
    assert prepared == []  # not while the reply plays
    await call.clock.advance(3.0)
    assert call.agent.state is State.LISTENING
    assert [m["role"] for m in prepared[0]] == ["system", "user", "assistant"]
    assert prepared[0][-1]["content"] == "It is noon. Have a nice day."
    await call.pipe.stop()


async def test_the_llm_evaluates_the_callers_words_while_they_speak() -> None:
    call = await make_call(script=("what time is it",))
    prepared: list[tuple[list[dict[str, str]], dict[str, object]]] = []

    async def prepare(messages: list[dict[str, str]], **kw: object) -> None:
        prepared.append((messages, kw))
        await call.clock.sleep_until(call.clock.now() + 0.2)

    call.llm.prepare = prepare  # type: ignore[attr-defined]
    call.pipe.push(SpeechStarted(call.pts, RATE, call.clock.now(), 1))
    await call.talk(1, 0.4)
    call.stt.interim("what")
    await call.talk(1, 0.1)
    call.stt.interim("what time")  # the first prefill is still running: skipped
    await call.talk(1, 0.3)
    call.stt.interim("what time i")  # done, but too soon after it: skipped
    await call.talk(1, 0.2)
    call.stt.interim("what time is")
    await call.talk(1, 0.1)
    assert [(m[-1], kw) for m, kw in prepared] == [
        ({"role": "user", "content": "what"}, {"open_turn": False}),
        ({"role": "user", "content": "what time is"}, {"open_turn": False}),
    ]
    assert call.agent.prefills == 2
    pause_pts = call.pts
    call.pipe.push(SpeechPaused(pause_pts, RATE, call.clock.now(), 1))
    await call.talk(1, 0.05)
    call.stt.interim("what time is it")  # after the pause: the draft will need the model
    await call.talk(1, 0.25)
    await call.end_at(1, pause_pts)
    await call.clock.advance(3.0)
    assert call.agent.prefills == 2
    assert call.llm.calls[0][-1]["content"] == "what time is it"
    await call.pipe.stop()


async def test_greeting_is_spoken_at_start() -> None:
    call = await make_call(greeting="Hello there, how can I help?")
    await call.clock.advance(2.0)
    assert call.tts.texts == ["Hello there, how can I help?"]
    assert call.samples_of(0) == 6 * 4000
    assert call.agent.state is State.LISTENING
    await call.pipe.stop()


async def test_confirmed_barge_in_stops_playout_cancels_and_keeps_only_what_was_heard() -> None:
    words = " ".join(f"word{i}." if i % 5 == 4 else f"word{i}" for i in range(20))
    call = await make_call(script=("tell me a story", "stop please"), reply=words, per_token=0.15)
    await call.speak(1, 0.5)
    await call.clock.advance(2.0)  # the reply has been playing for about a second
    assert 0.8 <= call.playout.heard(1) <= 1.3
    assert call.agent.state is State.SPEAKING
    t_barge = call.clock.now()
    call.pipe.push(SpeechStarted(call.pts, RATE, t_barge, 2))
    await call.talk(2, 0.8)  # longer than the 0.6 s that confirms a barge-in
    played_after = [t for t, _ in call.audio_of(1) if t > t_barge]
    assert played_after == []  # stopped within one frame
    assert call.llm.cancelled == 1 and call.llm.tokens_out < 20
    heard = call.agent.conversation.history()[-1]
    assert heard["role"] == "assistant"
    heard_words = heard["content"].split()
    assert heard_words == words.split()[: len(heard_words)]
    assert 2 <= len(heard_words) <= 6  # about one second at four words a second
    await call.end(2)
    await call.clock.advance(3.0)
    assert call.llm.calls[1][-1] == {"role": "user", "content": "stop please"}
    assert call.audio_of(2)  # the new turn was answered
    await call.pipe.stop()


async def test_false_interruption_resumes_where_it_stopped() -> None:
    call = await make_call(script=("tell me", ""), reply="one two three four five six seven eight")
    await call.speak(1, 0.5)
    await call.clock.advance(1.0)
    assert call.agent.state is State.SPEAKING
    before = call.playout.heard(1)
    await call.speak(2, 0.2)  # a cough: shorter than the confirmation, no words
    assert call.agent.state in (State.THINKING, State.SPEAKING)
    await call.clock.advance(4.0)
    assert call.agent.state is State.LISTENING
    assert 0 < before < 2.0
    # Exactly the whole reply was heard once: nothing lost, nothing repeated.
    assert call.samples_of(1) == 8 * 4000
    assert call.llm.cancelled == 0
    assert call.agent.conversation.history()[-1]["content"] == "one two three four five six seven eight"
    await call.pipe.stop()


async def test_caller_resuming_during_thinking_cancels_the_reply_in_the_making() -> None:
    call = await make_call(script=("first part", "second part"), per_token=0.2)
    await call.speak(1, 0.5)
    await call.clock.advance(0.15)  # transcript in, LLM started, no audio yet
    assert call.agent.state is State.THINKING and not call.audio_of(1)
    await call.speak(2, 0.5)
    assert call.llm.cancelled == 1
    await call.clock.advance(4.0)
    assert not call.audio_of(1) and call.audio_of(2)
    await call.pipe.stop()


async def test_llm_failure_costs_one_turn_and_the_call_goes_on() -> None:
    call = await make_call(script=("hello", "hello again"))
    call.llm.fail_at = 0
    await call.speak(1, 0.5)
    await call.clock.advance(6.0)  # the apology is long
    assert call.offline.texts == [call.agent.config.apology]
    assert call.audio_of(1, level=77)  # the apology, in the offline voice
    assert call.agent.state is State.LISTENING
    assert any(e.kind == "error" for e in call.events)
    call.llm.fail_at = None
    await call.speak(2, 0.5)
    await call.clock.advance(3.0)
    assert call.samples_of(2) == 7 * 4000
    await call.pipe.stop()


class BreaksOff(FakeLLM):
    """Streams the first words of an answer, then its connection drops."""

    name = "breaks-off"

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock, "The capital of France is lovely. And its name is")
        self.fail_at = 7  # "The capital of France is lovely." is spoken, "And" is not


async def test_an_answer_broken_off_midway_is_owned_up_to_and_given_again_in_full() -> None:
    breaking: list[BreaksOff] = []

    def chain(clock: Clock, good: FakeLLM) -> FallbackLLM:
        breaking.append(BreaksOff(clock))
        return FallbackLLM([breaking[0], good], clock=clock)

    call = await make_call(script=("what is the capital of france",), reply="Paris is the capital of France.",
                           llm_chain=chain)
    await call.speak(1, 0.5)
    await call.clock.advance(10.0)
    said = call.tts.texts
    # The caller heard the start of the first model's answer, then the repair, then
    # the whole answer from the fallback (never the second half spliced onto the first).
    assert said[0] == "The capital of France is lovely."
    assert call.agent.config.repair in said
    assert said[-1] == "Paris is the capital of France."
    assert said.index(call.agent.config.repair) < len(said) - 1
    assert call.offline.texts == []  # answered: no apology
    assert any(e.kind == "error" for e in call.events)
    assert len(call.llm.calls) == 1 and len(breaking[0].calls) == 1
    final = [e for e in call.events if e.kind == "transcript" and e.data.get("who") == "agent" and e.turn == 1]
    assert final and final[-1].data["text"].endswith("Paris is the capital of France.")
    assert call.agent.state is State.LISTENING
    await call.pipe.stop()


async def test_an_answer_broken_off_before_a_word_was_voiced_is_simply_answered() -> None:
    def chain(clock: Clock, good: FakeLLM) -> FallbackLLM:
        early = BreaksOff(clock)
        early.fail_at = 3  # "The capital of": no sentence, nothing voiced
        return FallbackLLM([early, good], clock=clock)

    call = await make_call(script=("what is the capital of france",), reply="Paris is the capital of France.",
                           llm_chain=chain)
    await call.speak(1, 0.5)
    await call.clock.advance(10.0)
    assert call.tts.texts == ["Paris is the capital of France."]
    assert call.offline.texts == []
    await call.pipe.stop()


async def test_when_the_repair_fails_too_the_caller_hears_the_apology() -> None:
    def chain(clock: Clock, good: FakeLLM) -> FallbackLLM:
        good.fail_at = 0
        return FallbackLLM([BreaksOff(clock), good], clock=clock)

    call = await make_call(script=("what is the capital of france",), llm_chain=chain)
    await call.speak(1, 0.5)
    await call.clock.advance(10.0)
    assert call.agent.config.repair in call.tts.texts
    assert call.offline.texts == [call.agent.config.apology]
    assert call.agent.state is State.LISTENING
    await call.pipe.stop()


async def test_tts_failure_apologises_in_the_offline_voice() -> None:
    call = await make_call()
    call.tts.fail = True
    await call.speak(1, 0.5)
    await call.clock.advance(6.0)
    assert call.audio_of(1, level=77) and not call.audio_of(1, level=1000)
    assert call.agent.state is State.LISTENING
    await call.pipe.stop()


async def test_stt_failure_apologises_and_the_next_utterance_reconnects() -> None:
    call = await make_call(script=("are you there",))
    call.stt.fail_send = True
    await call.speak(1, 0.5)
    await call.clock.advance(6.0)
    assert call.audio_of(1, level=77)
    call.stt.fail_send = False
    opened = call.stt.opened
    await call.speak(2, 0.5)
    await call.clock.advance(3.0)
    assert call.stt.opened == opened + 1
    assert call.audio_of(2, level=1000)
    await call.pipe.stop()


async def test_say_and_interrupt_from_outside() -> None:
    call = await make_call()
    call.agent.say("This is an announcement from the operator.")
    await call.clock.advance(0.5)
    assert call.agent.state is State.SPEAKING
    call.agent.interrupt()
    t = call.clock.now()
    await call.clock.advance(1.0)
    assert call.agent.state is State.LISTENING
    assert not [x for x, _ in call.audio_of(0) if x > t]
    await call.pipe.stop()


async def test_endpointing_follows_the_agent_state() -> None:
    class Vad:
        """A VAD stage as far as feedback goes: it takes the agent's endpointing."""

        name = "vad"
        latency = 0.0
        listens = (Endpointing,)
        config: object = "initial"

        def on_feedback(self, event: Endpointing) -> None:
            self.config = event.config

        def process(self, frame: Frame) -> tuple[Frame, ...]:
            return (frame,)

    vad = Vad()
    call = await make_call(vad=vad, endpointing={State.SPEAKING: "while-speaking",
                                                 State.LISTENING: "while-listening"})
    await call.speak(1, 0.5)
    await call.clock.advance(0.4)
    assert vad.config == "while-speaking"
    await call.clock.advance(3.0)
    assert vad.config == "while-listening"
    await call.pipe.stop()


async def test_echo_agent_plays_back_every_frame() -> None:
    clock = FakeClock()
    sent: list[Frame] = []
    pipe = Pipeline([Echo(), Playout(RATE)], sent.append, clock=clock)
    await pipe.start()
    for k in range(10):
        pipe.push(Audio(np.full(320, k + 1, np.int16), RATE, k * 320, clock.now()))
        await clock.advance(0.02)
    await clock.advance(0.1)
    assert [int(f.pcm[0]) for f in sent if type(f) is Audio] == list(range(1, 11))
    await pipe.stop()


async def test_transcribe_agent_reports_each_utterance() -> None:
    clock = FakeClock()
    stt = FakeSTT(clock, ("first words", "second words"))
    events: list[AgentEvent] = []
    agent = Transcribe(stt, observer=events.append)
    pipe = Pipeline([agent], clock=clock)
    await pipe.start()
    pts = 0
    for turn in (1, 2):
        pipe.push(SpeechStarted(pts, RATE, clock.now(), turn))
        for _ in range(25):
            pipe.push(Audio(np.full(320, 5, np.int16), RATE, pts, clock.now(), turn))
            pts += 320
            await clock.advance(0.02)
        pipe.push(SpeechEnded(pts, RATE, 0.5, clock.now(), turn))
        await clock.advance(0.5)
    assert agent.transcripts == [(1, "first words"), (2, "second words")]
    assert [e.data["text"] for e in events if e.kind == "transcript"] == ["first words", "second words"]
    await pipe.stop()


async def test_a_reply_played_in_full_enters_the_context_once_and_is_not_cancelled_later() -> None:
    call = await make_call(greeting="Hello there, how can I help?")
    await call.clock.advance(2.0)  # the greeting plays in full
    await call.speak(1, 0.5)
    await call.clock.advance(3.0)
    history = call.agent.conversation.history()
    assert [m["content"] for m in history if m["role"] == "assistant"] == [
        "Hello there, how can I help?", "It is noon. Have a nice day."]
    cut = [e for e in call.events if e.kind == "heard" and e.data["complete"] is False]
    assert cut == []  # nothing was reported as interrupted
    caller = [e.data["caller"] for e in call.events if e.kind == "state" and "caller" in e.data]
    assert caller == ["speaking", "silent"]
    await call.pipe.stop()


async def test_barge_in_after_generation_finished_keeps_only_the_heard_part() -> None:
    call = await make_call(script=("go on", "stop"), reply="one two three four five six seven eight nine ten.")
    await call.speak(1, 0.5)
    await call.clock.advance(1.5)  # generated long ago; playing for about a second
    assert call.agent.state is State.SPEAKING
    await call.speak(2, 0.8)
    assistant = [m["content"] for m in call.agent.conversation.history() if m["role"] == "assistant"]
    assert len(assistant) == 1
    assert 0 < len(assistant[0].split()) < 10
    await call.pipe.stop()


async def test_speculative_finalize_during_the_hangover_answers_from_the_early_transcript() -> None:
    call = await make_call(script=("what time is it",))
    pause_pts = await call.speak_and_pause(1, 0.6)
    await call.talk(1, 0.1)  # hangover silence: held, never sent to the recogniser
    await call.end_at(1, pause_pts)
    await call.clock.advance(3.0)
    # One decode of the speech at the pause, then an empty finalize at the end.
    assert call.stt.utterances[0] >= 0.6 * RATE and call.stt.utterances[1:] == [0]
    assert call.llm.calls[0][-1]["content"] == "what time is it"
    assert call.samples_of(1) == 7 * 4000
    said = [e.data["text"] for e in call.events if e.kind == "transcript" and e.data["who"] == "caller"]
    assert said == ["what time is it"]  # the empty final is not reported as words
    await call.pipe.stop()


async def test_speech_resuming_after_a_pause_is_recognised_and_joined() -> None:
    call = await make_call(script=("book a table", "for two"))
    await call.speak_and_pause(1, 0.5)
    await call.talk(1, 0.1)  # the pause
    await call.talk(1, 0.5)  # ... and the caller goes on
    await call.end_at(1, call.pts)
    await call.clock.advance(3.0)
    assert call.stt.utterances[1] >= 0.5 * RATE  # what followed the pause was recognised
    # A draft answered "book a table" at the pause; the caller went on, so it was
    # cancelled unheard, and the reply answers the whole turn.
    assert call.llm.calls[0][-1]["content"] == "book a table"
    assert call.llm.calls[-1][-1]["content"] == "book a table for two"
    assert call.agent.drafts == {"started": 1, "adopted": 0, "discarded": 1}
    assert call.samples_of(1) == 7 * 4000  # one reply played, once
    assert [m["content"] for m in call.agent.conversation.history() if m["role"] == "user"] == [
        "book a table for two"
    ]
    await call.pipe.stop()


async def test_a_whole_utterance_recogniser_decodes_again_from_the_start_when_speech_resumes() -> None:
    call = await make_call(script=("book a table", "book a table for two", ""), whole=True)
    await call.speak_and_pause(1, 0.5)
    await call.talk(1, 0.1)  # the pause
    await call.talk(1, 0.5)  # ... and the caller goes on
    pause_pts = call.pts
    call.pipe.push(SpeechPaused(pause_pts, RATE, call.clock.now(), 1))
    await call.talk(1, 0.3)
    await call.end_at(1, pause_pts)
    await call.clock.advance(3.0)
    first, again, last = call.stt.utterances
    assert again >= first + 0.6 * RATE  # the whole utterance, not what followed the pause
    assert last == 0
    # The second final replaced the first instead of being appended to it.
    assert call.llm.calls[-1][-1]["content"] == "book a table for two"
    assert [m["content"] for m in call.agent.conversation.history() if m["role"] == "user"] == [
        "book a table for two"
    ]
    assert call.agent.drafts["adopted"] == 1
    await call.pipe.stop()


async def test_a_draft_starts_at_the_pause_and_plays_only_once_the_turn_has_ended() -> None:
    call = await make_call(script=("what time is it",))
    pause_pts = await call.speak_and_pause(1, 0.6)
    await call.talk(1, 1.0)  # a long hangover: the draft is written and voiced meanwhile
    assert call.llm.calls and call.llm.calls[0][-1]["content"] == "what time is it"
    assert call.tts.texts  # voiced ahead ...
    assert not call.audio_of(1)  # ... but nothing plays while the caller may go on
    assert call.agent.conversation.history() == []  # nor does the context see it yet
    ended_at = call.clock.now()
    await call.end_at(1, pause_pts)
    await call.clock.advance(0.02)
    first = call.audio_of(1)
    assert first and first[0][0] - ended_at <= 0.04  # plays at once
    await call.clock.advance(3.0)
    assert call.agent.state is State.LISTENING
    assert len(call.llm.calls) == 1 and call.agent.drafts["adopted"] == 1
    assert call.samples_of(1) == 7 * 4000
    assert [m["role"] for m in call.agent.conversation.history()] == ["user", "assistant"]
    marks = call.pipe.latency.turns[1].marks
    order = ["vad_end", "transcript", "first_token", "first_sentence", "first_tts_audio", "first_played"]
    assert [marks[m] for m in order] == sorted(marks[m] for m in order)  # work ahead counts from the end
    said = [e.data["text"] for e in call.events if e.kind == "transcript" and e.data["who"] == "agent"]
    assert said == ["It is noon. Have a nice day."]
    await call.pipe.stop()


async def test_a_second_pause_replaces_the_draft() -> None:
    call = await make_call(script=("book a table", "for two", ""), per_token=0.2)
    await call.speak_and_pause(1, 0.5)
    await call.talk(1, 0.4)  # the first draft starts here
    await call.talk(1, 0.5)  # the caller goes on
    pause_pts = call.pts
    call.pipe.push(SpeechPaused(pause_pts, RATE, call.clock.now(), 1))
    await call.talk(1, 0.4)
    await call.end_at(1, pause_pts)
    await call.clock.advance(3.0)
    assert [c[-1]["content"] for c in call.llm.calls] == ["book a table", "book a table for two"]
    assert call.agent.drafts == {"started": 2, "adopted": 1, "discarded": 1}
    assert call.llm.cancelled == 1
    assert call.samples_of(1) == 7 * 4000
    await call.pipe.stop()


async def test_no_draft_when_preemption_is_off() -> None:
    call = await make_call(script=("what time is it",), preemptive=False)
    await call.speak_and_pause(1, 0.6)
    await call.talk(1, 0.5)
    assert not call.llm.calls
    await call.end_at(1, call.pts - int(0.5 * RATE))
    await call.clock.advance(3.0)
    assert len(call.llm.calls) == 1 and call.samples_of(1) == 7 * 4000
    await call.pipe.stop()

