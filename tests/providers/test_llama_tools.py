"""The embedded model (Qwen2.5 on llama.cpp) calling tools through its own chat template.

What is asserted is the action taken (which tool, the order number's digits),
never the wording. Temperature 0; the first call evaluates the tools' prompt
cold, so the deadlines are a model's, not a caller's.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from voxline.agent.prompts import SYSTEM_PROMPT
from voxline.agent.toolbox import BUILTINS, END_CALL, TRANSFER, HttpTool
from voxline.providers.base import Deadlines, Message
from voxline.providers.llm.llama import LlamaConfig, LlamaLLM
from voxline.providers.llm.tools import ToolCall, assistant_calls, tool_result

pytestmark = pytest.mark.slow

ORDER = HttpTool("get_order_status", "Look up the status of an order by its number.", "http://127.0.0.1:9/",
                 {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}).spec
TOOLS = [BUILTINS[END_CALL], BUILTINS[TRANSFER], ORDER]
SLOW = Deadlines(connect=60.0, first_result=60.0, idle=30.0, total=120.0)


@pytest.fixture(scope="module")
def llm() -> LlamaLLM:
    return LlamaLLM(LlamaConfig(temperature=0.0, max_tokens=64))


async def ask(llm: LlamaLLM, messages: list[Any], tools: bool = True) -> tuple[str, list[ToolCall]]:
    stream = llm.stream(messages, SLOW, tools=TOOLS if tools else None)
    text, calls = [], []
    try:
        async for item in stream:
            (text if isinstance(item, str) else calls).append(item)
    finally:
        await stream.aclose()
    return "".join(text), calls


def turn(words: str) -> list[Message]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": words}]


async def test_a_question_that_needs_a_lookup_calls_the_tool(llm: LlamaLLM) -> None:
    said, calls = await ask(llm, turn("What is the status of my order 4517?"))
    assert [c.name for c in calls] == ["get_order_status"], (said, calls)
    assert re.sub(r"\D", "", str(calls[0].arguments.get("order_id"))) == "4517"
    assert "{" not in said  # the call's JSON is never spoken


async def test_asked_to_hang_up_it_ends_the_call(llm: LlamaLLM) -> None:
    said, calls = await ask(llm, turn("Please hang up the call now."))
    assert [c.name for c in calls] == [END_CALL], (said, calls)


async def test_a_plain_question_is_answered_in_words(llm: LlamaLLM) -> None:
    said, calls = await ask(llm, turn("What is the capital of France?"))
    assert calls == [] and "paris" in said.lower()


async def test_the_result_reaches_the_next_round(llm: LlamaLLM) -> None:
    messages: list[Any] = turn("What is the status of my order 4517?")
    _, calls = await ask(llm, messages)
    assert calls and calls[0].name == "get_order_status"
    messages += [assistant_calls(calls), tool_result(calls[0], {"status": "shipped", "arrives": "Tuesday"})]
    said, again = await ask(llm, messages)
    if again:  # the 0.5B model asks again for what it was just given: the speaker then asks without tools
        assert [(c.name, c.arguments) for c in again] == [(c.name, c.arguments) for c in calls]
        said, again = await ask(llm, messages, tools=False)
    assert again == [] and re.search(r"ship|tuesday", said.lower()), said
