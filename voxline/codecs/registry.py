"""Find a codec by what SDP says: encoding name, clock rate, channels; or static PT.

Names compare case-insensitively (RFC 4855 section 3: media subtype names are
case-insensitive). Fixed-rate codecs are listed as data; L16, which SDP can
carry at any rate, is built on demand from its rate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from voxline.codecs.base import Codec, CodecError
from voxline.codecs.g711 import PCMA, PCMU
from voxline.codecs.g722 import G722
from voxline.codecs.l16 import STATIC_PT_BY_RATE as L16_STATIC_PT_BY_RATE
from voxline.codecs.l16 import l16
from voxline.codecs.opus import OPUS

__all__ = ["KNOWN", "by_static_pt", "lookup"]

Key = tuple[str, int, int]  # (lower-case name, clock rate, channels)

# The codec each SDP rtpmap means; G.722 is listed at its 8000 Hz RTP clock.
KNOWN: tuple[Codec, ...] = (PCMU, PCMA, G722, OPUS)
# Codecs SDP may carry at any clock rate: lower-case name -> factory of the rate.
_BY_RATE: dict[str, Callable[[int], Codec]] = {"l16": l16}


def _key(codec: Codec) -> Key:
    return (codec.name.lower(), codec.clock_rate, codec.channels)


def _index(codecs: Iterable[Codec]) -> dict[Key, Codec]:
    return {_key(codec): codec for codec in codecs}


_BY_KEY = _index(KNOWN)
_BY_PT = {
    codec.static_pt: codec
    for codec in (*KNOWN, *(l16(rate) for rate in L16_STATIC_PT_BY_RATE))
    if codec.static_pt is not None
}


def lookup(name: str, clock_rate: int, channels: int = 1) -> Codec:
    """The codec for an rtpmap "name/clock_rate[/channels]" (absent channels = 1)."""
    key = (name.lower(), clock_rate, channels)
    codec = _BY_KEY.get(key)
    if codec is not None:
        return codec
    factory = _BY_RATE.get(key[0])
    if factory is not None and channels == 1:
        return factory(clock_rate)  # raises CodecError for an impossible rate
    same_name = sorted(c.rtpmap for c in KNOWN if c.name.lower() == key[0])
    hint = f" (known: {', '.join(same_name)})" if same_name else ""
    raise CodecError(f"no codec {name}/{clock_rate}/{channels}{hint}")


def by_static_pt(pt: int) -> Codec:
    """The codec an RFC 3551 static payload type stands for, without SDP."""
    codec = _BY_PT.get(pt)
    if codec is None:
        raise CodecError(f"no codec for static payload type {pt}")
    return codec
