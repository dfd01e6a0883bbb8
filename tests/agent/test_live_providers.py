"""The agent on real providers: an OpenAI-compatible server that dies mid-answer,
and a whole conversation on the embedded models with real recorded speech."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from voxline.agent.assistant import AgentEvent, Assistant, AssistantConfig
from voxline.agent.turns import State
from voxline.codecs.l16 import l16
from voxline.config import ServiceConfig
from voxline.control.runtime import Runtime
from voxline.control.session import SessionRegistry
from voxline.media.clock import LoopClock
from voxline.media.frames import Audio, Frame, SpeechEnded, SpeechStarted
from voxline.media.pipeline import Pipeline
from voxline.media.playout import Playout
from voxline.providers.llm.openai_compat import OpenAICompatLLM
from voxline.transports.base import Port, TransportTraits, WireMedia

from ..providers import speech
from ..providers.fake_vendors import Behaviour, FakeVendors
from .fakes import FakeSTT, FakeTTS

RATE = 16000


async def wait_for(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_an_llm_server_dropping_its_socket_costs_one_turn_and_the_call_goes_on(
    vendors: FakeVendors,
) -> None:
    clock = LoopClock()
    stt = FakeSTT(clock, ("first question", "second question"), delay=0.01)
    tts, offline = FakeTTS(clock), FakeTTS(clock, "offline", level=77)
    llm = OpenAICompatLLM(vendors.url("/v1"), "sk-test", "gpt-test")
    events: list[AgentEvent] = []
    playout = Playout(RATE, capacity=400)
    agent = Assistant(stt, llm, tts, fallback_tts=offline,
                      config=AssistantConfig(greeting=None), observer=events.append)
    sent: list[Frame] = []
    pipe = Pipeline([agent, playout], sent.append)
    await pipe.start()

    async def turn(n: int) -> None:
        pipe.push(SpeechStarted(0, RATE, 0.0, n))
        for _ in range(10):
            pipe.push(Audio(np.full(320, 200, np.int16), RATE, 0, 0.0, n))
        pipe.push(SpeechEnded(3200, RATE, 0.2, 0.0, n))
        await wait_for(lambda: agent.state is State.LISTENING and any(
            type(f) is Audio and f.turn == n for f in sent), 20)

    vendors.set("chat", Behaviour.DROP)
    await turn(1)
    errors = [e for e in events if e.kind == "error"]
    assert errors and errors[0].turn == 1
    assert any(type(f) is Audio and f.turn == 1 and f.pcm.max() == 77 for f in sent)  # apology

    vendors.set("chat", Behaviour.NORMAL)
    await turn(2)
    said = [e.data["text"] for e in events if e.kind == "transcript" and e.data.get("who") == "agent"]
    assert said[-1].startswith("Hello there!")  # the next turn is answered in full
    assert [e for e in events if e.kind == "error" and e.turn == 2] == []
    assert pipe.running
    await pipe.stop()


class InProcess:
    """A transport whose wire is the pipeline's own 16 kHz audio (decoded media,
    as aiortc's): what the agent says is collected in ``out``."""

    kind = "in-process"

    def __init__(self) -> None:
        self.traits = TransportTraits(WireMedia(l16(RATE), decoded=True))
        self.port: Port | None = None
        self.out: list[Audio] = []

    def attach(self, port: Port) -> None:
        self.port = port

    def send(self, frame: Frame) -> None:
        if type(frame) is Audio:
            self.out.append(frame)

    def clear(self) -> int:
        return 0

    def send_dtmf(self, digits: str) -> None:
        pass

    async def close(self) -> None:
        pass

    def stats(self) -> dict[str, object]:
        return {}


def words(text: str) -> set[str]:
    return set(speech.words(text))


@pytest.mark.slow
async def test_a_conversation_on_real_speech_with_the_embedded_models(speech_dir: Path) -> None:
    """Real recorded speech in; the reply is spoken audio whisper understands."""
    registry = SessionRegistry(2)
    runtime = Runtime(ServiceConfig(greet=False, vad="silero"), registry)
    await runtime.start()
    assert runtime.readiness() == {"models": True, "vad": True}
    session = registry.admit("t", "in-process", "assistant")
    events: list[dict[str, object]] = []
    sub = session.events.subscribe(depth=1024)
    transport = InProcess()
    out = transport.out
    pipe = await runtime.open(session, transport)
    speech = np.fromfile(speech_dir / "goforward.raw", dtype="<i2").astype(np.int16)
    caller = np.concatenate([np.zeros(RATE // 2, np.int16), speech, np.zeros(RATE, np.int16)])
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for k, start in enumerate(range(0, len(caller) - 319, 320)):  # paced as a live call
        await asyncio.sleep(max(0.0, t0 + k * 0.02 - loop.time()))
        pipe.push(Audio(caller[start : start + 320].copy(), RATE, start, loop.time()))
    silence = np.zeros(320, np.int16)
    pts = len(caller)
    deadline = loop.time() + 60
    agent = session.agent
    while not (agent.state is State.LISTENING and any(a.turn == 1 for a in out)):
        assert loop.time() < deadline, "no reply within 60 s"
        await asyncio.sleep(0.02)
        pipe.push(Audio(silence, RATE, pts, loop.time()))
        pts += 320
    while (event := await sub.get(timeout=0.1)) is not None:
        events.append(event)
    caller_said = [e["data"]["text"] for e in events  # type: ignore[index]
                   if e["kind"] == "transcript" and e["data"].get("who") == "caller"  # type: ignore[union-attr]
                   and e["data"]["final"]]  # type: ignore[index]
    interims = [e for e in events if e["kind"] == "transcript" and not e["data"]["final"]]  # type: ignore[index]
    assert interims  # shown while the caller speaks
    agent_said = [e["data"]["text"] for e in events  # type: ignore[index]
                  if e["kind"] == "transcript" and e["data"].get("who") == "agent"]  # type: ignore[union-attr]
    assert caller_said and {"go", "forward"} <= words(caller_said[0])
    assert agent_said and len(words(agent_said[0])) >= 2
    # The reply audio, heard back by whisper, says what the agent wrote.
    reply = np.concatenate([a.pcm for a in out if a.turn == 1])
    rec = await runtime.providers.stt.open()
    await rec.send(reply)
    await rec.finalize()
    heard = await asyncio.wait_for(anext(r async for r in rec.results() if r.final), 30)
    await rec.aclose()
    overlap = len(words(heard.text) & words(agent_said[0])) / len(words(agent_said[0]))
    print(f"caller: {caller_said[0]!r} -> agent: {agent_said[0]!r}; whisper heard {heard.text!r} ({overlap:.0%})")
    assert overlap >= 0.6
    record = pipe.latency.turns[1]
    assert {"speech_end", "transcript", "first_token", "first_tts_audio", "first_played"} <= set(record.marks)
    await pipe.stop()
    await runtime.stop()
