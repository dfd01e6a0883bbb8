"""RTCP (RFC 3550 §6): SR, RR, SDES, BYE and compound packets; NTP time; RTT.

Every RTCP packet starts with the same 4-byte header; ``length`` counts 32-bit
words minus one, so packets stack into a compound datagram with no other
framing::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|   RC    |      PT       |             length            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

A report block (§6.4.1), 24 bytes, in SR and RR::

    |                 SSRC of the source being reported             |
    | fraction lost |       cumulative number of packets lost       |
    |           extended highest sequence number received           |
    |                      interarrival jitter                      |
    |                         last SR (LSR)                         |
    |                   delay since last SR (DLSR)                  |

Cumulative lost is a signed 24-bit number (duplicates can make it negative).
LSR is the middle 32 bits of the last SR's NTP timestamp and DLSR the delay
since it, in 1/65536 s; the round-trip time is ``now - LSR - DLSR`` in the same
units (§6.4.1, A.8). Packet types this module does not model (APP, feedback)
parse as ``RtcpUnknown`` and survive a round trip, so a compound from a
WebRTC peer is never rejected for carrying them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TypeAlias

from voxline.transports.rtp.errors import RtcpError

__all__ = [
    "SR",
    "RR",
    "SDES",
    "BYE",
    "SDES_CNAME",
    "ReportBlock",
    "SenderReport",
    "ReceiverReport",
    "SdesChunk",
    "SourceDescription",
    "Bye",
    "RtcpUnknown",
    "RtcpPacket",
    "parse_compound",
    "build_packet",
    "build_compound",
    "ntp_from_unix",
    "ntp_middle",
    "round_trip_time",
]

SR, RR, SDES, BYE = 200, 201, 202, 203
SDES_CNAME = 1
_HEADER = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IB3sIIII")
_SR_INFO = struct.Struct("!IQIII")
# The NTP era starts 1900-01-01, 70 years (17 of them leap) before the Unix epoch.
_NTP_UNIX_OFFSET = 2_208_988_800


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """Reception statistics about one source (§6.4.1)."""

    ssrc: int
    fraction_lost: int = 0
    packets_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.fraction_lost <= 255:
            raise RtcpError(f"RTCP fraction lost {self.fraction_lost} is not 8-bit")
        if not -0x800000 <= self.packets_lost <= 0x7FFFFF:
            raise RtcpError(f"RTCP cumulative lost {self.packets_lost} is not signed 24-bit")

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> ReportBlock:
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        return cls(
            ssrc,
            fraction,
            int.from_bytes(lost, "big", signed=True),
            highest,
            jitter,
            lsr,
            dlsr,
        )

    def __bytes__(self) -> bytes:
        lost = self.packets_lost.to_bytes(3, "big", signed=True)
        return _BLOCK.pack(
            self.ssrc,
            self.fraction_lost,
            lost,
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """One source's items as (type, value) pairs; CNAME (type 1) is the one that matters."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    @property
    def cname(self) -> str | None:
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class SourceDescription:
    chunks: tuple[SdesChunk, ...] = ()


@dataclass(frozen=True, slots=True)
class Bye:
    sources: tuple[int, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RtcpUnknown:
    """A packet type not modelled here (APP, RTPFB, PSFB, XR), kept as its bytes."""

    packet_type: int
    count: int
    body: bytes


RtcpPacket: TypeAlias = SenderReport | ReceiverReport | SourceDescription | Bye | RtcpUnknown


def _blocks(data: bytes, offset: int, count: int, end: int, kind: str) -> tuple[ReportBlock, ...]:
    if offset + 24 * count > end:
        raise RtcpError(f"RTCP {kind} report count {count} exceeds its length")
    return tuple(ReportBlock.parse(data, offset + 24 * i) for i in range(count))


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    chunks = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(body):
            raise RtcpError("RTCP SDES chunk is truncated")
        (ssrc,) = struct.unpack_from("!I", body, pos)
        pos += 4
        items: list[tuple[int, bytes]] = []
        while True:
            if pos >= len(body):
                raise RtcpError("RTCP SDES chunk has no terminating null item")
            kind = body[pos]
            if kind == 0:
                # The null item, then zeros up to the next 32-bit boundary.
                pos = (pos + 4) & ~3
                break
            if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                raise RtcpError("RTCP SDES item length exceeds the packet")
            length = body[pos + 1]
            items.append((kind, bytes(body[pos + 2 : pos + 2 + length])))
            pos += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(body: bytes, count: int) -> Bye:
    if 4 * count > len(body):
        raise RtcpError(f"RTCP BYE source count {count} exceeds its length")
    sources = struct.unpack_from(f"!{count}I", body)
    reason = ""
    pos = 4 * count
    if pos < len(body):
        length = body[pos]
        if pos + 1 + length > len(body):
            raise RtcpError("RTCP BYE reason length exceeds the packet")
        reason = body[pos + 1 : pos + 1 + length].decode("utf-8", "replace")
    return Bye(tuple(sources), reason)


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == SR:
        if len(body) < 24:
            raise RtcpError("RTCP SR is shorter than its sender info")
        ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(body)
        reports = _blocks(body, 24, count, len(body), "SR")
        return SenderReport(
            ssrc, ntp, rtp_ts, packets, octets, reports, bytes(body[24 + 24 * count :])
        )
    if packet_type == RR:
        if len(body) < 4:
            raise RtcpError("RTCP RR is shorter than its SSRC")
        (ssrc,) = struct.unpack_from("!I", body)
        reports = _blocks(body, 4, count, len(body), "RR")
        return ReceiverReport(ssrc, reports, bytes(body[4 + 24 * count :]))
    if packet_type == SDES:
        return _parse_sdes(body, count)
    if packet_type == BYE:
        return _parse_bye(body, count)
    return RtcpUnknown(packet_type, count, bytes(body))


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP datagram (one packet is a compound of one).

    The first-packet rule of §6.1 (SR or RR first) is not enforced: reduced-size
    RTCP (RFC 5506) sends feedback alone, and rejecting it gains nothing.
    """
    if len(data) > 65_507:
        raise RtcpError(f"RTCP packet of {len(data)} bytes exceeds 65507")
    if len(data) < 4:
        raise RtcpError("RTCP packet is shorter than its 4-byte header")
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise RtcpError("RTCP header is truncated")
        first, packet_type, words = _HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise RtcpError(f"RTCP version {first >> 6} is not 2")
        end = pos + 4 * (words + 1)
        if end > len(data):
            raise RtcpError(f"RTCP length {words} exceeds the packet")
        body_end = end
        if first & 0x20:
            # Only the last packet of a compound may be padded (§6.4.1).
            if end != len(data):
                raise RtcpError("RTCP padding bit set on a packet that is not last")
            pad = data[end - 1]
            if pad == 0 or pad > end - pos - 4:
                raise RtcpError(f"RTCP padding length {pad} exceeds payload")
            body_end = end - pad
        packets.append(_parse_one(packet_type, first & 0x1F, bytes(data[pos + 4 : body_end])))
        pos = end
    return packets


def _pad4(body: bytes) -> bytes:
    return body + bytes(-len(body) % 4)


def _header(packet_type: int, count: int, body: bytes) -> bytes:
    if count > 31:
        raise RtcpError(f"RTCP count {count} exceeds 31")
    if len(body) % 4:
        raise RtcpError(f"RTCP body of {len(body)} bytes is not whole 32-bit words")
    return _HEADER.pack(0x80 | count, packet_type, len(body) // 4) + body


def build_packet(packet: RtcpPacket) -> bytes:
    """One RTCP packet as bytes (no padding)."""
    match packet:
        case SenderReport():
            body = _SR_INFO.pack(
                packet.ssrc,
                packet.ntp_timestamp,
                packet.rtp_timestamp,
                packet.packet_count,
                packet.octet_count,
            )
            body += b"".join(bytes(block) for block in packet.reports) + packet.extension
            return _header(SR, len(packet.reports), body)
        case ReceiverReport():
            body = struct.pack("!I", packet.ssrc)
            body += b"".join(bytes(block) for block in packet.reports) + packet.extension
            return _header(RR, len(packet.reports), body)
        case SourceDescription():
            parts = []
            for chunk in packet.chunks:
                chunk_bytes = struct.pack("!I", chunk.ssrc)
                for kind, value in chunk.items:
                    if not 1 <= kind <= 255 or len(value) > 255:
                        raise RtcpError(f"RTCP SDES item {kind} of {len(value)} bytes is invalid")
                    chunk_bytes += bytes((kind, len(value))) + value
                # At least one null octet ends the item list, then pad to 32 bits.
                parts.append(_pad4(chunk_bytes + b"\x00"))
            return _header(SDES, len(packet.chunks), b"".join(parts))
        case Bye():
            body = struct.pack(f"!{len(packet.sources)}I", *packet.sources)
            if packet.reason:
                reason = packet.reason.encode()
                if len(reason) > 255:
                    raise RtcpError("RTCP BYE reason exceeds 255 bytes")
                body = _pad4(body + bytes((len(reason),)) + reason)
            return _header(BYE, len(packet.sources), body)
        case RtcpUnknown():
            return _header(packet.packet_type, packet.count, packet.body)


def build_compound(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    """Packets stacked into one datagram (§6.1: send SR/RR first, then SDES)."""
    return b"".join(build_packet(packet) for packet in packets)


def ntp_from_unix(seconds: float) -> int:
    """A 64-bit NTP timestamp (32.32 fixed point since 1900) from Unix seconds."""
    whole = int(seconds)
    fraction = int((seconds - whole) * (1 << 32)) & 0xFFFFFFFF
    return (((whole + _NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32) | fraction


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: the LSR field's unit (1/65536 s)."""
    return (ntp >> 16) & 0xFFFFFFFF


def round_trip_time(block: ReportBlock, arrival_ntp: int) -> float | None:
    """RTT in seconds from a report block about our stream (§6.4.1).

    ``arrival_ntp`` is the 64-bit NTP time the report arrived. ``None`` when the
    peer has had no SR from us yet (LSR 0). The arithmetic is modulo 2**32, as
    the RFC's 32-bit fields are, and a negative result (clocks stepped) is 0.
    """
    if block.lsr == 0:
        return None
    units = (ntp_middle(arrival_ntp) - block.lsr - block.dlsr) & 0xFFFFFFFF
    if units >= 0x80000000:
        return 0.0
    return units / 65536.0
