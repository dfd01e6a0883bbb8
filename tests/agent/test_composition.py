"""The assistant as parts of a pipeline: typed feedback (Played in, Endpointing
out), its log lines, the control interface every agent offers, and its inbox
under a flood."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from voxline.agent import INTERRUPT, SAY, AgentControl, Unsupported
from voxline.agent.assistant import REPLY_END, Assistant
from voxline.agent.simple import Echo, Transcribe
from voxline.agent.turns import State
from voxline.media.clock import FakeClock
from voxline.media.endpoint import EndpointConfig
from voxline.media.feedback import Endpointing, Played
from voxline.media.frames import Audio, Frame, Mark, SpeechEnded, SpeechStarted

from .calls import RATE, make_call
from .fakes import FakeLLM, FakeSTT, FakeTTS

LISTENING = EndpointConfig(threshold=0.5, start=0.2, stop=0.2, pause=0.06)
WHILE_SPEAKING = EndpointConfig(threshold=0.6, start=0.3, stop=0.2, pause=0.06)


class Vad:
    """A VAD as far as feedback goes: it records each endpointing it is given."""

    name = "vad"
    latency = 0.0
    listens = (Endpointing,)

    def __init__(self) -> None:
        self.configs: list[object] = []

    def on_feedback(self, event: Endpointing) -> None:
        self.configs.append(event.config)

    def process(self, frame: Frame) -> tuple[Frame, ...]:
        return (frame,)


async def test_the_pipeline_wires_played_and_heard_and_endpointing_is_published_only_on_change() -> None:
    vad = Vad()
    endpointing = {State.LISTENING: LISTENING, State.CALLER_SPEAKING: LISTENING,
                   State.THINKING: LISTENING, State.SPEAKING: WHILE_SPEAKING}
    call = await make_call(vad=vad, endpointing=endpointing)  # type: ignore[arg-type]
    assert call.pipe.feedback.listeners(Played) == 1 and call.pipe.feedback.listeners(Endpointing) == 1
    await call.speak(1, 0.5)
    await call.clock.advance(3.0)
    assert call.agent.state is State.LISTENING
    # listening (at start) -> speaking -> listening: no repeats for the states between.
    assert vad.configs == [LISTENING, WHILE_SPEAKING, LISTENING]
    heard = [e for e in call.events if e.kind == "heard"]
    assert heard and heard[0].data["complete"] is True  # Played of the reply's end
    await call.pipe.stop()


async def test_a_peers_confirmation_of_a_mark_does_not_end_the_reply() -> None:
    call = await make_call(reply="one two three four five six seven eight nine ten.")
    await call.speak(1, 0.5)
    await call.clock.advance(1.0)
    assert call.agent.state is State.SPEAKING
    call.pipe.feedback.publish(Played(Mark(REPLY_END, 0.0, 1), call.clock.now(), confirmed=True))
    assert call.agent.state is State.SPEAKING  # it names a mark, not this reply's end
    await call.clock.advance(4.0)
    assert call.agent.state is State.LISTENING
    assert call.samples_of(1) == 10 * 4000
    await call.pipe.stop()


async def test_agent_log_lines_carry_the_session_and_turn(caplog: pytest.LogCaptureFixture) -> None:
    call = await make_call(script=("hello",))
    call.llm.fail_at = 0
    call.offline.fail = True  # the apology fails too: two lines from the speaker
    with caplog.at_level(logging.INFO, logger="voxline.agent"):
        await call.speak(1, 0.5)
        await call.clock.advance(3.0)
    lines = [r for r in caplog.records if r.name.startswith("voxline.agent")]
    assert {r.getMessage().split(":")[0] for r in lines} >= {"reply failed", "offline voice failed"}
    assert all(getattr(r, "session_id", None) == call.pipe.session_id for r in lines)
    assert all(getattr(r, "turn_id", None) == 1 for r in lines)
    assert call.agent.errors == {"llm": 1}
    await call.pipe.stop()


def test_every_agent_offers_the_control_interface() -> None:
    clock = FakeClock()
    assistant = Assistant(FakeSTT(clock), FakeLLM(clock, "hi"), FakeTTS(clock))
    echo, transcribe = Echo(), Transcribe(FakeSTT(clock))
    for agent in (assistant, echo, transcribe):
        assert isinstance(agent, AgentControl)
        assert isinstance(agent.state, str)
    assert assistant.capabilities == {SAY, INTERRUPT} and assistant.state == "listening"
    for agent, name in ((echo, "echo"), (transcribe, "transcribe")):
        assert agent.capabilities == frozenset()
        with pytest.raises(Unsupported, match=f"agent '{name}' cannot say"):
            agent.say("hello")
        with pytest.raises(Unsupported, match=f"agent '{name}' cannot interrupt"):
            agent.interrupt()


async def test_a_stalled_agent_flooded_with_audio_still_sees_every_turn() -> None:
    # The recogniser stalls: the agent waits in send() while the caller goes on.
    # Its drop_oldest inbox overflows with audio, but no SpeechStarted/SpeechEnded
    # may be lost, or the turn machine would wait for a turn that has ended.
    call = await make_call(script=("one", "two", "three", "four", "five"), preemptive=False)
    call.stt.gate = asyncio.Event()
    pairs = 5
    for turn in range(1, pairs + 1):
        call.pipe.push(SpeechStarted(call.pts, RATE, call.clock.now(), turn))
        for _ in range(150):  # 3 s of audio per turn: more than the inbox holds
            call.pipe.push(Audio(np.full(320, 300, np.int16), RATE, call.pts, call.clock.now(), turn))
            call.pts += 320
        call.pipe.push(SpeechEnded(call.pts, RATE, 0.0, call.clock.now(), turn))
    await call.clock.settle()
    inbox = next(link for link in call.pipe.stats()["links"] if link["name"] == "agent")
    assert inbox["dropped"] > 0  # audio was dropped: the flood was real
    call.stt.gate.set()
    await call.clock.advance(5.0)
    caller = [e.data["caller"] for e in call.events if e.kind == "state" and "caller" in e.data]
    assert caller == ["speaking", "silent"] * pairs  # every pair reached the turn machine
    assert call.agent.state is not State.CALLER_SPEAKING
    assert call.llm.calls and call.llm.calls[-1][-1]["content"].endswith("five")
    await call.pipe.stop()


async def test_the_listener_hands_its_results_on_as_actions() -> None:
    from voxline.agent.actions import PartAction, RecognitionFailed, Transcribed
    from voxline.agent.listener import Listener
    from voxline.agent.tasks import TaskSet
    from voxline.providers.base import Deadlines, Transcription

    clock = FakeClock()
    stt = FakeSTT(clock, ("hello there",))
    actions: list[PartAction] = []
    tasks = TaskSet("test")
    listener = Listener(stt, preroll=0.3, max_utterance=30.0, speculative=True, deadlines=Deadlines(),
                        tasks=tasks, perform=actions.append)
    await listener.open()
    pcm = np.full(320, 300, np.int16)
    await listener.audio(Audio(pcm, RATE, 0, 0.0))  # before the onset: pre-roll, not sent
    assert stt.recognition.samples == 0
    await listener.started(SpeechStarted(320, RATE, 0.02, 1))
    await listener.audio(Audio(pcm, RATE, 320, 0.02, 1))
    await listener.ended(SpeechEnded(640, RATE, 0.0, 0.04, 1))
    finalized = asyncio.ensure_future(listener.finalize())
    await clock.advance(0.2)  # the recogniser's decode, on the fake clock
    assert await finalized
    assert [type(a) for a in actions] == [Transcribed]
    assert actions[0] == Transcribed(Transcription("hello there", True), False)
    assert stt.utterances == [640]  # the pre-roll after the onset margin, and the speech
    stt.fail_send = True
    await listener.started(SpeechStarted(960, RATE, 0.06, 2))
    await listener.audio(Audio(pcm, RATE, 960, 0.06, 2))
    assert type(actions[-1]) is RecognitionFailed and not listener.connected
    await tasks.close()
    await listener.close()


async def test_the_speaker_voices_a_text_and_knows_its_own_end_mark() -> None:
    from voxline.agent.actions import Audible, PartAction
    from voxline.agent.config import AssistantConfig
    from voxline.agent.events import AgentEvent
    from voxline.agent.speaker import Speaker
    from voxline.agent.tasks import TaskSet

    clock = FakeClock()
    tts = FakeTTS(clock)
    actions: list[PartAction] = []
    out: list[Frame] = []

    async def emit(frame: Frame) -> None:
        out.append(frame)

    tasks = TaskSet("test")
    speaker = Speaker(FakeLLM(clock, "unused"), tts, tts, AssistantConfig(), tasks=tasks, perform=actions.append)
    speaker.attach_emit(emit)
    speaker.say(3, "one two")
    await clock.advance(0.1)
    assert sum(len(f.pcm) for f in out if type(f) is Audio) == 2 * 4000  # type: ignore[union-attr]
    end = out[-1]
    assert type(end) is Mark and end.name == REPLY_END and end.turn == 3
    assert Audible(3) in actions
    assert AgentEvent("transcript", 3, {"text": "one two", "final": True, "who": "agent"}) in actions
    assert not speaker.played(Mark("other", 0.0, 3)) and not speaker.played(Mark(REPLY_END, 0.0, 4))
    assert speaker.played(end) and not speaker.replying
    assert speaker.conversation.history() == [{"role": "assistant", "content": "one two"}]
    assert not speaker.played(end)  # once
    await tasks.close()


async def test_a_failed_task_is_logged_and_never_left_unretrieved(caplog: pytest.LogCaptureFixture) -> None:
    import gc
    import logging

    from voxline.agent.tasks import TaskSet
    from voxline.media.link import LinkClosed

    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: unretrieved.append(ctx))

    async def fails(exc: Exception) -> None:
        raise exc

    try:
        tasks = TaskSet("test")
        closing = tasks.spawn(fails(LinkClosed("link playout is closed")), "reply-1")  # the pipeline stopped
        broken = tasks.spawn(fails(ValueError("a bug")), "reply-2")
        with caplog.at_level(logging.DEBUG, "voxline.agent.tasks"):
            await asyncio.wait([closing, broken])
            await asyncio.sleep(0)
        del closing, broken
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert not unretrieved, unretrieved
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["test:reply-2 failed"]
    assert len(tasks) == 0
