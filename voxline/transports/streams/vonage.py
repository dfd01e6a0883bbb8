"""Vonage Voice API WebSockets (NCCO ``connect`` to a ``websocket`` endpoint): ``/v1/streams/vonage``.

As Vonage documents them
(https://developer.vonage.com/en/voice/voice-api/concepts/websockets,
https://developer.vonage.com/en/voice/voice-api/ncco-reference#websocket-the-websocket-to-connect-to):

- the first message is text: ``{"event": "websocket:connected",
  "content-type": "audio/l16;rate=16000", ...}`` with the endpoint's
  ``headers`` from the NCCO as further fields;
- audio is binary both ways: 16-bit signed little-endian linear PCM, mono, at
  the content type's rate (8000 or 16000; 24000 where offered), in 20 ms
  frames (640 bytes at 16 kHz) — voxline sends exactly those;
- from Vonage, text: ``websocket:dtmf`` (``digit``, ``duration``),
  ``websocket:notify`` (the ``payload`` of a ``notify`` we sent, once the audio
  before it has played), ``websocket:cleared``;
- to Vonage, text: ``{"action": "notify", "payload": {"name": ...}}`` after a
  reply, ``{"action": "clear"}`` on barge-in (drops the queued audio).

The call's end closes the socket. The NCCO's ``uri`` may carry ``?token=...``,
or its ``headers`` a ``token`` (they arrive in the first message); an
``agent`` header picks the agent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from voxline.codecs import l16

from ..base import Door, WireMedia
from .door import stream_door
from .wire import (
    POLICY,
    Confirmed,
    Digit,
    Event,
    Ignored,
    Media,
    Message,
    Start,
    StreamError,
    check_digit,
    field_str,
    parse_json,
)

__all__ = ["VonageDialect", "media_for", "door"]

RATES = (8000, 16000, 24000)
CONTENT_TYPE = re.compile(r"^audio/l16;\s*rate=(\d+)$", re.IGNORECASE)
FAR_END_BUFFER = 0.1  # an estimate; websocket:notify says exactly when a reply played
_CLEAR = '{"action":"clear"}'


def media_for(content_type: object) -> WireMedia:
    match = CONTENT_TYPE.match(content_type) if isinstance(content_type, str) else None
    if match is None or int(match.group(1)) not in RATES:
        raise StreamError(f"content-type {content_type!r} is not audio/l16;rate=8000|16000|24000", POLICY)
    return WireMedia(l16(int(match.group(1)), little_endian=True), 20)


class VonageDialect:
    name = "vonage"
    subprotocols: tuple[str, ...] = ()
    can_clear = True
    confirms_playout = True
    far_end_buffer = FAR_END_BUFFER
    relays_events = False

    def start_at_upgrade(self, query: Mapping[str, str]) -> None:
        return None

    def on_binary(self, data: bytes, started: bool) -> Event:
        if not started:
            raise StreamError("audio before websocket:connected", POLICY)
        if not data or len(data) % 2:
            raise StreamError(f"an audio frame of {len(data)} bytes is not whole 16-bit samples")
        return Media(data)

    def on_text(self, text: str, started: bool) -> Event:
        msg = parse_json(text)
        event = field_str(msg, "event", max_len=64)
        if event == "websocket:connected":
            if started:
                raise StreamError("a second websocket:connected", POLICY)
            headers = {k: v for k, v in msg.items() if isinstance(v, str) and k not in ("event", "content-type")}
            return Start(media_for(msg.get("content-type")), call_id=headers.get("uuid", ""),
                         agent=headers.get("agent"), token=headers.get("token"), params=headers)
        if event not in ("websocket:dtmf", "websocket:notify", "websocket:cleared"):
            return Ignored(event)
        if not started:
            raise StreamError(f"{event} before websocket:connected", POLICY)
        if event == "websocket:dtmf":
            dtmf = msg.get("dtmf")
            return Digit(check_digit(msg.get("digit") if "digit" in msg or not isinstance(dtmf, dict)
                                     else dtmf.get("digit")))
        if event == "websocket:notify":
            payload = msg.get("payload")
            if not isinstance(payload, dict):
                raise StreamError("websocket:notify has no payload object")
            return Confirmed(field_str(payload, "name"))
        return Ignored("websocket:cleared")

    def audio(self, payload: bytes) -> Message:
        return payload

    def mark(self, name: str) -> Message:
        return orjson.dumps({"action": "notify", "payload": {"name": name}}).decode()

    def clear(self) -> Message:
        return _CLEAR

    def flush(self) -> None:
        return None

    def bye(self) -> None:
        return None

    def event(self, event: Mapping[str, Any]) -> None:
        return None


def door(config: Any) -> Door:
    return stream_door("vonage", "/v1/streams/vonage", VonageDialect,
                       "WebSocket: Vonage Voice API websocket endpoint (audio/l16, binary both ways)",
                       config, token_in_start=True)
