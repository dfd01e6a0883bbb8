"""Twilio Media Streams, bidirectional (``<Connect><Stream>``): ``/v1/streams/twilio``.

Every message is a JSON text frame with an ``event``
(https://www.twilio.com/docs/voice/media-streams/websocket-messages):

- from Twilio: ``connected`` (``protocol`` "Call", ``version``), then ``start``
  once (``start.streamSid``, ``accountSid``, ``callSid``, ``tracks``,
  ``customParameters``, ``mediaFormat`` {``encoding`` "audio/x-mulaw",
  ``sampleRate`` 8000, ``channels`` 1}), then ``media`` (``media.track``,
  ``chunk``, ``timestamp``, ``payload``: base64 µ-law), ``dtmf``
  (``dtmf.digit``), ``mark`` (``mark.name``: the audio sent before our mark
  has played), ``stop``; every message but ``connected`` has a
  ``sequenceNumber`` and the ``streamSid``.
- to Twilio: ``media`` (``streamSid``, ``media.payload``: base64 µ-law 8 kHz,
  no file header), ``mark`` (``mark.name``), ``clear`` (drops the audio
  Twilio has buffered: barge-in). Twilio ends the stream with error 31924 on
  anything else, so nothing else is ever sent.

Authentication. ``<Stream url>`` takes no query string (Twilio error 31920,
https://www.twilio.com/docs/api/errors/31920) and Twilio sets no
``Authorization`` header. With ``streams.twilio_auth_token`` configured the
upgrade must carry a valid ``X-Twilio-Signature``: base64 HMAC-SHA1 of the
``wss://`` URL Twilio connected to, keyed with the auth token
(https://www.twilio.com/docs/usage/webhooks/webhooks-security; a GET has no
parameters to append). Without it, a service with API tokens takes one from
``<Parameter name="token">``, which arrives in ``start.customParameters``;
``<Parameter name="agent">`` picks the agent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from voxline.codecs import PCMU

from ..base import Door, Unauthorized, WireMedia
from .door import stream_door
from .transport import Caller
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

__all__ = ["TwilioDialect", "signature", "verify", "door", "MEDIA"]

MEDIA = WireMedia(PCMU, 20)
ENCODING = "audio/x-mulaw"
SIGNATURE_HEADER = "X-Twilio-Signature"
# Not documented by Twilio: a network hop and its playout buffer. An estimate;
# the marks Twilio echoes say exactly when a reply has played.
FAR_END_BUFFER = 0.1


class TwilioDialect:
    name = "twilio"
    subprotocols: tuple[str, ...] = ()
    can_clear = True
    confirms_playout = True
    far_end_buffer = FAR_END_BUFFER
    relays_events = False

    def __init__(self) -> None:
        self.stream_sid = ""

    def start_at_upgrade(self, query: Mapping[str, str]) -> None:
        return None

    def on_binary(self, data: bytes, started: bool) -> Event:
        raise StreamError("Twilio sends JSON text frames only, not binary")

    def on_text(self, text: str, started: bool) -> Event:
        msg = parse_json(text)
        event = field_str(msg, "event", max_len=32)
        if event == "connected":
            return Ignored("connected")
        if event == "start":
            return self._start(msg)
        if event not in ("media", "dtmf", "mark", "stop"):
            return Ignored(event)
        check_stream(msg, "streamSid", self.stream_sid, event, started)
        if event == "media":
            return inbound_media(msg)
        if event == "dtmf":
            return Digit(check_digit(field_obj(msg, "dtmf").get("digit")))
        if event == "mark":
            return Confirmed(field_str(field_obj(msg, "mark"), "name"))
        return Stop("twilio stop")

    def _start(self, msg: Mapping[str, Any]) -> Start:
        start = field_obj(msg, "start")
        sid = field_str(start, "streamSid")
        if not sid:
            raise StreamError("start.streamSid is empty", POLICY)
        fmt = start.get("mediaFormat")
        if fmt is not None:
            if not isinstance(fmt, dict):
                raise StreamError("start.mediaFormat must be an object")
            if (fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels", 1)) != (ENCODING, 8000, 1):
                raise StreamError(f"start.mediaFormat {fmt} is not {ENCODING} at 8000 Hz mono", POLICY)
        params = string_params(start, "customParameters")
        if self.stream_sid:
            raise StreamError("a second start message", POLICY)
        self.stream_sid = sid
        return Start(MEDIA, call_id=field_str(start, "callSid", required=False), agent=params.get("agent"),
                     token=params.get("token"), params=params)

    def audio(self, payload: bytes) -> Message:
        return orjson.dumps({"event": "media", "streamSid": self.stream_sid,
                             "media": {"payload": b64encode(payload)}}).decode()

    def mark(self, name: str) -> Message:
        return orjson.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}).decode()

    def clear(self) -> Message:
        return orjson.dumps({"event": "clear", "streamSid": self.stream_sid}).decode()

    def flush(self) -> None:
        return None

    def bye(self) -> None:
        return None

    def event(self, event: Mapping[str, Any]) -> None:
        return None


def signature(auth_token: str, url: str) -> str:
    """Twilio's request signature for a request without POST parameters."""
    digest = hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def public_url(request: web.Request, base: str) -> str:
    """The URL Twilio connected to: ``base`` + path when configured (a proxy
    terminates TLS in front of voxline), else this request's, as ws(s)://."""
    if base:
        return base.rstrip("/") + request.path_qs
    scheme = "wss" if request.secure else "ws"
    return f"{scheme}://{request.host}{request.path_qs}"


def verify(request: web.Request, config: Any) -> Caller | None:
    """The signature check when an auth token is configured (None: not configured)."""
    streams = getattr(config, "streams", None)
    token = getattr(streams, "twilio_auth_token", "")
    if not token:
        return None
    sent = request.headers.get(SIGNATURE_HEADER)
    if not sent:
        raise Unauthorized(f"missing {SIGNATURE_HEADER}")
    expected = signature(token, public_url(request, streams.public_url))  # type: ignore[union-attr]
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Unauthorized(f"{SIGNATURE_HEADER} does not match this URL")
    return Caller("default", "twilio")


def door(config: Any) -> Door:
    return stream_door("twilio", "/v1/streams/twilio", TwilioDialect,
                       "WebSocket: Twilio Media Streams, bidirectional (<Connect><Stream>); "
                       "X-Twilio-Signature checked when streams.twilio_auth_token is set", config,
                       verify=verify, token_in_start=True)
