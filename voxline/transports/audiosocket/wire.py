"""AudioSocket framing, without I/O.

Each message is kind (1 byte) | length (2 bytes, big-endian) | payload, as in
Asterisk's ``include/asterisk/res_audiosocket.h`` and ``res/res_audiosocket.c``
(https://github.com/asterisk/asterisk): hangup 0x00 (no payload), UUID 0x01
(16 raw bytes, always the first message), DTMF 0x03 (one ASCII digit), audio
0x10 (signed linear 16-bit mono at 8 kHz, in host byte order: little-endian on
every platform Asterisk runs on), 0x11-0x18 the same at 12, 16, 24, 32, 44.1,
48, 96 and 192 kHz, error 0xFF (Asterisk's error code). Asterisk takes only
hangup and audio from the server.

The 2019 header, before the higher rates, numbered slin16 0x11; current
Asterisk numbers slin12 0x11 and slin16 0x12. This follows the current header.

``Framer`` turns bytes as they arrive into ``Message``s. Its buffer holds at
most one incomplete message (the length field caps a payload at 65,535 bytes);
a kind it does not know is still framed (the length says where it ends) and
left to the caller to count and drop.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

__all__ = [
    "HANGUP", "UUID", "DTMF", "AUDIO", "ERROR", "RATES", "KIND_BY_RATE", "HEADER",
    "AudioSocketError", "Message", "Framer", "hangup", "audio", "uuid_of", "digit_of",
]

HANGUP = 0x00
UUID = 0x01
DTMF = 0x03
AUDIO = 0x10
ERROR = 0xFF
RATES: dict[int, int] = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000,
                         0x15: 44100, 0x16: 48000, 0x17: 96000, 0x18: 192000}
KIND_BY_RATE = {rate: kind for kind, rate in RATES.items()}
HEADER = struct.Struct("!BH")
MAX_PAYLOAD = 0xFFFF
DIGITS = "0123456789*#ABCD"


class AudioSocketError(ValueError):
    """A message voxline cannot take; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class Message:
    kind: int
    payload: bytes = b""

    def __bytes__(self) -> bytes:
        if len(self.payload) > MAX_PAYLOAD:
            raise AudioSocketError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")
        return HEADER.pack(self.kind, len(self.payload)) + self.payload

    @classmethod
    def parse(cls, data: bytes) -> Message:
        """Exactly one message."""
        if len(data) < HEADER.size:
            raise AudioSocketError(f"message of {len(data)} bytes is shorter than its 3-byte header")
        kind, length = HEADER.unpack_from(data)
        if len(data) != HEADER.size + length:
            raise AudioSocketError(f"message length field says {length}, payload has {len(data) - HEADER.size}")
        return cls(kind, bytes(data[HEADER.size:]))


class Framer:
    """Bytes in, whole messages out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos = 0
        while len(buf) - pos >= HEADER.size:
            kind, length = HEADER.unpack_from(buf, pos)
            end = pos + HEADER.size + length
            if end > len(buf):
                break
            out.append(Message(kind, bytes(buf[pos + HEADER.size:end])))
            pos = end
        del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message (a truncated frame, at the end of a stream)."""
        return len(self._buf)


def hangup() -> bytes:
    return bytes(Message(HANGUP))


def audio(kind: int, pcm: bytes) -> bytes:
    return bytes(Message(kind, pcm))


def uuid_of(msg: Message) -> uuid.UUID:
    if msg.kind != UUID:
        raise AudioSocketError(f"the first message must be the UUID (0x01), not kind 0x{msg.kind:02x}")
    if len(msg.payload) != 16:
        raise AudioSocketError(f"a UUID is 16 bytes, not {len(msg.payload)}")
    return uuid.UUID(bytes=msg.payload)


def digit_of(msg: Message) -> str:
    if len(msg.payload) != 1:
        raise AudioSocketError(f"a DTMF message carries one byte, not {len(msg.payload)}")
    digit = chr(msg.payload[0]).upper()
    if digit not in DIGITS:
        raise AudioSocketError(f"DTMF byte 0x{msg.payload[0]:02x} is not one of {DIGITS}")
    return digit
