"""FreeSWITCH's audio-streaming modules: ``/v1/streams/freeswitch`` (mod_audio_fork)
and ``/v1/streams/freeswitch-stream`` (mod_audio_stream).

Both stream a channel's audio as binary L16 frames (16-bit linear PCM, in the
host's byte order: little-endian) after one text frame of metadata, at the
rate the start command names (``8k`` or ``16k``), and both play back what
voxline returns by writing it to a file and playing that:

- mod_audio_fork (https://github.com/drachtio/drachtio-freeswitch-modules,
  ``modules/mod_audio_fork/README.md``): subprotocol ``audio.drachtio.org``;
  ``uuid_audio_fork <uuid> start <url> mono 16k <metadata>``. voxline sends
  ``{"type": "playAudio", "data": {"audioContentType": "raw", "sampleRate":
  16000, "audioContent": "<base64>"}}``, ``{"type": "killAudio"}`` on barge-in
  (stops what is playing), and ``{"type": "disconnect"}`` when the agent ends
  the call. The module raises ``mod_audio_fork::play_audio`` with the file; the
  application plays it.
- mod_audio_stream (https://github.com/amigniter/mod_audio_stream, README):
  ``uuid_audio_stream <uuid> start <url> mono 16k [metadata]``. voxline sends
  ``{"type": "streamAudio", "data": {"audioDataType": "raw", "sampleRate":
  16000, "audioData": "<base64>"}}``; the module raises
  ``mod_audio_stream::play`` with the file. It has no message that stops
  playback, so a barge-in only drops what voxline has not sent.

Playback is file by file, so audio goes out in pieces of ``CHUNK_MS`` (and at
the end of each reply), not in 20 ms frames: a piece is what the far end holds
before the caller hears it. Neither module confirms playback or forwards DTMF;
an application may forward a digit with ``send_text`` as
``{"type": "dtmf", "digit": "5"}``. The URL names the rate (``?rate=16000``,
default 8000, as FreeSWITCH's default), the agent (``agent``) and the token
(``token``; mod_audio_stream can also set an ``Authorization`` header through
``STREAM_EXTRA_HEADERS``). Only ``mono`` and ``mixed`` streams (one channel)
are taken.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from voxline.codecs import l16

from ..base import Door, WireMedia
from .door import stream_door
from .wire import POLICY, Digit, Event, Ignored, Media, Message, Start, StreamError, b64encode, check_digit

__all__ = ["AudioForkDialect", "AudioStreamDialect", "door", "stream_module_door", "CHUNK_MS"]

RATES = (8000, 16000)
CHUNK_MS = 400  # audio per playback message: one file FreeSWITCH writes and plays
FRAME_MS = 20


class _FreeSwitchDialect:
    """What the two modules share; each names its messages."""

    name = ""
    subprotocols: tuple[str, ...] = ()
    can_clear = False
    confirms_playout = False
    far_end_buffer = CHUNK_MS / 1000
    relays_events = False

    def __init__(self) -> None:
        self.rate = 8000
        self._gathered: list[bytes] = []
        self._bytes = 0
        self._chunk_bytes = self.rate * 2 * CHUNK_MS // 1000
        self.metadata: str | None = None

    def start_at_upgrade(self, query: Mapping[str, str]) -> Start:
        raw = query.get("rate", "8000").lower().removesuffix("k")
        try:
            rate = int(raw) * (1000 if query.get("rate", "").lower().endswith("k") else 1)
        except ValueError:
            raise StreamError(f"rate must be 8000 or 16000 (or 8k, 16k), not {query.get('rate')!r}", POLICY) from None
        if rate not in RATES:
            raise StreamError(f"rate must be 8000 or 16000, not {rate}", POLICY)
        self.rate = rate
        self._chunk_bytes = rate * 2 * CHUNK_MS // 1000
        return Start(WireMedia(l16(rate, little_endian=True), FRAME_MS), agent=query.get("agent") or None)

    def on_binary(self, data: bytes, started: bool) -> Event:
        if not data or len(data) % 2:
            raise StreamError(f"an audio frame of {len(data)} bytes is not whole 16-bit samples")
        return Media(data)

    def on_text(self, text: str, started: bool) -> Event:
        if self.metadata is None:
            self.metadata = text[:4096]  # the start command's metadata: any text
            return Ignored("metadata")
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise StreamError(f"not JSON: {exc}") from exc
        if isinstance(msg, dict) and (msg.get("type") == "dtmf" or msg.get("event") == "dtmf"):
            return Digit(check_digit(msg.get("digit")))
        return Ignored("text")

    def audio(self, payload: bytes) -> Message | None:
        self._gathered.append(payload)
        self._bytes += len(payload)
        if self._bytes >= self._chunk_bytes:
            return self.flush()
        return None

    def flush(self) -> Message | None:
        if not self._gathered:
            return None
        pcm = b"".join(self._gathered)
        self._gathered.clear()
        self._bytes = 0
        return self._play(pcm)

    def _play(self, pcm: bytes) -> Message:
        raise NotImplementedError

    def mark(self, name: str) -> None:
        return None

    def clear(self) -> Message | None:
        return None

    def bye(self) -> Message | None:
        return None

    def event(self, event: Mapping[str, Any]) -> None:
        return None


class AudioForkDialect(_FreeSwitchDialect):
    name = "freeswitch"
    subprotocols: tuple[str, ...] = ("audio.drachtio.org",)
    can_clear = True  # killAudio stops the file being played

    def _play(self, pcm: bytes) -> Message:
        return orjson.dumps({"type": "playAudio", "data": {"audioContentType": "raw", "sampleRate": self.rate,
                                                           "audioContent": b64encode(pcm)}}).decode()

    def clear(self) -> Message:
        return '{"type":"killAudio"}'

    def bye(self) -> Message:
        return '{"type":"disconnect"}'


class AudioStreamDialect(_FreeSwitchDialect):
    name = "freeswitch-stream"

    def _play(self, pcm: bytes) -> Message:
        return orjson.dumps({"type": "streamAudio", "data": {"audioDataType": "raw", "sampleRate": self.rate,
                                                             "audioData": b64encode(pcm)}}).decode()


def door(config: Any) -> Door:
    return stream_door("freeswitch", "/v1/streams/freeswitch", AudioForkDialect,
                       "WebSocket: FreeSWITCH mod_audio_fork (subprotocol audio.drachtio.org; query rate, agent, "
                       "token)", config)


def stream_module_door(config: Any) -> Door:
    return stream_door("freeswitch-stream", "/v1/streams/freeswitch-stream", AudioStreamDialect,
                       "WebSocket: FreeSWITCH mod_audio_stream (query rate, agent, token)", config)
