"""RTP data packets (RFC 3550 §5.1): parse, build, and sequence-number arithmetic.

The fixed header, then CSRCs, then an optional header extension (§5.3.1), then
the payload, then optional padding whose last octet counts the padding octets,
itself included::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           timestamp                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           synchronization source (SSRC) identifier            |
    +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
    |            contributing source (CSRC) identifiers             |
    |                             ....                              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |      defined by profile       |           length              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        header extension                       |
    |                             ....                              |

The extension's ``length`` counts 32-bit words after its 4-byte header. The
padding is kept as the bytes that were on the wire (not only its count) so that
``bytes(RtpPacket.parse(data)) == data`` holds for every valid datagram, which
is what lets a relay or a test compare packets byte for byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from voxline.transports.rtp.errors import RtpError

__all__ = [
    "RTP_VERSION",
    "HEADER_SIZE",
    "MAX_PACKET_SIZE",
    "HeaderExtension",
    "RtpPacket",
    "is_rtcp",
    "make_padding",
    "seq_delta",
    "seq_newer",
    "ts_delta",
]

RTP_VERSION = 2
HEADER_SIZE = 12
# The largest UDP payload over IPv4; nothing bigger can arrive in one datagram.
MAX_PACKET_SIZE = 65_507

_FIXED = struct.Struct("!BBHII")
_EXT = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class HeaderExtension:
    """RFC 3550 §5.3.1: a 16-bit profile-defined id and whole 32-bit words of data."""

    profile: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.profile <= 0xFFFF:
            raise RtpError(f"RTP header extension profile {self.profile} is not 16-bit")
        if len(self.data) % 4:
            raise RtpError(
                f"RTP header extension data of {len(self.data)} bytes is not whole 32-bit words"
            )
        if len(self.data) // 4 > 0xFFFF:
            raise RtpError("RTP header extension length exceeds 16 bits")


def make_padding(count: int) -> bytes:
    """``count`` octets of RTP padding: zeros, then the count itself (1-255)."""
    if not 1 <= count <= 255:
        raise RtpError(f"RTP padding length {count} is not 1-255")
    return bytes(count - 1) + bytes((count,))


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP data packet. Immutable: a packet is a value, not a mailbox."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: HeaderExtension | None = None
    padding: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"RTP payload type {self.payload_type} is not 0-127")
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise RtpError(f"RTP sequence number {self.sequence_number} is not 16-bit")
        if not 0 <= self.timestamp <= 0xFFFFFFFF:
            raise RtpError(f"RTP timestamp {self.timestamp} is not 32-bit")
        if not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise RtpError(f"RTP SSRC {self.ssrc} is not 32-bit")
        if len(self.csrc) > 15:
            raise RtpError(f"RTP CSRC count {len(self.csrc)} exceeds 15")
        for source in self.csrc:
            if not 0 <= source <= 0xFFFFFFFF:
                raise RtpError(f"RTP CSRC {source} is not 32-bit")
        if self.padding and (len(self.padding) > 255 or self.padding[-1] != len(self.padding)):
            raise RtpError(
                f"RTP padding of {len(self.padding)} bytes does not end with its own length"
            )

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one datagram; raises ``RtpError`` naming the field at fault."""
        size = len(data)
        if size > MAX_PACKET_SIZE:
            raise RtpError(f"RTP packet of {size} bytes exceeds {MAX_PACKET_SIZE}")
        if size < HEADER_SIZE:
            raise RtpError("RTP packet is shorter than its 12-byte header")
        first, second, seq, timestamp, ssrc = _FIXED.unpack_from(data)
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpError(f"RTP version {version} is not 2")
        count = first & 0x0F
        pos = HEADER_SIZE + 4 * count
        if pos > size:
            raise RtpError(f"RTP CSRC count {count} exceeds the packet")
        csrc = struct.unpack_from(f"!{count}I", data, HEADER_SIZE) if count else ()
        extension = None
        if first & 0x10:
            if pos + 4 > size:
                raise RtpError("RTP header extension is truncated")
            profile, words = _EXT.unpack_from(data, pos)
            pos += 4
            end = pos + 4 * words
            if end > size:
                raise RtpError(f"RTP header extension length {words} exceeds the packet")
            extension = HeaderExtension(profile, bytes(data[pos:end]))
            pos = end
        end = size
        pad = b""
        if first & 0x20:
            count_pad = data[-1]
            if count_pad == 0:
                raise RtpError("RTP padding length 0 is invalid")
            if count_pad > size - pos:
                raise RtpError(f"RTP padding length {count_pad} exceeds payload")
            end = size - count_pad
            pad = bytes(data[end:])
        return cls(
            payload_type=second & 0x7F,
            sequence_number=seq,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(second & 0x80),
            csrc=tuple(csrc),
            extension=extension,
            padding=pad,
        )

    def __bytes__(self) -> bytes:
        first = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = self.payload_type | (0x80 if self.marker else 0)
        parts = [_FIXED.pack(first, second, self.sequence_number, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            parts.append(_EXT.pack(self.extension.profile, len(self.extension.data) // 4))
            parts.append(self.extension.data)
        parts.append(self.payload)
        parts.append(self.padding)
        return b"".join(parts)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: on a muxed port, RTCP packet types 192-223 sit where RTP's
    marker and payload type are, and RTP must not use payload types 64-95."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def seq_delta(a: int, b: int) -> int:
    """``a - b`` for 16-bit sequence numbers, as the shortest signed distance."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def seq_newer(a: int, b: int) -> bool:
    """Whether sequence number ``a`` comes after ``b`` (RFC 1982 serial arithmetic)."""
    return seq_delta(a, b) > 0


def ts_delta(a: int, b: int) -> int:
    """``a - b`` for 32-bit RTP timestamps, as the shortest signed distance."""
    return ((a - b + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000
