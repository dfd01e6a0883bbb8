"""G.711 µ-law (PCMU) and A-law (PCMA) as lookup tables.

The tables are built once at import from the ITU-T G.711 segment/quantisation
rules, in the form of the classic Sun reference code (which CPython's ``audioop``
also copies, so results are bit-exact with it). Encoding takes the 16-bit
sample's top 14 (µ-law) or 13 (A-law) bits, as that code does.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voxline.codecs.base import Codec, Pcm, check_payload, check_pcm

__all__ = ["PCMA", "PCMU", "G711", "alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

RATE = 8000
BITS_PER_SAMPLE = 8
PT_PCMU = 0  # RFC 3551 static payload types
PT_PCMA = 8

SIGN_BIT = 0x80
QUANT_MASK = 0x0F
SEG_MASK = 0x70
SEG_SHIFT = 4

ULAW_BIAS = 0x84  # added to the magnitude so every segment starts at a power of two
ULAW_CLIP = 8159  # largest 14-bit magnitude before the bias pushes it past segment 7
ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
ALAW_EVEN_BITS = 0x55  # A-law inverts the even bits of every code word


def _all_int16() -> npt.NDArray[np.int32]:
    """Every int16 value, at the index of its bit pattern read as uint16."""
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = _all_int16() >> 2  # 14-bit linear
    mask = np.where(pcm < 0, 0x7F, 0xFF)  # sign in bit 7, then all bits inverted
    magnitude = np.minimum(np.abs(pcm), ULAW_CLIP) + (ULAW_BIAS >> 2)
    seg = np.searchsorted(ULAW_SEG_END, magnitude, side="left")
    quant = (magnitude >> (seg + 1)) & QUANT_MASK
    code = np.where(seg >= 8, 0x7F, (seg << SEG_SHIFT) | quant) ^ mask
    return code.astype(np.uint8)


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((code & QUANT_MASK) << 3) + ULAW_BIAS) << ((code & SEG_MASK) >> SEG_SHIFT)
    return np.where(code & SIGN_BIT, ULAW_BIAS - t, t - ULAW_BIAS).astype(np.int16)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = _all_int16() >> 3  # 13-bit linear
    mask = np.where(pcm >= 0, 0xD5, ALAW_EVEN_BITS)  # 0xD5 = sign bit set + even bits
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1)  # one's complement: no -0
    seg = np.searchsorted(ALAW_SEG_END, magnitude, side="left")
    # Segments 0 and 1 share a step size, so both shift by one.
    quant = (magnitude >> np.maximum(seg, 1)) & QUANT_MASK
    code = np.where(seg >= 8, 0x7F, (seg << SEG_SHIFT) | quant) ^ mask
    return code.astype(np.uint8)


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ ALAW_EVEN_BITS
    seg = (code & SEG_MASK) >> SEG_SHIFT
    t = (code & QUANT_MASK) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(code & SIGN_BIT, t, -t).astype(np.int16)


class G711:
    """A stateless G.711 coder: one shared instance serves every stream."""

    __slots__ = ("_decode_table", "_encode_table", "name")

    def __init__(
        self,
        name: str,
        encode_table: npt.NDArray[np.uint8],
        decode_table: npt.NDArray[np.int16],
    ) -> None:
        self.name = name
        self._encode_table = encode_table
        self._decode_table = decode_table

    def encode(self, pcm: Pcm) -> bytes:
        check_pcm(pcm, self.name)
        return self._encode_table[pcm.view(np.uint16)].tobytes()

    def decode(self, payload: bytes) -> Pcm:
        check_payload(payload, self.name)
        return self._decode_table[np.frombuffer(payload, np.uint8)]


_ULAW = G711("PCMU", _ulaw_encode_table(), _ulaw_decode_table())
_ALAW = G711("PCMA", _alaw_encode_table(), _alaw_decode_table())

ulaw_encode = _ULAW.encode
ulaw_decode = _ULAW.decode
alaw_encode = _ALAW.encode
alaw_decode = _ALAW.decode


def _shared_ulaw() -> G711:
    return _ULAW


def _shared_alaw() -> G711:
    return _ALAW


PCMU = Codec(
    name="PCMU", rate=RATE, clock_rate=RATE, channels=1, static_pt=PT_PCMU,
    bits_per_sample=BITS_PER_SAMPLE, make_encoder=_shared_ulaw, make_decoder=_shared_ulaw,
)
PCMA = Codec(
    name="PCMA", rate=RATE, clock_rate=RATE, channels=1, static_pt=PT_PCMA,
    bits_per_sample=BITS_PER_SAMPLE, make_encoder=_shared_alaw, make_decoder=_shared_alaw,
)
