"""Twilio Media Streams (``/v1/streams/twilio``), as Twilio speaks them:
``connected``, ``start`` (µ-law 8 kHz, the token and agent as custom
parameters), ``media`` every 20 ms, ``mark`` echoed once played, ``stop``.
voxline's ``clear`` is the barge-in the caller times."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import orjson

from voxline.codecs import PCMU
from voxline.transports.streams.twilio import ENCODING
from voxline.transports.streams.wire import b64decode, b64encode

from .base import LineError, Listener, Target
from .http import EventFeed, find_session, session_info

__all__ = ["TwilioLine"]

RATE = 8000


class TwilioLine:
    name = "twilio"
    rate = RATE
    can_impair = True

    def __init__(self, target: Target, agent: str | None, listener: Listener) -> None:
        self.target = target
        self.agent = agent
        self.listener = listener
        self.session_id: str | None = None
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.call_sid = "CA" + secrets.token_hex(16)
        self._encoder = PCMU.encoder()
        self._decoder = PCMU.decoder()
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._feed: EventFeed | None = None
        self._seq = 0
        self._chunk = 0

    def _msg(self, event: str, **body: Any) -> str:
        msg: dict[str, Any] = {"event": event}
        if event == "connected":
            msg.update(protocol="Call", version="1.0.0")
        else:
            self._seq += 1
            msg.update(sequenceNumber=str(self._seq), streamSid=self.stream_sid)
        msg.update(body)
        return orjson.dumps(msg).decode()

    async def open(self) -> None:
        self._http = aiohttp.ClientSession()
        since = time.time()
        try:
            self._ws = await self._http.ws_connect(f"{self.target.ws_url}/v1/streams/twilio", autoping=True)
        except aiohttp.ClientError as exc:
            await self._http.close()
            raise LineError(f"twilio stream: {exc}") from exc
        params = {k: v for k, v in (("agent", self.agent), ("token", self.target.token)) if v}
        await self._ws.send_str(self._msg("connected"))
        await self._ws.send_str(self._msg("start", start={
            "streamSid": self.stream_sid, "accountSid": "AC" + "0" * 32, "callSid": self.call_sid,
            "tracks": ["inbound"], "customParameters": params,
            "mediaFormat": {"encoding": ENCODING, "sampleRate": RATE, "channels": 1}}))
        self._reader = asyncio.ensure_future(self._read(self._ws))
        claimed: set[str] = self.target.extra.setdefault("claimed", set())
        for _ in range(20):
            self.session_id = await find_session(self._http, self.target, "twilio", claimed, since)
            if self.session_id is not None or self._ws.closed:
                break
            await asyncio.sleep(0.05)
        if self._ws.closed:
            raise LineError(f"twilio stream closed {self._ws.close_code}")
        if self.session_id is not None:
            self._feed = EventFeed(self._http, self.target, self.session_id, self.listener)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        listener = self.listener
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            now = time.monotonic()
            body = orjson.loads(msg.data)
            event = body.get("event")
            if event == "media":
                payload = b64decode((body.get("media") or {}).get("payload"), "media.payload")
                listener.heard(self._decoder.decode(payload), RATE, now)
            elif event == "clear":
                listener.cleared(now)
            elif event == "mark":
                await ws.send_str(self._msg("mark", mark={"name": (body.get("mark") or {}).get("name", "")}))
        listener.closed(f"closed {ws.close_code}")

    async def send(self, pcm: npt.NDArray[np.int16]) -> None:
        if self._ws is None or self._ws.closed:
            raise LineError("the twilio stream is closed")
        self._chunk += 1
        await self._ws.send_str(self._msg("media", media={
            "track": "inbound", "chunk": str(self._chunk), "timestamp": str(20 * (self._chunk - 1)),
            "payload": b64encode(self._encoder.encode(pcm))}))

    async def info(self) -> dict[str, Any] | None:
        if self._http is None or self.session_id is None:
            return None
        return await session_info(self._http, self.target, self.session_id)

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.close()
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.send_str(self._msg("stop", stop={"accountSid": "AC" + "0" * 32,
                                                                "callSid": self.call_sid}))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 3)
        if self._reader is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 3)
        if self._http is not None:
            await self._http.close()
