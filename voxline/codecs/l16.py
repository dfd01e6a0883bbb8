"""Linear 16-bit PCM in either byte order, at any rate.

Big-endian "L16" is what RTP carries (RFC 3551 section 4.5.11: network byte
order). Little-endian is what the media-server sockets send raw (Asterisk
AudioSocket, Vonage and FreeSWITCH audio streams); it has no SDP name, so its
``Codec.name`` is "L16LE" and the registry does not list it.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from voxline.codecs.base import Codec, CodecError, Pcm, check_payload, check_pcm

__all__ = ["L16", "l16"]

SAMPLE_BYTES = 2
MAX_RATE = 192_000
# RFC 3551 gives L16 static types only at 44.1 kHz: 10 is stereo, 11 is mono.
STATIC_PT_BY_RATE = {44_100: 11}
_BIG = np.dtype(">i2")
_LITTLE = np.dtype("<i2")


class L16:
    """A stateless L16 coder in one byte order."""

    __slots__ = ("_wire", "name")

    def __init__(self, name: str, wire: np.dtype[np.int16]) -> None:
        self.name = name
        self._wire = wire

    def encode(self, pcm: Pcm) -> bytes:
        check_pcm(pcm, self.name)
        # astype is a no-op view when the wire order is native; tobytes copies.
        return pcm.astype(self._wire, copy=False).tobytes()

    def decode(self, payload: bytes) -> Pcm:
        check_payload(payload, self.name)
        if len(payload) % SAMPLE_BYTES:
            raise CodecError(
                f"{self.name} payload length {len(payload)} is not a multiple of {SAMPLE_BYTES}"
            )
        # astype copies, so the result is native, writable and owns its memory.
        return np.frombuffer(payload, self._wire).astype(np.int16)


_BIG_CODER = L16("L16", _BIG)
_LITTLE_CODER = L16("L16LE", _LITTLE)


def _big() -> L16:
    return _BIG_CODER


def _little() -> L16:
    return _LITTLE_CODER


def l16(rate: int, *, little_endian: bool = False) -> Codec:
    """The mono L16 codec at ``rate`` Hz (one shared description per rate/order)."""
    return _l16(rate, little_endian)


@cache  # behind l16() so that every spelling of the same call shares one cache key
def _l16(rate: int, little_endian: bool) -> Codec:
    if not 0 < rate <= MAX_RATE:
        raise CodecError(f"L16 rate {rate} is outside 1..{MAX_RATE}")
    coder = _little if little_endian else _big
    return Codec(
        name="L16LE" if little_endian else "L16",
        rate=rate,
        clock_rate=rate,
        channels=1,
        static_pt=None if little_endian else STATIC_PT_BY_RATE.get(rate),
        bits_per_sample=SAMPLE_BYTES * 8,
        make_encoder=coder,
        make_decoder=coder,
    )
