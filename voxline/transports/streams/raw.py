"""voxline's own stream: ``/v1/streams/raw?rate=16000&encoding=pcm16``.

For custom integrations and the benchmark harness, with no platform's
envelope: audio is binary frames both ways, everything else is JSON text.

- Query: ``encoding`` ``pcm16`` (signed 16-bit little-endian, any rate up to
  192 kHz; the default, at 16000), ``ulaw`` or ``alaw`` (8000 only);
  ``rate``; ``agent`` (optional). The stream starts at the upgrade.
- Client to voxline: binary audio of any length (whole samples);
  ``{"type": "dtmf", "digit": "5"}``; ``{"type": "mark", "name": "m1"}`` to
  confirm that the audio before voxline's mark ``m1`` has been played;
  ``{"type": "stop"}``. Other types are ignored (counted).
- voxline to client: binary audio in 20 ms frames, paced in real time;
  ``{"type": "mark", "name": ...}`` after a reply's audio (echo it back once
  played: that is how voxline learns what the caller heard);
  ``{"type": "clear"}`` on barge-in: drop whatever audio you have not played;
  ``{"type": "event", "event": {...}}``: the session's events (transcripts,
  agent state, replies, what was heard, DTMF, errors, session state), the same objects as
  ``/v1/sessions/{id}/events``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from voxline.codecs import PCMA, PCMU, CodecError, l16

from ..base import Door, WireMedia
from .door import stream_door
from .wire import POLICY, Confirmed, Digit, Event, Ignored, Media, Message, Start, Stop, StreamError, check_digit
from .wire import field_str, parse_json

__all__ = ["RawDialect", "ENCODINGS", "media_for"]

ENCODINGS = ("pcm16", "ulaw", "alaw")
FRAME_MS = 20
_CLEAR = orjson.dumps({"type": "clear"}).decode()


def media_for(encoding: str, rate: int) -> WireMedia:
    """The wire media a raw stream's query names; ``StreamError`` if none."""
    if encoding == "pcm16":
        try:
            return WireMedia(l16(rate, little_endian=True), FRAME_MS)
        except (CodecError, ValueError) as exc:
            raise StreamError(f"rate: {exc}", POLICY) from exc
    if encoding in ("ulaw", "alaw"):
        if rate != 8000:
            raise StreamError(f"rate: {encoding} is 8000 Hz only, not {rate}", POLICY)
        return WireMedia(PCMU if encoding == "ulaw" else PCMA, FRAME_MS)
    raise StreamError(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}", POLICY)


class RawDialect:
    name = "raw"
    subprotocols: tuple[str, ...] = ()
    can_clear = True
    confirms_playout = True
    far_end_buffer = 0.0  # the client plays what it gets; its marks say when
    relays_events = True

    def __init__(self) -> None:
        self._sample_bytes = 2

    def start_at_upgrade(self, query: Mapping[str, str]) -> Start:
        encoding = query.get("encoding", "pcm16")
        raw_rate = query.get("rate", "16000" if encoding == "pcm16" else "8000")
        try:
            rate = int(raw_rate)
        except ValueError:
            raise StreamError(f"rate must be an integer, not {raw_rate!r}", POLICY) from None
        media = media_for(encoding, rate)
        self._sample_bytes = 2 if encoding == "pcm16" else 1
        return Start(media, agent=query.get("agent") or None)

    def on_binary(self, data: bytes, started: bool) -> Event:
        if not data:
            raise StreamError("an empty audio frame")
        if len(data) % self._sample_bytes:
            raise StreamError(f"an audio frame of {len(data)} bytes is not whole 16-bit samples")
        return Media(data)

    def on_text(self, text: str, started: bool) -> Event:
        msg = parse_json(text)
        kind = field_str(msg, "type", max_len=32)
        if kind == "dtmf":
            return Digit(check_digit(msg.get("digit")))
        if kind == "mark":
            return Confirmed(field_str(msg, "name"))
        if kind == "stop":
            return Stop("client stopped")
        return Ignored(kind)

    def audio(self, payload: bytes) -> Message:
        return payload

    def mark(self, name: str) -> Message:
        return orjson.dumps({"type": "mark", "name": name}).decode()

    def clear(self) -> Message:
        return _CLEAR

    def flush(self) -> None:
        return None

    def bye(self) -> None:
        return None

    def event(self, event: Mapping[str, Any]) -> Message:
        return orjson.dumps({"type": "event", "event": event}, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def door(config: Any) -> Door:
    return stream_door("raw", "/v1/streams/raw", RawDialect,
                       "WebSocket: voxline's own audio stream (query rate, encoding pcm16|ulaw|alaw, agent); "
                       "binary audio both ways, JSON events", config)
