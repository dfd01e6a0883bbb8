"""Plivo Audio Streams, bidirectional (``<Stream bidirectional="true">``): ``/v1/streams/plivo``.

JSON text frames with an ``event``
(https://www.plivo.com/docs/voice/audio-streaming/audio-streaming,
https://www.plivo.com/docs/voice/xml/audiostream):

- from Plivo: ``start`` (``start.callId``, ``streamId``, ``tracks``,
  ``mediaFormat`` {``encoding`` audio/x-mulaw | audio/x-l16, ``sampleRate``};
  ``extra_headers``: "k=v;k2=v2" from the XML's ``extraHeaders``), ``media``
  (``media.payload`` base64), ``dtmf``, ``playedStream`` (``name``: our
  checkpoint has played), ``clearedAudio``. The call's end closes the socket.
- to Plivo: ``playAudio`` (``media`` {``contentType``, ``sampleRate``,
  ``payload``}), ``checkpoint`` (``streamId``, ``name``), ``clearAudio``
  (``streamId``: barge-in).

Formats: audio/x-mulaw at 8000, audio/x-l16 at 8000 or 16000. Plivo's
reference does not state L16's byte order; its examples and clients treat it
as little-endian, as this does. Plivo sets no header on the upgrade: put the
API token in the stream URL's query (``?token=...``) or in ``extraHeaders``
(``token=...``), and ``agent=...`` there to pick the agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from voxline.codecs import PCMU, l16

from ..base import Door, WireMedia
from .door import stream_door
from .wire import (
    POLICY,
    Confirmed,
    Digit,
    Event,
    Ignored,
    Message,
    Start,
    StreamError,
    b64encode,
    check_digit,
    check_stream,
    field_obj,
    field_str,
    inbound_media,
    parse_json,
)

__all__ = ["PlivoDialect", "parse_extra_headers", "door"]

FAR_END_BUFFER = 0.1  # an estimate; playedStream says exactly when a checkpoint played
FORMATS = {("audio/x-mulaw", 8000): WireMedia(PCMU, 20),
           ("audio/x-l16", 8000): WireMedia(l16(8000, little_endian=True), 20),
           ("audio/x-l16", 16000): WireMedia(l16(16000, little_endian=True), 20)}
MAX_HEADERS = 512  # Plivo's own limit on extraHeaders, in bytes


def parse_extra_headers(value: object) -> dict[str, str]:
    """``"k=v;k2=v2"`` (Plivo also shows commas) as a dict."""
    if value is None or value == "":
        return {}
    if not isinstance(value, str) or len(value) > MAX_HEADERS:
        raise StreamError("extra_headers must be a string of at most 512 bytes")
    out: dict[str, str] = {}
    for item in value.replace(",", ";").split(";"):
        key, sep, val = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = val.strip()
    return out


class PlivoDialect:
    name = "plivo"
    subprotocols: tuple[str, ...] = ()
    can_clear = True
    confirms_playout = True
    far_end_buffer = FAR_END_BUFFER
    relays_events = False

    def __init__(self) -> None:
        self.stream_id = ""
        self._content: tuple[str, int] = ("audio/x-mulaw", 8000)

    def start_at_upgrade(self, query: Mapping[str, str]) -> None:
        return None

    def on_binary(self, data: bytes, started: bool) -> Event:
        raise StreamError("Plivo sends JSON text frames, not binary")

    def on_text(self, text: str, started: bool) -> Event:
        msg = parse_json(text)
        event = field_str(msg, "event", max_len=32)
        if event == "start":
            return self._start(msg)
        if event not in ("media", "dtmf", "playedStream", "clearedAudio"):
            return Ignored(event)
        check_stream(msg, "streamId", self.stream_id, event, started)
        if event == "media":
            return inbound_media(msg)
        if event == "dtmf":
            dtmf = msg.get("dtmf")
            return Digit(check_digit(dtmf.get("digit") if isinstance(dtmf, dict) else msg.get("digit")))
        if event == "playedStream":
            return Confirmed(field_str(msg, "name"))
        return Ignored("clearedAudio")

    def _start(self, msg: Mapping[str, Any]) -> Start:
        start = field_obj(msg, "start")
        sid = field_str(start, "streamId")
        if not sid:
            raise StreamError("start.streamId is empty", POLICY)
        fmt = field_obj(start, "mediaFormat")
        encoding, rate = fmt.get("encoding"), fmt.get("sampleRate")
        key = (encoding, rate) if isinstance(encoding, str) and isinstance(rate, int) else ("", 0)
        media = FORMATS.get(key)
        if media is None:
            raise StreamError(f"start.mediaFormat {fmt} is not audio/x-mulaw 8000 or audio/x-l16 8000|16000", POLICY)
        headers = parse_extra_headers(msg.get("extra_headers", start.get("extra_headers")))
        if self.stream_id:
            raise StreamError("a second start message", POLICY)
        self.stream_id = sid
        self._content = key
        return Start(media, call_id=field_str(start, "callId", required=False), agent=headers.get("agent"),
                     token=headers.get("token"), params=headers)

    def audio(self, payload: bytes) -> Message:
        content, rate = self._content
        return orjson.dumps({"event": "playAudio", "media": {"contentType": content, "sampleRate": rate,
                                                               "payload": b64encode(payload)}}).decode()

    def mark(self, name: str) -> Message:
        return orjson.dumps({"event": "checkpoint", "streamId": self.stream_id, "name": name}).decode()

    def clear(self) -> Message:
        return orjson.dumps({"event": "clearAudio", "streamId": self.stream_id}).decode()

    def flush(self) -> None:
        return None

    def bye(self) -> None:
        return None

    def event(self, event: Mapping[str, Any]) -> None:
        return None


def door(config: Any) -> Door:
    return stream_door("plivo", "/v1/streams/plivo", PlivoDialect,
                       "WebSocket: Plivo Audio Streams, bidirectional (token in the query or extraHeaders)",
                       config, token_in_start=True)
