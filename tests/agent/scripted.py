"""A scripted OpenAI-compatible server and an HTTP tool receiver, on loopback.

The chat server answers each ``POST /v1/chat/completions`` with the next step
of its script, streamed as a real server streams it (SSE chunks, the role
chunk first, tool call arguments in fragments, ``[DONE]``), and keeps every
request body. A step is text, tool calls, or both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Step:
    text: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (name, arguments)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "scripted",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


class ScriptedChat:
    def __init__(self, script: list[Step]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.server: TestServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/v1"))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(orjson.loads(await request.read()))
        step = self.script.pop(0) if self.script else Step("I have nothing more to say.")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_chunk({"role": "assistant", "content": None}))
        for word in step.text.split(" ") if step.text else ():
            await resp.write(_chunk({"content": word + " "}))
        for i, (name, args) in enumerate(step.calls):
            raw = orjson.dumps(args).decode()
            await resp.write(_chunk({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                                     "function": {"name": name, "arguments": ""}}]}))
            for cut in range(0, len(raw), 5):  # arguments arrive in fragments
                await resp.write(_chunk({"tool_calls": [{"index": i, "function": {"arguments": raw[cut:cut + 5]}}]}))
        await resp.write(_chunk({}, "tool_calls" if step.calls else "stop"))
        await resp.write(b"data: [DONE]\n\n")
        return resp


class ToolReceiver:
    """An HTTP tool: records each POSTed body, answers with ``answer(body)``
    (a dict: JSON; an int: that status; None: never answers)."""

    def __init__(self, answer: Callable[[dict[str, Any]], Any]) -> None:
        self.answer = answer
        self.bodies: list[dict[str, Any]] = []
        self.server: TestServer | None = None
        self._hold = asyncio.Event()

    def url(self, path: str = "/tool") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/tool", self._tool)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()

    async def close(self) -> None:
        self._hold.set()
        if self.server is not None:
            await self.server.close()

    async def _tool(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(orjson.loads(await request.read()))
        answer = self.answer(self.bodies[-1])
        if answer is None:
            await self._hold.wait()  # a tool that hangs
            return web.Response(status=504)
        if isinstance(answer, int):
            return web.Response(status=answer, text="down")
        return web.json_response(answer)
