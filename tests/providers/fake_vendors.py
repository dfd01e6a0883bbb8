"""Local stand-ins for the vendors' APIs, speaking their documented wire formats.

One aiohttp server on 127.0.0.1 serves every vendor's route:

=================  ==================================================  ============
vendor key         route                                               format
=================  ==================================================  ============
``chat``           POST /v1/chat/completions                           SSE (OpenAI)
``openai_tts``     POST /v1/audio/speech                               raw s16le 24k
``elevenlabs``     POST /v1/text-to-speech/{voice_id}/stream           raw s16le
``deepgram_tts``   POST /v1/speak                                      raw s16le
``listen``         GET  /v1/listen (WebSocket)                         Deepgram v1
=================  ==================================================  ============

Each vendor key has a behaviour (``vendors.set(key, Behaviour.X, ...)``):

- ``NORMAL``: recorded-shape responses (chat replays ``tests/data/vendors/*.sse``
  in the selected ``flavour``: openai, groq, ollama, vllm, llamacpp).
- ``HTTP_401`` / ``HTTP_429`` / ``HTTP_500``: the vendor's own error JSON
  (``errors.json``); for the WebSocket, a refused handshake with ``dg-error``.
- ``SLOW_FIRST_BYTE``: wait ``delay`` seconds before answering, then behave normally.
- ``STALL``: send the first part, then nothing (until the test ends).
- ``DROP``: send the first part, then cut the TCP connection.
- ``MALFORMED``: a broken chunk (chat: invalid JSON in a ``data:`` line; audio: an
  odd number of bytes in total; listen: a non-JSON text frame).
- chat only: ``ERROR_EVENT`` (``data: {"error": ...}`` after a token),
  ``LEGACY_ERROR`` (llama.cpp's old ``error: {...}`` field), ``KEEPALIVE_ONLY``
  (``: ping`` comments and no data), ``JSON`` (ignores ``stream``, answers JSON).
- listen only: ``CLOSE_ERROR`` (close frame 1011 ``NET-0000`` after the first audio).

Every request is recorded (``vendors.requests``) with its path, query, headers and
body, and the listen socket's text frames in ``vendors.control``, so tests check
what went over the wire. Waits on the server side are bounded by ``release``.
"""

from __future__ import annotations

import asyncio
import enum
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

__all__ = ["Behaviour", "FakeVendors", "Recorded", "DATA", "WORDS", "tone"]

DATA = Path(__file__).resolve().parent.parent / "data" / "vendors"
ERRORS: dict[str, dict[str, Any]] = json.loads((DATA / "errors.json").read_text())
LISTEN: dict[str, dict[str, Any]] = json.loads((DATA / "deepgram_listen.json").read_text())
WORDS = ["Hello", " there", "!", " Café", " at", " 9", " —", " shall", " I", " book", " it", "?"]
MAX_WAIT = 30.0  # no server-side wait outlives a test
AUDIO_SECONDS = 0.25
AUDIO_CHUNK = 999  # odd on purpose: samples split across writes


class Behaviour(enum.Enum):
    NORMAL = "normal"
    HTTP_401 = 401
    HTTP_429 = 429
    HTTP_500 = 500
    SLOW_FIRST_BYTE = "slow_first_byte"
    STALL = "stall"
    DROP = "drop"
    MALFORMED = "malformed"
    ERROR_EVENT = "error_event"
    LEGACY_ERROR = "legacy_error"
    KEEPALIVE_ONLY = "keepalive_only"
    JSON = "json"
    CLOSE_ERROR = "close_error"


@dataclass
class Recorded:
    vendor: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None


@dataclass
class _Setting:
    behaviour: Behaviour = Behaviour.NORMAL
    delay: float = 0.0
    flavour: str = "openai"
    split: int = 0  # chat: write the SSE body in pieces of this many bytes (0: per event)
    close_reused: bool = False  # chat: like llama-server, drop a kept-alive connection when reused


def tone(rate: int, seconds: float = AUDIO_SECONDS, freq: float = 440.0) -> bytes:
    """The audio every fake TTS returns: a sine, s16le, so tests can compare samples."""
    n = int(rate * seconds)
    t = np.arange(n) / rate
    return (np.sin(2 * math.pi * freq * t) * 8000).astype("<i2").tobytes()


@dataclass
class FakeVendors:
    settings: dict[str, _Setting] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    control: list[dict[str, Any]] = field(default_factory=list)
    audio_bytes: int = 0
    server: TestServer | None = None

    def __post_init__(self) -> None:
        self.release = asyncio.Event()
        self.disconnected = asyncio.Event()  # a stalled response saw its client leave
        self.connections = 0
        self.stale_closed = 0
        self._seen_transports: set[int] = set()

    # -- control from tests ----------------------------------------------------

    def set(self, vendor: str, behaviour: Behaviour = Behaviour.NORMAL, **opts: Any) -> None:
        self.settings[vendor] = _Setting(behaviour, **opts)

    def setting(self, vendor: str) -> _Setting:
        return self.settings.get(vendor, _Setting())

    def url(self, path: str = "") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    def ws_url(self, path: str = "/v1/listen") -> str:
        return self.url(path).replace("http://", "ws://", 1)

    def last(self, vendor: str) -> Recorded:
        return [r for r in self.requests if r.vendor == vendor][-1]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/audio/speech", self._openai_tts)
        app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._elevenlabs)
        app.router.add_post("/v1/speak", self._deepgram_tts)
        app.router.add_get("/v1/listen", self._listen)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()

    async def close(self) -> None:
        self.release.set()
        if self.server is not None:
            await self.server.close()

    async def _hold(self, seconds: float = MAX_WAIT) -> None:
        """Stall (or delay) until ``seconds`` pass or the test releases the server."""
        try:
            await asyncio.wait_for(self.release.wait(), seconds)
        except TimeoutError:
            pass

    async def _record(self, vendor: str, request: web.Request, *, json_body: bool = True) -> Recorded:
        body = await request.json() if json_body and request.can_read_body else None
        rec = Recorded(vendor, request.path, dict(request.query), dict(request.headers), body)
        self.requests.append(rec)
        return rec

    async def _hold_open(self, request: web.Request) -> None:
        """Stall a response, noticing (within 10 ms) when the client drops the connection.

        aiohttp cancels a handler whose connection is lost; polling the transport
        covers servers configured not to.
        """
        try:
            for _ in range(int(MAX_WAIT / 0.01)):
                if request.transport is None or request.transport.is_closing():
                    self.disconnected.set()
                    return
                if self.release.is_set():
                    return
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.disconnected.set()
            raise

    def _error(self, family: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(ERRORS[family][str(status)], status=status, headers=headers)

    # -- OpenAI-compatible chat completions ------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        await self._record("chat", request)
        s = self.setting("chat")
        b = s.behaviour
        if s.close_reused:
            assert request.transport is not None
            key = id(request.transport)
            if key in self._seen_transports:
                # llama-server says "Keep-Alive" but its connection is gone by the next
                # request: the client sees the socket close with no response.
                self.stale_closed += 1
                request.transport.close()
                return web.Response()
            self._seen_transports.add(key)
        if isinstance(b.value, int):
            headers = {"Retry-After": "20"} if b.value == 429 else None
            return self._error("openai", b.value, headers)
        if b is Behaviour.SLOW_FIRST_BYTE:
            await self._hold(s.delay)
        raw = (DATA / f"{s.flavour}_chat_stream.sse").read_bytes()
        events = [e + b"\n\n" for e in raw.split(b"\n\n") if e]
        if s.flavour == "llamacpp":
            events[-1] = events[-1][:-2]  # llama.cpp: no blank line after [DONE]
        if b is Behaviour.JSON:
            text = "".join(WORDS)
            return web.json_response({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1727000000,
                "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                           "finish_reason": "stop"}],
            })
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        if b is Behaviour.KEEPALIVE_ONLY:
            for _ in range(200):
                await resp.write(b": ping\n\n")
                await asyncio.sleep(0.02)
                if self.release.is_set():
                    break
            return resp
        head = events[:3]  # role chunk and two tokens
        if b in (Behaviour.STALL, Behaviour.DROP, Behaviour.MALFORMED, Behaviour.ERROR_EVENT,
                 Behaviour.LEGACY_ERROR):
            for e in head:
                await resp.write(e)
            if b is Behaviour.STALL:
                await self._hold_open(request)
            elif b is Behaviour.DROP:
                assert request.transport is not None
                request.transport.close()
                return resp
            elif b is Behaviour.MALFORMED:
                await resp.write(b'data: {"choices":[{"delta":{"content":"x"\n\n')
            elif b is Behaviour.ERROR_EVENT:
                await resp.write(b"data: " + json.dumps(ERRORS["openai"]["stream"]).encode() + b"\n\n")
                await resp.write(b"data: [DONE]\n\n")
            else:
                await resp.write(b"error: " + json.dumps(ERRORS["llamacpp"]["stream"]).encode() + b"\n\n")
                await resp.write(b"data: [DONE]\n\n")
            return resp
        body = b"".join(events)
        if s.split:
            for i in range(0, len(body), s.split):
                await resp.write(body[i:i + s.split])
                await asyncio.sleep(0)
        else:
            for e in events:
                await resp.write(e)
        await resp.write_eof()
        return resp

    # -- TTS -----------------------------------------------------------------

    async def _audio(self, request: web.Request, vendor: str, family: str, rate: int) -> web.StreamResponse:
        s = self.setting(vendor)
        b = s.behaviour
        if isinstance(b.value, int):
            return self._error(family, b.value)
        if b is Behaviour.SLOW_FIRST_BYTE:
            await self._hold(s.delay)
        pcm = tone(rate)
        if b is Behaviour.MALFORMED:
            pcm += b"\x01"  # half a sample at the end
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await resp.prepare(request)
        for i in range(0, len(pcm), AUDIO_CHUNK):
            await resp.write(pcm[i:i + AUDIO_CHUNK])
            if i == AUDIO_CHUNK * 2:
                if b is Behaviour.STALL:
                    await self._hold_open(request)
                    return resp
                if b is Behaviour.DROP:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    async def _openai_tts(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record("openai_tts", request)
        if rec.body.get("response_format") != "pcm":
            return web.json_response({"error": {"message": "test server only speaks pcm"}}, status=400)
        return await self._audio(request, "openai_tts", "openai", 24000)

    async def _elevenlabs(self, request: web.Request) -> web.StreamResponse:
        await self._record("elevenlabs", request)
        fmt = request.query.get("output_format", "mp3_44100_128")
        if not fmt.startswith("pcm_"):
            return web.json_response({"detail": {"status": "invalid", "message": "pcm only here"}}, status=400)
        return await self._audio(request, "elevenlabs", "elevenlabs", int(fmt[4:]))

    async def _deepgram_tts(self, request: web.Request) -> web.StreamResponse:
        await self._record("deepgram_tts", request)
        q = request.query
        if q.get("encoding") != "linear16" or q.get("container") != "none":
            return web.json_response({"err_code": "INVALID_QUERY_PARAMETER", "err_msg": "raw linear16 only"},
                                     status=400)
        return await self._audio(request, "deepgram_tts", "deepgram", int(q.get("sample_rate", "24000")))

    # -- Deepgram live STT -------------------------------------------------------

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record("listen", request, json_body=False)
        s = self.setting("listen")
        b = s.behaviour
        if isinstance(b.value, int):
            body = ERRORS["deepgram"][str(b.value)]
            return web.json_response(body, status=b.value, headers={"dg-error": body["err_msg"]})
        if b is Behaviour.SLOW_FIRST_BYTE:
            await self._hold(s.delay)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        rate = int(rec.query.get("sample_rate", "16000"))
        step = rate  # bytes: an interim for every half second of s16 audio
        words = ["hello", "world", "how", "are", "you"]
        heard = 0  # bytes of the current utterance
        said = 0  # words of the current utterance hypothesised so far
        start = 0.0

        async def results(text: str, **flags: Any) -> None:
            msg = json.loads(json.dumps(LISTEN["Results"]))
            msg.update(flags)
            msg["start"] = start
            msg["duration"] = heard / (2 * rate)
            msg["channel"]["alternatives"][0].update(transcript=text, confidence=0.91)
            await ws.send_str(json.dumps(msg))

        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                self.audio_bytes += len(msg.data)
                if b is Behaviour.STALL:
                    await self._hold()  # and stop reading: no pongs, no results
                    break
                if b is Behaviour.DROP:
                    assert request.transport is not None
                    request.transport.close()
                    break
                if b is Behaviour.CLOSE_ERROR:
                    await ws.close(code=1011, message=b"NET-0000: internal timeout")
                    break
                if b is Behaviour.MALFORMED:
                    await ws.send_str("{not json")
                    continue
                if heard == 0 and rec.query.get("vad_events") == "true":
                    await ws.send_str(json.dumps(LISTEN["SpeechStarted"]))
                before = heard // step
                heard += len(msg.data)
                if heard // step > before and said < len(words):
                    said += 1
                    await results(" ".join(words[:said]), is_final=False)
            elif msg.type == WSMsgType.TEXT:
                ctl = json.loads(msg.data)
                self.control.append(ctl)
                kind = ctl.get("type")
                if kind == "Finalize":
                    text = " ".join(words[:max(said, 1)]) if heard else ""
                    if s.flavour == "segments" and said >= 2:
                        half = " ".join(words[:1])
                        await results(half, is_final=True)
                        text = " ".join(words[1:max(said, 1)])
                    if rec.query.get("utterance_end_ms"):
                        # Committed without an endpoint; UtteranceEnd closes the utterance.
                        if text:
                            await results(text, is_final=True, speech_final=False)
                        await ws.send_str(json.dumps(LISTEN["UtteranceEnd"]))
                    elif text:
                        await results(text, is_final=True, speech_final=False, from_finalize=True)
                    start += heard / (2 * rate)
                    heard = said = 0
                elif kind == "CloseStream":
                    if heard:
                        await results(" ".join(words[:max(said, 1)]), is_final=True, speech_final=True)
                    await ws.send_str(json.dumps(LISTEN["Metadata"]))
                    await ws.close(code=1000)
                    break
        return ws
