"""A tiny pcap reader for captured RTP: file header, record headers, and the
Ethernet / IPv4 / UDP headers in front of each datagram. Only what the captures
under ``data/`` need; anything else raises, so a test never reads garbage."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DATA", "Datagram", "read_pcap", "rtp_payloads"]

DATA = Path(__file__).parent / "data"

_MAGIC_LE = 0xA1B2C3D4
_LINK_ETHERNET = 1
_ETHERTYPE_IPV4 = 0x0800
_PROTO_UDP = 17


@dataclass(frozen=True)
class Datagram:
    time: float
    source: tuple[str, int]
    destination: tuple[str, int]
    payload: bytes


def _ip(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def read_pcap(path: Path) -> list[Datagram]:
    data = path.read_bytes()
    (magic,) = struct.unpack_from("<I", data)
    if magic != _MAGIC_LE:
        raise ValueError(f"{path.name}: not a little-endian microsecond pcap")
    _, _, _, _, _, link = struct.unpack_from("<HHiIII", data, 4)
    if link != _LINK_ETHERNET:
        raise ValueError(f"{path.name}: link type {link} is not Ethernet")
    out = []
    pos = 24
    while pos < len(data):
        seconds, micros, included, _original = struct.unpack_from("<IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + included]
        pos += 16 + included
        (ethertype,) = struct.unpack_from("!H", frame, 12)
        if ethertype != _ETHERTYPE_IPV4:
            raise ValueError(f"{path.name}: ethertype {ethertype:#06x} is not IPv4")
        ip = frame[14:]
        header = (ip[0] & 0x0F) * 4
        (total,) = struct.unpack_from("!H", ip, 2)
        if ip[9] != _PROTO_UDP:
            raise ValueError(f"{path.name}: IP protocol {ip[9]} is not UDP")
        sport, dport, length = struct.unpack_from("!HHH", ip, header)
        payload = bytes(ip[header + 8 : header + length])
        if len(payload) != length - 8 or total < header + length:
            raise ValueError(f"{path.name}: truncated UDP datagram")
        out.append(
            Datagram(
                seconds + micros / 1e6,
                (_ip(ip[12:16]), sport),
                (_ip(ip[16:20]), dport),
                payload,
            )
        )
    return out


def rtp_payloads(name: str) -> list[Datagram]:
    return read_pcap(DATA / name)
