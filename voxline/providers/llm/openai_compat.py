"""A streaming LLM over the OpenAI chat completions API (and everything that copies it).

``POST {base_url}/chat/completions`` with ``"stream": true`` answers with Server-Sent
Events: ``data: {chat.completion.chunk}`` events whose ``choices[0].delta.content``
carries the text, ended by ``data: [DONE]``. OpenAI, Groq, vLLM, Ollama
(``http://host:11434/v1``) and llama.cpp's ``llama-server`` (``http://host:8080/v1``)
all speak it, with quirks this module absorbs:

- The first chunk announces the role with ``content`` ``""`` (OpenAI) or ``null``
  (llama.cpp, vLLM); a usage chunk may come with ``choices: []`` (OpenAI's
  ``stream_options.include_usage``, vLLM, llama.cpp). Neither is text.
- Errors after the 200 arrive as ``data: {"error": {...}}`` (OpenAI, Groq, Ollama,
  vLLM, current llama.cpp); llama.cpp builds before late 2025 sent a non-standard
  ``error: {...}`` SSE field instead. Both raise ``ProviderError``.
- llama.cpp has been seen to end the body right after ``data: [DONE]`` with no blank
  line, so a pending event is flushed at end of body (the SSE spec would drop it).
- Keep-alive comments (``: ping``, ``: OPENROUTER PROCESSING``) are skipped and do
  not count as progress: a proxy that only pings is as stalled as a silent one.
- Groq adds ``x_groq`` to chunks; Ollama and llama.cpp accept but may ignore
  ``max_tokens``/``temperature``: unknown fields are ignored both ways.
- A server that ignores ``stream`` and answers ``application/json`` gets its whole
  ``choices[0].message.content`` yielded once.

Deadlines (``Deadlines``): TCP connect; first token (from the request, so a server
that sends headers and then thinks is caught); idle between chunks; total.
Cancelling the consumer, or ``aclose()`` on the iterator, closes the connection at
once, which makes llama.cpp, vLLM and the hosted APIs stop generating.

Tools (``stream(..., tools=[ToolSpec...])``) go out as the request's ``tools``;
the streamed ``delta.tool_calls`` fragments are joined by index and yielded as
``ToolCall``s when the stream ends (tools.py), after any text of the round.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from ..base import Deadlines, Message, ProviderError
from ..http import CallDeadlines, iter_body, post_streaming, shared_session
from .tools import ToolCallAssembler, ToolSpec, openai_tools

__all__ = ["OpenAICompatLLM", "SSEDecoder", "SSEEvent", "SSEError"]

log = logging.getLogger(__name__)

# One SSE event larger than this is not a chat chunk: refuse it rather than buffer it.
MAX_EVENT_BYTES = 1 << 20


class SSEError(ValueError):
    """The event stream is not valid SSE (or exceeds the size limit)."""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str  # "message" unless an ``event:`` field said otherwise
    data: str


class SSEDecoder:
    """Incremental ``text/event-stream`` parser (WHATWG HTML, "server-sent events").

    Sans-I/O: ``feed(bytes)`` returns the events completed by those bytes. Lines end
    in CRLF, LF or CR; ``:`` starts a comment; ``field: value`` loses one leading
    space; ``data`` lines of one event join with ``\\n``; a blank line dispatches.
    Lines are split on bytes before decoding, so a UTF-8 character split across TCP
    reads is reassembled, and a CR at the end of a read waits for a possible LF.
    """

    __slots__ = ("_buf", "_data", "_event", "_size", "comments")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._event = ""
        self._size = 0
        self.comments = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buf += chunk
        events: list[SSEEvent] = []
        start = 0
        buf = self._buf
        n = len(buf)
        while start < n:
            lf = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, lf if lf >= 0 else n)
            if cr >= 0:
                if cr == n - 1:
                    break  # CR last in this read: an LF may follow in the next
                end, nxt = cr, cr + 2 if buf[cr + 1 : cr + 2] == b"\n" else cr + 1
            elif lf >= 0:
                end, nxt = lf, lf + 1
            else:
                break
            self._line(buf[start:end], events)
            start = nxt
        self._buf = buf[start:]
        if len(self._buf) + self._size > MAX_EVENT_BYTES:
            raise SSEError(f"SSE event exceeds {MAX_EVENT_BYTES} bytes")
        return events

    def close(self) -> list[SSEEvent]:
        """End of body: finish a last line and flush an undispatched event (lenient)."""
        events: list[SSEEvent] = []
        if self._buf:
            self._line(self._buf.rstrip(b"\r"), events)
            self._buf = b""
        self._dispatch(events)
        return events

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        if not raw:
            self._dispatch(events)
            return
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SSEError(f"SSE line is not UTF-8: {raw[:40]!r}") from e
        if line[0] == ":":
            self.comments += 1
            return
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._size += len(raw)
        elif field == "event":
            self._event = value
        elif field == "error":
            # llama.cpp (before late 2025) put mid-stream errors in an "error" field.
            self._event = "error"
            self._data.append(value)
            self._size += len(raw)
        # "id" and "retry" drive browser reconnection; a completion is not resumable.

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._data:
            events.append(SSEEvent(self._event or "message", "\n".join(self._data)))
        self._data = []
        self._event = ""
        self._size = 0


class _Done(Exception):
    """``data: [DONE]`` seen."""


def _error_from(provider: str, payload: Any) -> ProviderError:
    err = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(err, dict):
        msg = str(err.get("message") or err)
        kind = str(err.get("type") or "")
        code = err.get("code")
        # A bad request stays bad; overload, rate limits and server faults may pass.
        client_fault = kind in ("invalid_request_error", "authentication_error") or (
            isinstance(code, int) and 400 <= code < 500 and code != 429
        )
        label = kind or (str(code) if code is not None else "error")
        return ProviderError(provider, f"stream error ({label}): {msg[:300]}", retryable=not client_fault)
    return ProviderError(provider, f"stream error: {str(err)[:300]}")


class OpenAICompatLLM:
    """``LanguageModel`` over ``{base_url}/chat/completions`` with streaming."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        *,
        name: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        deadlines: Deadlines | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name or f"openai-compat:{model}"
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.deadlines = deadlines or Deadlines()
        self._session = session
        self._headers: dict[str, str] = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            **(headers or {}),
        }
        if api_key:  # Ollama and llama.cpp need none; sending "Bearer " would be odd
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._body: dict[str, Any] = {"model": model, "stream": True, **(extra_body or {})}
        if temperature is not None:
            self._body["temperature"] = temperature
        if max_tokens is not None:
            # OpenAI's newer name is max_completion_tokens, but the compatible servers
            # only know max_tokens, which OpenAI still accepts for chat models.
            self._body["max_tokens"] = max_tokens

    def __repr__(self) -> str:
        return f"OpenAICompatLLM({self.url!r}, model={self.model!r})"

    supports_tools = True

    async def stream(
        self, messages: Sequence[Message], deadlines: Deadlines | None = None, *,
        tools: Sequence[ToolSpec] | None = None,
    ) -> AsyncIterator[Any]:  # str pieces; with tools, ToolCalls after them (tools.py)
        calls = CallDeadlines(self.name, deadlines or self.deadlines)
        session = self._session or shared_session()
        request: dict[str, Any] = {**self._body, "messages": list(messages)}
        if tools:
            request["tools"] = openai_tools(tools)
        body = orjson.dumps(request)
        wanted = ToolCallAssembler()
        resp = await post_streaming(
            self.name, session, self.url, calls=calls, body=body, headers=self._headers
        )
        done = False
        try:
            ctype = resp.headers.get("Content-Type", "")
            if ctype.startswith("application/json"):
                text = await self._whole(resp, calls, wanted)
                done = True
                if text:
                    yield text
                for call in wanted.calls():
                    yield call
                return
            decoder = SSEDecoder()
            async with aclosing(iter_body(resp, calls)) as chunks:
                async for chunk in chunks:
                    try:
                        events = decoder.feed(chunk)
                    except SSEError as e:
                        raise ProviderError(self.name, f"malformed stream: {e}") from e
                    for ev in events:
                        piece = self._piece(ev, calls, wanted)
                        if piece:
                            calls.result()
                            yield piece
            for ev in decoder.close():
                piece = self._piece(ev, calls, wanted)
                if piece:
                    yield piece
            raise ProviderError(self.name, "stream ended before [DONE]")
        except _Done:
            done = True
            for call in wanted.calls():
                yield call
        finally:
            if done:
                resp.release()
            else:
                # Not at a clean end (cancelled, failed, abandoned): drop the
                # connection so the server stops generating and the pool gets no
                # half-read socket.
                resp.close()

    def _piece(self, ev: SSEEvent, calls: CallDeadlines, wanted: ToolCallAssembler) -> str | None:
        if ev.data == "[DONE]":
            raise _Done
        try:
            obj = orjson.loads(ev.data)
        except orjson.JSONDecodeError:
            if ev.event == "error":
                raise _error_from(self.name, ev.data) from None
            raise ProviderError(self.name, f"malformed chunk: {ev.data[:80]!r}") from None
        if ev.event == "error" or (isinstance(obj, dict) and "error" in obj):
            raise _error_from(self.name, obj)
        if not isinstance(obj, dict):
            raise ProviderError(self.name, f"malformed chunk: {ev.data[:80]!r}")
        calls.progress()
        choices = obj.get("choices")
        if not choices:
            return None  # usage-only chunk
        if not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise ProviderError(self.name, f"malformed chunk: {ev.data[:80]!r}")
        delta = choices[0].get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(delta, dict) and delta.get("tool_calls"):
            try:
                wanted.feed(delta["tool_calls"])
            except ValueError as e:
                raise ProviderError(self.name, f"malformed tool call: {e}", retryable=False) from e
            calls.result()  # a call being written is the model's answer, as a first token is
        reason = choices[0].get("finish_reason")
        if reason not in (None, "stop", "tool_calls"):
            log.info("%s: finish_reason=%s", self.name, reason)
        return content if isinstance(content, str) and content else None

    async def _whole(self, resp: aiohttp.ClientResponse, calls: CallDeadlines, wanted: ToolCallAssembler) -> str:
        async with aclosing(iter_body(resp, calls)) as chunks:
            parts = [c async for c in chunks]
        try:
            obj = orjson.loads(b"".join(parts))
            if "error" in obj:
                raise _error_from(self.name, obj)
            message = obj["choices"][0]["message"]
            text = message.get("content")
            if message.get("tool_calls"):
                wanted.feed([{**c, "index": i} for i, c in enumerate(message["tool_calls"])])
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
            raise ProviderError(self.name, f"malformed completion: {e!r}") from e
        calls.result()
        return text if isinstance(text, str) else ""
