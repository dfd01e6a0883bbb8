"""What every WebSocket media stream shares on the wire, without any I/O.

Each platform (Twilio, Vonage, Plivo, FreeSWITCH's modules, our own raw stream)
speaks its own dialect over one WebSocket: a start (a message, or the upgrade
request itself), audio in text frames (base64 in JSON) or in binary frames,
digits, playout confirmations, a stop. A ``Dialect`` is the pure part of one:
it turns each message from the peer into one ``Event`` (or raises
``StreamError``) and builds each message voxline sends (audio, a mark, the
clear that drops what the far end has queued). Everything asynchronous — the
socket, timeouts, admission, the pipeline — is in ``call.py``, once for all of
them, so a dialect is tested by feeding it strings and bytes.

A dialect is made per stream: it may keep the stream's ids (Twilio's
``streamSid`` goes into every message sent back) and the media it learnt from
the start.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ..base import WireMedia

__all__ = [
    "BAD_DATA",
    "POLICY",
    "TOO_BIG",
    "TRY_AGAIN",
    "StreamError",
    "Start",
    "Media",
    "Digit",
    "Confirmed",
    "Stop",
    "Ignored",
    "Event",
    "Message",
    "Dialect",
    "parse_json",
    "b64decode",
    "field_str",
    "field_obj",
    "b64encode",
    "check_digit",
]

# WebSocket close codes (RFC 6455 section 7.4.1, and 1013 from the IANA registry).
BAD_DATA = 1007  # a message that cannot be read (bad JSON, bad base64, bad audio)
POLICY = 1008  # a message out of place (media before start), bad credentials, no start
TOO_BIG = 1009
TRY_AGAIN = 1013  # admission refused: "Try Again Later"

DIGITS = "0123456789*#ABCD"


class StreamError(ValueError):
    """A message from the peer that voxline cannot take; ``code`` is the close
    code the stream ends with if such faults repeat."""

    def __init__(self, message: str, code: int = BAD_DATA) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Start:
    """The stream's media is known: the call can be admitted and opened.

    ``call_id`` is the platform's name for the call (logged); ``agent`` and
    ``token`` come from the start's custom parameters where a platform has them
    (a token there is how a peer that cannot set headers authenticates)."""

    media: WireMedia
    call_id: str = ""
    agent: str | None = None
    token: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Media:
    payload: bytes  # one chunk of the wire codec, as the peer sent it


@dataclass(frozen=True, slots=True)
class Digit:
    digit: str


@dataclass(frozen=True, slots=True)
class Confirmed:
    """The peer says the audio before mark ``name`` has been played."""

    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    reason: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed message voxline has no use for (``connected``, an unknown
    event a newer platform version may send): counted, not a fault."""

    what: str


Event = Start | Media | Digit | Confirmed | Stop | Ignored
Message = str | bytes  # a text or a binary WebSocket frame


class Dialect(Protocol):
    name: str  # "twilio", "raw", ...: the session's transport label
    subprotocols: tuple[str, ...]  # offered in the upgrade, e.g. ("audio.drachtio.org",)
    can_clear: bool  # the far end drops its queued audio on clear()
    confirms_playout: bool  # the peer echoes marks after playing the audio before them
    far_end_buffer: float  # seconds the far end holds before the caller hears it
    relays_events: bool  # session events (transcripts, state) go to the peer through event()

    def start_at_upgrade(self, query: Mapping[str, str]) -> Start | None:
        """A stream whose media is named by its URL starts at once (raw); others
        wait for their start message (None). ``StreamError`` for a bad query."""
        ...

    def on_text(self, text: str, started: bool) -> Event:
        """One text frame from the peer; ``StreamError`` if it cannot be taken."""
        ...

    def on_binary(self, data: bytes, started: bool) -> Event:
        """One binary frame from the peer; ``StreamError`` if it cannot be taken."""
        ...

    def audio(self, payload: bytes) -> Message | None:
        """One frame of encoded audio to send (None: the dialect gathers frames
        into larger messages, as FreeSWITCH's file-based playback wants)."""
        ...

    def flush(self) -> Message | None:
        """What the dialect has gathered, before a mark or at the end (None: nothing)."""
        ...

    def bye(self) -> Message | None:
        """The message that precedes our close when the agent ends the call."""
        ...

    def mark(self, name: str) -> Message | None:
        """A mark to send after the audio before it (None: the dialect has none)."""
        ...

    def clear(self) -> Message | None:
        """The message that drops the far end's queued audio (None: none)."""
        ...

    def event(self, event: Mapping[str, Any]) -> Message | None:
        """A session event (transcript, state, dtmf) for the peer, or None."""
        ...


# -- helpers for JSON dialects -------------------------------------------------------


def parse_json(text: str) -> dict[str, Any]:
    """A JSON object, or ``StreamError`` (1007) saying why not."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise StreamError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise StreamError(f"a message must be a JSON object, not {type(value).__name__}")
    return value


def field_obj(msg: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = msg.get(name)
    if not isinstance(value, dict):
        raise StreamError(f"{name} must be an object")
    return value


def field_str(msg: Mapping[str, Any], name: str, *, required: bool = True, max_len: int = 256) -> str:
    value = msg.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise StreamError(f"{name} must be a string")
    if len(value) > max_len:
        raise StreamError(f"{name} is longer than {max_len} characters")
    return value


def b64decode(value: object, name: str = "payload") -> bytes:
    """Strict base64 (no stray characters), or ``StreamError`` (1007)."""
    if not isinstance(value, str):
        raise StreamError(f"{name} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StreamError(f"{name} is not base64: {exc}") from exc


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


MAX_PARAMS = 64  # custom parameters a start message may carry


def string_params(start: Mapping[str, Any], name: str) -> dict[str, str]:
    """A start message's custom parameters: an object of at most ``MAX_PARAMS`` strings."""
    params = start.get(name) or {}
    if not isinstance(params, dict) or len(params) > MAX_PARAMS \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
        raise StreamError(f"start.{name} must be an object of strings")
    return params


def inbound_media(msg: Mapping[str, Any]) -> Event:
    """A ``media`` event whose ``media`` object carries a base64 payload, on the
    inbound track (the caller; the others are ignored). Twilio, Telnyx, Plivo."""
    media = field_obj(msg, "media")
    track = media.get("track", "inbound")
    if track != "inbound":
        return Ignored(f"media on track {track!r}")
    return Media(b64decode(media.get("payload"), "media.payload"))


def check_stream(msg: Mapping[str, Any], key: str, ours: str, event: str, started: bool) -> None:
    """An event after the start, naming this stream (or none): else ``StreamError`` (1008)."""
    if not started:
        raise StreamError(f"{event} before start", POLICY)
    sid = field_str(msg, key, required=False)
    if sid and sid != ours:
        raise StreamError(f"{key} {sid!r} is not this stream's", POLICY)


def check_digit(value: object) -> str:
    if not isinstance(value, str) or len(value) != 1 or value.upper() not in DIGITS:
        raise StreamError(f"a DTMF digit must be one of {DIGITS}, not {value!r}")
    return value.upper()
