"""Telnyx Media Streaming, bidirectional in ``rtp`` mode: ``/v1/streams/telnyx``.

JSON text frames with an ``event``, as Telnyx documents them
(https://developers.telnyx.com/docs/voice/programmable-voice/media-streaming,
https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket):

- from Telnyx: ``connected`` (``version``), ``start`` (``stream_id`` at the top
  level; ``start.call_control_id``, ``custom_parameters``, ``media_format``
  {``encoding`` PCMU | PCMA | L16, ``sample_rate``, ``channels``}), ``media``
  (``media.track``, ``chunk``, ``timestamp``, ``payload``: a base64 RTP payload,
  no header), ``dtmf`` (``dtmf.digit``), ``mark`` (``mark.name``, echoed once
  the audio before our mark has played), ``error``, ``stop``.
- to Telnyx: ``media`` (``media.payload``, base64 in the bidirectional codec),
  ``mark``, ``clear`` (drops the queued audio: barge-in).

The pipeline runs one codec both ways, so configure the stream's
``stream_bidirectional_codec`` (and sampling rate) the same as its ``codec``:
PCMU or PCMA at 8 kHz, or L16 at 16 kHz (RTP's L16 is big-endian). Telnyx can
set no header on the upgrade; put the API token in ``stream_url``'s query
(``?token=...``) or in a custom parameter ``token``; ``agent`` picks the agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from voxline.codecs import PCMA, PCMU, CodecError, l16

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
    Stop,
    StreamError,
    b64encode,
    check_digit,
    check_stream,
    field_obj,
    field_str,
    inbound_media,
    parse_json,
    string_params,
)

__all__ = ["TelnyxDialect", "media_for", "door"]

FAR_END_BUFFER = 0.1  # an estimate, as for Twilio: the echoed marks are exact


def media_for(fmt: Mapping[str, Any]) -> WireMedia:
    encoding, rate, channels = fmt.get("encoding"), fmt.get("sample_rate"), fmt.get("channels", 1)
    if channels != 1:
        raise StreamError(f"media_format.channels {channels!r}: voxline takes mono", POLICY)
    if encoding in ("PCMU", "PCMA"):
        if rate != 8000:
            raise StreamError(f"media_format: {encoding} is 8000 Hz, not {rate!r}", POLICY)
        return WireMedia(PCMU if encoding == "PCMU" else PCMA, 20)
    if encoding == "L16" and isinstance(rate, int):
        try:
            return WireMedia(l16(rate), 20)
        except (CodecError, ValueError) as exc:
            raise StreamError(f"media_format.sample_rate: {exc}", POLICY) from exc
    raise StreamError(f"media_format {dict(fmt)} is not PCMU, PCMA or L16", POLICY)


class TelnyxDialect:
    name = "telnyx"
    subprotocols: tuple[str, ...] = ()
    can_clear = True
    confirms_playout = True
    far_end_buffer = FAR_END_BUFFER
    relays_events = False

    def __init__(self) -> None:
        self.stream_id = ""

    def start_at_upgrade(self, query: Mapping[str, str]) -> None:
        return None

    def on_binary(self, data: bytes, started: bool) -> Event:
        raise StreamError("Telnyx sends JSON text frames, not binary")

    def on_text(self, text: str, started: bool) -> Event:
        msg = parse_json(text)
        event = field_str(msg, "event", max_len=32)
        if event == "connected":
            return Ignored("connected")
        if event == "start":
            return self._start(msg)
        if event not in ("media", "dtmf", "mark", "stop", "error"):
            return Ignored(event)
        if event == "error":
            return Ignored("error")  # about something sent to Telnyx; logged by the counters
        check_stream(msg, "stream_id", self.stream_id, event, started)
        if event == "media":
            return inbound_media(msg)
        if event == "dtmf":
            return Digit(check_digit(field_obj(msg, "dtmf").get("digit")))
        if event == "mark":
            return Confirmed(field_str(field_obj(msg, "mark"), "name"))
        return Stop("telnyx stop")

    def _start(self, msg: Mapping[str, Any]) -> Start:
        start = field_obj(msg, "start")
        sid = field_str(msg, "stream_id", required=False) or field_str(start, "stream_id", required=False)
        if not sid:
            raise StreamError("start has no stream_id", POLICY)
        media = media_for(field_obj(start, "media_format"))
        params = string_params(start, "custom_parameters")
        if self.stream_id:
            raise StreamError("a second start message", POLICY)
        self.stream_id = sid
        return Start(media, call_id=field_str(start, "call_control_id", required=False),
                     agent=params.get("agent"), token=params.get("token"), params=params)

    def audio(self, payload: bytes) -> Message:
        return orjson.dumps({"event": "media", "media": {"payload": b64encode(payload)}}).decode()

    def mark(self, name: str) -> Message:
        return orjson.dumps({"event": "mark", "mark": {"name": name}}).decode()

    def clear(self) -> Message:
        return '{"event":"clear"}'

    def flush(self) -> None:
        return None

    def bye(self) -> None:
        return None

    def event(self, event: Mapping[str, Any]) -> None:
        return None


def door(config: Any) -> Door:
    return stream_door("telnyx", "/v1/streams/telnyx", TelnyxDialect,
                       "WebSocket: Telnyx Media Streaming, bidirectional RTP mode (token in the query or a "
                       "custom parameter)", config, token_in_start=True)
