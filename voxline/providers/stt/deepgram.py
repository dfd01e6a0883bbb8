"""Streaming STT over Deepgram's live WebSocket API (``/v1/listen``).

Wire protocol, as documented by Deepgram:

- Handshake: ``GET wss://api.deepgram.com/v1/listen?model=…&encoding=linear16&
  sample_rate=16000&channels=1&interim_results=true&punctuate=true&endpointing=false``
  with ``Authorization: Token <key>``. A refused handshake is an HTTP 4xx/5xx with
  the reason in a ``dg-error`` header.
- Client → server: binary frames of raw audio; text frames ``{"type": "KeepAlive"}``
  (at least every 10 s without audio, or the server closes with ``NET-0001``),
  ``{"type": "Finalize"}`` (flush: transcribe everything sent so far now) and
  ``{"type": "CloseStream"}`` (flush, send the last results and Metadata, close 1000).
  Never an empty binary frame: older versions of the API read it as CloseStream.
- Server → client: ``Results`` (``channel.alternatives[0].transcript``,
  ``confidence``, ``start``, ``duration``, ``is_final``, ``speech_final``,
  ``from_finalize``), ``Metadata``, ``SpeechStarted`` (with ``vad_events``),
  ``UtteranceEnd`` (with ``utterance_end_ms``). Errors close the socket with a
  code and a reason such as ``1011 NET-0001`` or ``1008 DATA-0000``.

Mapping to the ``Recognition`` contract: Deepgram may commit one utterance in
several ``is_final`` segments. A ``final`` Transcription here is the whole
utterance: the committed segments joined, emitted when Deepgram says the utterance
ended (``speech_final``, ``from_finalize`` after our ``finalize()``, or
``UtteranceEnd``). In between, interims carry the committed text plus the current
hypothesis, so a consumer can show progress and replace it wholesale.

Queues: results wait in a bounded deque (``results_capacity``). When it is full,
the oldest *interim* is dropped (a later result supersedes it) and counted; if
every queued result is final, the consumer has stopped reading and the recognition
fails rather than lose what the caller said. Audio is not queued: ``send`` writes
to the socket, whose buffer aiohttp bounds (writes wait for the kernel past its
high-water mark), within the ``idle`` deadline; the caller's own inbox link is
where live audio is dropped under backpressure.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import orjson

from ...media.clock import Clock, LoopClock
from ..base import PCM, Deadlines, ProviderError, ProviderTimeout, Transcription
from ..http import shared_session, status_error

__all__ = ["DeepgramSTT", "DeepgramRecognition", "RecognitionStats"]

log = logging.getLogger(__name__)

KEEPALIVE = '{"type":"KeepAlive"}'
FINALIZE = '{"type":"Finalize"}'
CLOSE_STREAM = '{"type":"CloseStream"}'
MAX_MESSAGE = 1 << 20  # a Results message with word timings is a few kB
CLOSE_WAIT = 2.0  # after CloseStream, how long the last results may take


@dataclass(frozen=True, slots=True)
class RecognitionStats:
    audio_bytes: int
    keepalives: int
    results: int
    dropped_interims: int
    request_id: str | None


class DeepgramSTT:
    """``SpeechToText`` on Deepgram live streaming."""

    def __init__(
        self,
        api_key: str,
        url: str = "wss://api.deepgram.com/v1/listen",
        model: str = "nova-2",
        *,
        sample_rate: int = 16000,
        language: str | None = "en-US",
        punctuate: bool = True,
        smart_format: bool = False,
        interim_results: bool = True,
        endpointing: int | bool = False,
        utterance_end_ms: int | None = None,
        vad_events: bool = False,
        keepalive_interval: float = 4.0,
        heartbeat: float | None = 10.0,
        results_capacity: int = 64,
        name: str | None = None,
        deadlines: Deadlines | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
    ) -> None:
        if results_capacity < 2:
            raise ValueError("results_capacity must be at least 2")
        self.name = name or f"deepgram:{model}"
        self.sample_rate = sample_rate
        self.url = url
        self.deadlines = deadlines or Deadlines()
        self.keepalive_interval = keepalive_interval
        self.heartbeat = heartbeat
        self.results_capacity = results_capacity
        self._api_key = api_key
        self._session = session
        self._clock: Clock = clock or LoopClock()
        params: dict[str, str] = {
            "model": model,
            "encoding": "linear16",
            "sample_rate": str(sample_rate),
            "channels": "1",
            "interim_results": _flag(interim_results),
            "punctuate": _flag(punctuate),
            "smart_format": _flag(smart_format),
            # Off by default: voxline's own turn-taking decides when speech ended and
            # says so with finalize(); an integer (ms) hands that to Deepgram instead.
            "endpointing": _flag(endpointing) if isinstance(endpointing, bool) else str(endpointing),
            "vad_events": _flag(vad_events),
        }
        if language:
            params["language"] = language
        if utterance_end_ms is not None:
            params["utterance_end_ms"] = str(utterance_end_ms)
        self.params = params

    async def open(self, deadlines: Deadlines | None = None) -> DeepgramRecognition:
        d = deadlines or self.deadlines
        session = self._session or shared_session()
        try:
            async with asyncio.timeout(d.connect):
                ws = await session.ws_connect(
                    self.url,
                    params=self.params,
                    headers={"Authorization": f"Token {self._api_key}"},
                    heartbeat=self.heartbeat,
                    max_msg_size=MAX_MESSAGE,
                )
        except TimeoutError:
            raise ProviderTimeout(self.name, "connect", d.connect) from None
        except aiohttp.WSServerHandshakeError as e:
            # aiohttp does not read a refused handshake's body; Deepgram names the error in dg-error.
            raise status_error(self.name, e.status, b"", e.headers) from e
        except aiohttp.ClientError as e:
            raise ProviderError(self.name, f"connect failed: {e!r}") from e
        log.debug("> %s: connected", self.name)
        return DeepgramRecognition(
            self.name,
            ws,
            deadlines=d,
            clock=self._clock,
            keepalive_interval=self.keepalive_interval,
            capacity=self.results_capacity,
        )


def _flag(v: bool) -> str:
    return "true" if v else "false"


class DeepgramRecognition:
    """One open Deepgram stream (see the module docstring)."""

    def __init__(
        self,
        name: str,
        ws: aiohttp.ClientWebSocketResponse,
        *,
        deadlines: Deadlines,
        clock: Clock,
        keepalive_interval: float,
        capacity: int,
    ) -> None:
        self.name = name
        self._ws = ws
        self._deadlines = deadlines
        self._clock = clock
        self._keepalive_interval = keepalive_interval
        self._capacity = capacity
        self._queue: collections.deque[Transcription] = collections.deque()
        self._wake = asyncio.Event()
        self._error: ProviderError | None = None
        self._ended = False  # the server closed after our CloseStream (or we closed)
        self._closing = False
        self._last_sent = clock.now()
        self._committed: list[str] = []
        self._confidences: list[float] = []
        self._utt_start: float | None = None
        self._audio_bytes = 0
        self._keepalives = 0
        self._results = 0
        self._dropped = 0
        self._request_id: str | None = None
        self._reader = asyncio.create_task(self._read(), name=f"{name}:reader")
        self._pinger = asyncio.create_task(self._keepalive(), name=f"{name}:keepalive")

    @property
    def stats(self) -> RecognitionStats:
        return RecognitionStats(
            self._audio_bytes, self._keepalives, self._results, self._dropped, self._request_id
        )

    # -- sending ---------------------------------------------------------------

    async def send(self, pcm: PCM) -> None:
        self._raise_if_failed()
        if pcm.size == 0:
            return  # an empty binary frame would read as CloseStream
        data = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
        await self._write(self._ws.send_bytes(data), "audio")
        self._audio_bytes += len(data)

    async def finalize(self) -> None:
        self._raise_if_failed()
        await self._write(self._ws.send_str(FINALIZE), "Finalize")

    async def _write(self, aw: Any, what: str) -> None:
        try:
            async with asyncio.timeout(self._deadlines.idle):
                await aw
        except TimeoutError:
            self._fail(ProviderTimeout(self.name, f"send of {what}", self._deadlines.idle))
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as e:
            # aiohttp raises ConnectionResetError / ClientConnectionResetError on a
            # closed transport, RuntimeError on a closing one.
            self._fail(ProviderError(self.name, f"send of {what} failed: {e!r}"))
        self._last_sent = self._clock.now()
        self._raise_if_failed()

    async def _keepalive(self) -> None:
        # Deepgram closes a stream that hears nothing for 10 s (NET-0001): during
        # long silences the pipeline may send no audio (DTX, muted caller).
        try:
            while not self._closing:
                await self._clock.sleep_until(self._last_sent + self._keepalive_interval)
                if self._closing or self._ws.closed:
                    return
                if self._clock.now() - self._last_sent >= self._keepalive_interval:
                    await self._ws.send_str(KEEPALIVE)
                    self._keepalives += 1
                    self._last_sent = self._clock.now()
                    log.debug("> %s: KeepAlive", self.name)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as e:
            self._fail(ProviderError(self.name, f"KeepAlive failed: {e!r}"))

    # -- receiving -------------------------------------------------------------

    def results(self) -> AsyncIterator[Transcription]:
        return self._iter_results()

    async def _iter_results(self) -> AsyncIterator[Transcription]:
        # The wait below has no timer of its own: it is bounded by the socket's
        # liveness (the heartbeat ping fails a dead peer and the reader wakes us),
        # since a silent caller legitimately produces no results for minutes.
        while True:
            while self._queue:
                yield self._queue.popleft()
            if self._error is not None:
                raise self._error
            if self._ended:
                return
            self._wake.clear()
            await self._wake.wait()

    async def _read(self) -> None:
        ws = self._ws
        try:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_text(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    log.debug("x %s: unexpected binary frame (%d bytes)", self.name, len(msg.data))
                elif msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                ):
                    self._on_close(ws.close_code, msg.extra)
                    return
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    self._fail(ProviderError(self.name, f"socket error: {ws.exception()!r}"))
                    return
        except ProviderError as e:
            self._fail(e)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug in parsing must not leave the consumer hanging
            log.exception("%s: reader failed", self.name)
            self._fail(ProviderError(self.name, f"reader failed: {e!r}", retryable=False))
        finally:
            self._wake.set()

    def _on_close(self, code: int | None, reason: object) -> None:
        if self._closing:
            self._ended = True
            return
        text = reason if isinstance(reason, str) and reason else ""
        # 1008 (policy: DATA-0000, bad audio) is our misconfiguration; the rest may pass.
        self._fail(
            ProviderError(self.name, f"closed by server: {code} {text}".strip(), retryable=code != 1008)
        )

    def _on_text(self, raw: str) -> None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProviderError(self.name, f"malformed message: {raw[:80]!r}") from None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "Results":
            self._on_results(msg)
        elif kind == "UtteranceEnd":
            # Sent when speech_final never came (noise kept the endpointer open).
            self._emit_final(from_event="UtteranceEnd")
        elif kind == "Metadata":
            self._request_id = msg.get("request_id")
            log.debug("< %s: Metadata request_id=%s", self.name, self._request_id)
        elif kind == "SpeechStarted":
            log.debug("< %s: SpeechStarted at %s", self.name, msg.get("timestamp"))
        elif kind == "Error":
            detail = msg.get("description") or msg.get("message") or raw[:200]
            raise ProviderError(self.name, f"server error: {detail}")
        else:
            log.debug("< %s: ignored message type %r", self.name, kind)

    def _on_results(self, msg: dict[str, Any]) -> None:
        try:
            alt = msg["channel"]["alternatives"][0]
            text = str(alt.get("transcript") or "")
            confidence = alt.get("confidence")
            start = float(msg.get("start", 0.0))
            end = start + float(msg.get("duration", 0.0))
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ProviderError(self.name, f"malformed Results: {e!r}") from e
        if self._utt_start is None and text:
            self._utt_start = start
        if msg.get("is_final"):
            if text:
                self._committed.append(text)
                if isinstance(confidence, (int, float)):
                    self._confidences.append(float(confidence))
            if msg.get("speech_final") or msg.get("from_finalize"):
                self._emit_final(end=end, from_event="speech_final/from_finalize")
            elif self._committed:
                self._push(Transcription(" ".join(self._committed), False, None, self._utt_start, end))
        elif text:
            joined = " ".join([*self._committed, text])
            conf = float(confidence) if isinstance(confidence, (int, float)) else None
            self._push(Transcription(joined, False, conf, self._utt_start, end))

    def _emit_final(self, *, end: float | None = None, from_event: str) -> None:
        if not self._committed:
            return  # nothing was said since the last final
        conf = sum(self._confidences) / len(self._confidences) if self._confidences else None
        self._push(Transcription(" ".join(self._committed), True, conf, self._utt_start, end))
        log.debug("< %s: final on %s", self.name, from_event)
        self._committed = []
        self._confidences = []
        self._utt_start = None

    def _push(self, t: Transcription) -> None:
        q = self._queue
        if len(q) >= self._capacity:
            for i, old in enumerate(q):
                if not old.final:
                    del q[i]
                    self._dropped += 1
                    break
            else:
                raise ProviderError(
                    self.name, f"{len(q)} final results not consumed: consumer stalled", retryable=False
                )
        q.append(t)
        self._results += 1
        self._wake.set()

    # -- ending ----------------------------------------------------------------

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing:
            raise ProviderError(self.name, "recognition is closed", retryable=False)

    def _fail(self, err: ProviderError) -> None:
        if self._error is None and not self._ended:
            log.warning("x %s: %s", self.name, err)
            self._error = err
        self._wake.set()

    async def aclose(self) -> None:
        """Send CloseStream, let the last results arrive (briefly), and close."""
        if self._closing:
            return
        self._closing = True
        self._pinger.cancel()
        if not self._ws.closed and self._error is None:
            try:
                async with asyncio.timeout(CLOSE_WAIT):
                    await self._ws.send_str(CLOSE_STREAM)
                    await asyncio.shield(self._reader)
            except (TimeoutError, ConnectionError, aiohttp.ClientError, RuntimeError):
                pass  # closing anyway; what was not flushed in time is lost
        self._reader.cancel()
        try:
            async with asyncio.timeout(CLOSE_WAIT):
                await self._ws.close()
        except TimeoutError:
            pass
        for task in (self._reader, self._pinger):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._ended = True
        self._wake.set()
