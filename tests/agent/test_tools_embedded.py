"""The assistant on the embedded model (Qwen2.5 on llama.cpp) acting on its call:
asked to hang up, it says a goodbye and the session ends. What is asserted is
the action, never the words."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voxline.agent.assistant import AgentEvent, Assistant, AssistantConfig
from voxline.agent.prompts import SYSTEM_PROMPT
from voxline.agent.toolbox import END_CALL, Toolbox
from voxline.control.line import SessionLine
from voxline.control.session import SessionRegistry, SessionState
from voxline.media.clock import LoopClock
from voxline.media.frames import Audio, SpeechEnded, SpeechStarted
from voxline.media.pipeline import Pipeline
from voxline.media.playout import Playout
from voxline.providers.base import Deadlines
from voxline.providers.llm.llama import LlamaConfig, LlamaLLM

from .fakes import FakeSTT, FakeTTS

pytestmark = pytest.mark.slow
RATE = 16000


async def test_asked_to_hang_up_the_embedded_model_ends_the_call() -> None:
    clock = LoopClock()
    llm = LlamaLLM(LlamaConfig(temperature=0.0, max_tokens=64))
    registry = SessionRegistry(4)
    session = registry.admit("t", "sip", "assistant")
    session.set_state(SessionState.ACTIVE)
    box = Toolbox([END_CALL], line=SessionLine(session))
    slow = Deadlines(connect=60.0, first_result=60.0, idle=30.0, total=120.0)
    await llm.warm(SYSTEM_PROMPT, slow, tools=box.specs)  # as the runtime does at start
    events: list[AgentEvent] = []
    agent = Assistant(FakeSTT(clock, ("Please hang up the call now.",), delay=0.01),  # type: ignore[arg-type]
                      llm, FakeTTS(clock), fallback_tts=FakeTTS(clock, "offline"),  # type: ignore[arg-type]
                      config=AssistantConfig(greeting=None, preemptive=False, prefill_interims=False,
                                             deadlines=slow),
                      observer=events.append, toolbox=box)
    pipe = Pipeline([agent, Playout(RATE, capacity=400)], lambda f: None)  # type: ignore[list-item]
    session.pipeline = pipe
    await pipe.start()
    try:
        loop = asyncio.get_running_loop()
        pipe.push(SpeechStarted(0, RATE, loop.time(), 1))
        for i in range(75):  # 1.5 s: long enough to have said the scripted words (the guard checks)
            pipe.push(Audio(np.full(320, 300, np.int16), RATE, i * 320, loop.time(), 1))
            await asyncio.sleep(0.02)
        pipe.push(SpeechEnded(75 * 320, RATE, 0.0, loop.time(), 1))
        async with asyncio.timeout(120):
            while session.state is not SessionState.ENDED:
                await asyncio.sleep(0.05)
        assert session.end_reason == "agent: end_call"
        actions = [e.data for e in events if e.kind == "action"]
        assert [a.get("state") for a in actions if a.get("name") == END_CALL] == ["started", "done", "hanging_up"]
        said = [e.data["text"] for e in events if e.kind == "transcript" and e.data.get("who") == "agent"]
        assert said and said[-1].strip() and "{" not in said[-1]  # a goodbye, not the call's JSON
    finally:
        await pipe.stop("test over")
