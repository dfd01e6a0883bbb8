"""Agent actions: the tools the assistant may call, end to end.

The LLM is a scripted OpenAI-compatible server on loopback (real HTTP, real
SSE, tool-call arguments in fragments); HTTP tools are a local receiver; the
call is a real session whose line the built-ins act on. Real time, but nothing
here depends on how fast the machine is: every wait is for an event, under a
generous deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest

from voxline.agent.assistant import AgentEvent, Assistant, AssistantConfig
from voxline.agent.toolbox import END_CALL, SEND_DTMF, TRANSFER, HttpTool, LineRefused, Toolbox
from voxline.control.line import SessionLine
from voxline.control.session import Session, SessionRegistry, SessionState
from voxline.media.clock import LoopClock
from voxline.media.frames import Audio, Frame, SpeechEnded, SpeechStarted
from voxline.media.pipeline import Pipeline
from voxline.media.playout import Playout
from voxline.providers.base import Deadlines
from voxline.providers.llm.openai_compat import OpenAICompatLLM
from voxline.providers.llm.tools import TextToolParser, ToolCall, ToolCallAssembler, ToolSpec

from .fakes import FakeSTT, FakeTTS
from .scripted import ScriptedChat, Step, ToolReceiver

RATE = 16000
DEADLINE = 20.0  # s for anything to happen; the calls take about a second each


@dataclass
class LiveCall:
    session: Session
    agent: Assistant
    pipe: Pipeline
    tts: FakeTTS
    events: list[AgentEvent] = field(default_factory=list)
    sent: list[Frame] = field(default_factory=list)
    pts: int = 0

    async def speak(self, turn: int) -> None:
        self.pipe.push(SpeechStarted(self.pts, RATE, asyncio.get_running_loop().time(), turn))
        for _ in range(50):  # 1 s: long enough to have said the scripted words (the guard checks)
            self.pipe.push(Audio(np.full(320, 300, np.int16), RATE, self.pts, asyncio.get_running_loop().time(), turn))
            self.pts += 320
            await asyncio.sleep(0.02)
        self.pipe.push(SpeechEnded(self.pts, RATE, 0.0, asyncio.get_running_loop().time(), turn))

    def actions(self, **match: Any) -> list[dict[str, Any]]:
        return [e.data for e in self.events if e.kind == "action"
                and all(e.data.get(k) == v for k, v in match.items())]

    async def wait_for(self, what: Any, deadline: float = DEADLINE) -> None:
        async with asyncio.timeout(deadline):
            while not what():
                await asyncio.sleep(0.02)


class RecordingLine:
    """A line that records what the agent did to it."""

    def __init__(self, refuse_transfer: str | None = None) -> None:
        self.hung_up: list[str] = []
        self.transferred: list[str] = []
        self.digits: list[str] = []
        self.refuse = refuse_transfer

    def hang_up(self, reason: str) -> None:
        self.hung_up.append(reason)

    def check_transfer(self, target: str) -> None:
        if self.refuse:
            raise LineRefused(self.refuse)

    def transfer(self, target: str) -> None:
        self.transferred.append(target)

    def send_dtmf(self, digits: str) -> None:
        self.digits.append(digits)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def live_call(chat: ScriptedChat, toolbox: Toolbox, script: tuple[str, ...],
                    http: aiohttp.ClientSession, session: Session | None = None, rounds: int = 3) -> LiveCall:
    clock = LoopClock()
    stt = FakeSTT(clock, script, delay=0.01)  # type: ignore[arg-type]
    tts = FakeTTS(clock)  # type: ignore[arg-type]
    llm = OpenAICompatLLM(chat.base_url, None, "scripted", session=http,
                          deadlines=Deadlines(connect=2.0, first_result=5.0, idle=5.0, total=15.0))
    events: list[AgentEvent] = []
    agent = Assistant(stt, llm, tts, fallback_tts=FakeTTS(clock, "offline", level=77),  # type: ignore[arg-type]
                      config=AssistantConfig(greeting=None, preemptive=False, prepare_between_turns=False,
                                             max_tool_rounds=rounds),
                      observer=events.append, toolbox=toolbox)
    sent: list[Frame] = []
    pipe = Pipeline([agent, Playout(RATE, capacity=400)], sent.append)  # type: ignore[list-item]
    if session is None:
        registry = SessionRegistry(4)
        session = registry.admit("t", "loopback", "assistant")
        session.set_state(SessionState.ACTIVE)
    session.pipeline = pipe
    await pipe.start()
    return LiveCall(session, agent, pipe, tts, events, sent)


@pytest.fixture
async def chat() -> AsyncIterator[ScriptedChat]:
    c = ScriptedChat([])
    await c.start()
    yield c
    await c.close()


# -- parsing what models write -----------------------------------------------------


def parse_text(pieces: list[str]) -> tuple[str, list[ToolCall]]:
    p = TextToolParser()
    said = "".join(t for piece in pieces for t in p.feed(piece))
    rest, calls = p.close()
    return said + rest, calls


def test_qwen_json_call_is_taken_out_of_the_text() -> None:
    # As llama.cpp streams Qwen2.5's call (its <tool_call> tags are special tokens, dropped).
    said, calls = parse_text(['{"', 'name', '":', ' "', 'get_order', '_status', '",', ' "arguments', '":',
                              ' {"', 'order_id', '":', ' "', '4', '5', '1', '7', '"}}'])
    assert said == ""
    assert [(c.name, c.arguments, c.error) for c in calls] == [("get_order_status", {"order_id": "4517"}, None)]


def test_tagged_calls_after_words_and_plain_words() -> None:
    said, calls = parse_text(["Let me check. <tool", "_call>\n", '{"name": "end_call", "arguments": {}}',
                              "\n</tool_call>"])
    assert said.strip() == "Let me check."
    assert [c.name for c in calls] == ["end_call"]
    said, calls = parse_text(["The capital", " of France < is Paris."])
    assert said == "The capital of France < is Paris." and calls == []


def test_unreadable_calls_are_errors_never_speech() -> None:
    said, calls = parse_text(['{"name": "transfer", "arguments": {"target": "sa'])
    assert said == "" and calls[0].name == "transfer" and calls[0].error
    said, calls = parse_text(['{"weather": "sunny"}'])
    assert said == "" and calls == []  # stray JSON is not said, and not a call


def test_openai_fragments_join_by_index() -> None:
    a = ToolCallAssembler()
    a.feed([{"index": 0, "id": "c1", "function": {"name": "lookup", "arguments": '{"q"'}}])
    a.feed([{"index": 1, "id": "c2", "function": {"name": "end_call", "arguments": ""}}])
    a.feed([{"index": 0, "function": {"arguments": ': "x"}'}}])
    calls = a.calls()
    assert [(c.id, c.name, c.arguments) for c in calls] == [("c1", "lookup", {"q": "x"}), ("c2", "end_call", {})]
    with pytest.raises(ValueError, match="index"):
        a.feed([{"index": 99}])


# -- the toolbox ----------------------------------------------------------------------


async def test_bad_calls_fail_with_a_reason_and_nothing_runs() -> None:
    line = RecordingLine(refuse_transfer="calls over twilio cannot be transferred from here")
    box = Toolbox([END_CALL, TRANSFER, SEND_DTMF], line=line)
    out = await box.run(ToolCall("1", "launch_rockets", {}))
    assert "no tool named" in out.result["error"]
    out = await box.run(ToolCall("2", SEND_DTMF, {"digits": "12; rm -rf"}))
    assert "digits" in out.result["error"] and line.digits == []
    out = await box.run(ToolCall("3", TRANSFER, {"target": "sip:desk@127.0.0.1"}))
    assert out.result == {"error": "calls over twilio cannot be transferred from here"} and out.after is None
    assert not out.ok
    out = await box.run(ToolCall("4", SEND_DTMF, {"digits": "1 2 #"}))
    assert out.ok and line.digits == ["12#"]
    out = await box.run(ToolCall("5", END_CALL, {}, error="arguments are not JSON"))
    assert "could not be read" in out.result["error"] and line.hung_up == []


async def test_transfer_targets_restrict_where_the_model_may_send_a_caller() -> None:
    box = Toolbox([TRANSFER], line=RecordingLine(), transfer_targets={"sales": "sip:sales@127.0.0.1:5062"})
    spec = box.specs[0]
    assert spec.parameters["properties"]["target"]["enum"] == ["sales"]
    out = await box.run(ToolCall("1", TRANSFER, {"target": "sip:premium@198.51.100.1"}))
    assert "no transfer target" in out.result["error"]
    out = await box.run(ToolCall("2", TRANSFER, {"target": "Sales"}))
    assert out.ok and out.target == "sip:sales@127.0.0.1:5062"


def test_http_tools_are_checked_when_configured() -> None:
    with pytest.raises(ValueError, match="built-in"):
        HttpTool(END_CALL, "x", "http://127.0.0.1/")
    with pytest.raises(ValueError, match="url"):
        HttpTool("lookup", "x", "file:///etc/passwd")
    with pytest.raises(ValueError, match="timeout"):
        HttpTool("lookup", "x", "http://127.0.0.1/", timeout=0)


# -- end to end: a scripted OpenAI-compatible server ------------------------------------


async def test_http_tool_then_end_call(chat: ScriptedChat, http: aiohttp.ClientSession) -> None:
    receiver = ToolReceiver(lambda body: {"status": "shipped", "eta": "Tuesday"})
    await receiver.start()
    try:
        chat.script = [
            Step("Let me look that up.", [("order_status", {"order_id": "4517"})]),
            Step("Your order has shipped and arrives Tuesday."),
            Step("You're welcome, goodbye!", [(END_CALL, {})]),
        ]
        tool = HttpTool("order_status", "The status of an order", receiver.url(),
                        {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
                        timeout=5.0)
        registry = SessionRegistry(4)
        session = registry.admit("t", "loopback", "assistant")
        session.set_state(SessionState.ACTIVE)
        box = Toolbox([END_CALL], [tool], SessionLine(session), call_id=session.id)
        call = await live_call(chat, box, ("where is my order 4517", "thanks, that's all"), http, session)
        try:
            await call.speak(1)
            await call.wait_for(lambda: any(e.kind == "heard" and e.turn == 1 for e in call.events))
            # The tool got the arguments the model wrote, and the call they belong to.
            assert receiver.bodies == [{"tool": "order_status", "call_id": session.id,
                                        "arguments": {"order_id": "4517"}}]
            # The model was offered the tools, and its next request carried the result.
            first, second = chat.requests[0], chat.requests[1]
            assert {t["function"]["name"] for t in first["tools"]} == {END_CALL, "order_status"}
            calls_msg, result_msg = second["messages"][-2:]
            assert calls_msg["tool_calls"][0]["function"]["name"] == "order_status"
            assert orjson.loads(calls_msg["tool_calls"][0]["function"]["arguments"]) == {"order_id": "4517"}
            assert result_msg["role"] == "tool" and result_msg["tool_call_id"] == calls_msg["tool_calls"][0]["id"]
            assert orjson.loads(result_msg["content"]) == {"status": "shipped", "eta": "Tuesday"}
            assert "shipped" in " ".join(call.tts.texts)
            done = call.actions(name="order_status", state="done")
            assert done and done[0]["result"] == {"status": "shipped", "eta": "Tuesday"}

            await call.speak(2)
            await call.wait_for(lambda: session.state is SessionState.ENDED)
            assert session.end_reason == "agent: end_call"
            # The goodbye was voiced before the line was hung up.
            assert any("goodbye" in t.lower() for t in call.tts.texts)
            states = [a["state"] for a in call.actions(name=END_CALL)]
            assert states == ["started", "done", "hanging_up"]
            # The next turn's context keeps the exchange (the call and its result).
            assert any(m.get("role") == "tool" for m in chat.requests[2]["messages"])
        finally:
            await call.pipe.stop("test over")
    finally:
        await receiver.close()


@pytest.mark.parametrize("behaviour", ["hangs", "fails", "unreachable"])
async def test_a_failing_tool_costs_its_turn_only(chat: ScriptedChat, http: aiohttp.ClientSession,
                                                  behaviour: str) -> None:
    receiver = ToolReceiver(lambda body: None if behaviour == "hangs" else 500)
    await receiver.start()
    try:
        url = receiver.url() if behaviour != "unreachable" else "http://127.0.0.1:9/tool"
        chat.script = [Step("", [("lookup", {"q": "balance"})]),
                       Step("Sorry, I can't look that up right now."),
                       Step("It is noon.")]
        box = Toolbox([], [HttpTool("lookup", "Look something up", url, timeout=0.5)])
        call = await live_call(chat, box, ("what is my balance", "what time is it"), http)
        try:
            await call.speak(1)
            await call.wait_for(lambda: any(e.kind == "heard" and e.turn == 1 for e in call.events))
            failed = call.actions(name="lookup", state="failed")
            assert len(failed) == 1 and failed[0]["error"]
            told = orjson.loads(chat.requests[1]["messages"][-1]["content"])
            assert "error" in told  # the model was told it failed, and answered in words
            assert "can't look that up" in " ".join(call.tts.texts)
            await call.speak(2)  # the call goes on
            await call.wait_for(lambda: any(e.kind == "heard" and e.turn == 2 for e in call.events))
            assert "noon" in " ".join(call.tts.texts)
            assert call.session.state is SessionState.ACTIVE
        finally:
            await call.pipe.stop("test over")
    finally:
        await receiver.close()


async def test_tool_rounds_are_capped(chat: ScriptedChat, http: aiohttp.ClientSession) -> None:
    receiver = ToolReceiver(lambda body: {"more": True})
    await receiver.start()
    try:
        chat.script = [Step("", [("lookup", {"n": i})]) for i in range(5)]
        chat.script[2:] = [Step("Here is what I found.")]
        box = Toolbox([], [HttpTool("lookup", "Look something up", receiver.url(), timeout=2.0)])
        call = await live_call(chat, box, ("look it up",), http, rounds=2)
        try:
            await call.speak(1)
            await call.wait_for(lambda: any(e.kind == "heard" and e.turn == 1 for e in call.events))
            assert len(receiver.bodies) == 2
            assert call.actions(state="capped")
            assert "tools" in chat.requests[1] and "tools" not in chat.requests[2]  # the last round: words only
            assert "Here is what I found." in " ".join(call.tts.texts)
        finally:
            await call.pipe.stop("test over")
    finally:
        await receiver.close()


async def test_transfer_refused_is_said_and_the_call_goes_on(chat: ScriptedChat, http: aiohttp.ClientSession) -> None:
    chat.script = [Step("", [(TRANSFER, {"target": "sip:desk@127.0.0.1"})]),
                   Step("I'm sorry, I can't transfer this call.")]
    registry = SessionRegistry(4)
    session = registry.admit("t", "twilio", "assistant")
    session.set_state(SessionState.ACTIVE)
    box = Toolbox([TRANSFER], line=SessionLine(session))
    call = await live_call(chat, box, ("put me through to a person",), http, session)
    try:
        await call.speak(1)
        await call.wait_for(lambda: any(e.kind == "heard" and e.turn == 1 for e in call.events))
        failed = call.actions(name=TRANSFER, state="failed")
        assert failed and "twilio" in failed[0]["error"]
        assert "twilio" in orjson.loads(chat.requests[1]["messages"][-1]["content"])["error"]
        assert "can't transfer" in " ".join(call.tts.texts)
        assert session.state is SessionState.ACTIVE
    finally:
        await call.pipe.stop("test over")


def test_tool_specs_are_openai_functions() -> None:
    from voxline.providers.llm.tools import openai_tools

    spec = ToolSpec("lookup", "Look up", {"type": "object", "properties": {"q": {"type": "string"}}})
    assert openai_tools([spec]) == [{"type": "function", "function": {
        "name": "lookup", "description": "Look up",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]


async def test_the_same_call_again_is_answered_from_its_result(chat: ScriptedChat, http: aiohttp.ClientSession) -> None:
    receiver = ToolReceiver(lambda body: {"balance": 12})
    await receiver.start()
    try:
        chat.script = [Step("", [("lookup", {"q": "balance"})]), Step("", [("lookup", {"q": "balance"})]),
                       Step("Your balance is twelve.")]
        box = Toolbox([], [HttpTool("lookup", "Look something up", receiver.url(), timeout=2.0)])
        call = await live_call(chat, box, ("what is my balance",), http)
        try:
            await call.speak(1)
            await call.wait_for(lambda: any(e.kind == "heard" and e.turn == 1 for e in call.events))
            assert len(receiver.bodies) == 1  # asked twice, run once
            assert call.actions(state="repeated")
            assert "tools" not in chat.requests[2]
            assert "twelve" in " ".join(call.tts.texts)
        finally:
            await call.pipe.stop("test over")
    finally:
        await receiver.close()


async def test_nothing_after_end_call_runs_and_the_history_stays_well_formed(chat: ScriptedChat,
                                                                            http: aiohttp.ClientSession) -> None:
    receiver = ToolReceiver(lambda body: {"ok": True})
    await receiver.start()
    try:
        chat.script = [Step("Goodbye now.", [(END_CALL, {}), ("lookup", {"q": "x"})])]
        registry = SessionRegistry(4)
        session = registry.admit("t", "loopback", "assistant")
        session.set_state(SessionState.ACTIVE)
        box = Toolbox([END_CALL], [HttpTool("lookup", "Look up", receiver.url())], SessionLine(session))
        call = await live_call(chat, box, ("bye",), http, session)
        try:
            await call.speak(1)
            await call.wait_for(lambda: session.state is SessionState.ENDED)
            assert receiver.bodies == []  # the call was ending: the lookup was never made
            history = call.agent.conversation.history()
            asked = [c["id"] for m in history for c in m.get("tool_calls", [])]  # type: ignore[attr-defined]
            answered = [m["tool_call_id"] for m in history if m["role"] == "tool"]  # type: ignore[typeddict-item]
            assert asked == answered == ["call_0"]
        finally:
            await call.pipe.stop("test over")
    finally:
        await receiver.close()
