"""SDP session descriptions (RFC 4566), parsed from bytes and serialized back.

    session-description = proto-version origin-field session-name-field
                          information-field uri-field email-fields phone-fields
                          connection-field bandwidth-fields time-fields key-field
                          attribute-fields media-descriptions
    media-field         = %x6d "=" media SP port ["/" integer] SP proto 1*(SP fmt) CRLF
    connection-field    = %x63 "=" nettype SP addrtype SP connection-address CRLF
    attribute           = (att-field ":" att-value) / att-field

Only what offer/answer needs is typed (origin, connection, media lines,
attributes); every other line is kept as it came, in order, so a description
survives the round trip. Lines end in CRLF on output; a bare LF is accepted on
input (RFC 4566 §5). A description is bounded in size, lines and media sections.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

__all__ = ["Connection", "MediaDescription", "Origin", "SdpError", "SessionDescription", "MAX_SDP", "is_ip"]

MAX_SDP = 16384  # bytes
MAX_LINES = 512
MAX_MEDIA = 16
_ADDRTYPES = ("IP4", "IP6")


class SdpError(ValueError):
    """A malformed description; ``field`` names the line type (``"m"``, ``"c"``...)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Connection:
    """c=IN IP4|IP6 address (a TTL or a count after "/" is multicast: refused)."""

    address: str
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3 or parts[0] != "IN" or parts[1] not in _ADDRTYPES:
            raise SdpError(f"c= is not 'IN IP4|IP6 address': {value!r}", "c")
        addr = parts[2]
        if "/" in addr:
            raise SdpError("c= multicast addresses are not supported", "c")
        return cls(addr, parts[1])

    @classmethod
    def of(cls, address: str) -> Connection:
        """The connection line for an IP address (its type from its form)."""
        return cls(address, "IP6" if ":" in address else "IP4")

    @property
    def is_hold(self) -> bool:
        """RFC 2543 hold: c=0.0.0.0 (RFC 3264 §8.4 says sendonly, but it is still sent)."""
        return self.address == "0.0.0.0"

    def __str__(self) -> str:
        return f"IN {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Origin:
    username: str
    session_id: str
    version: int
    connection: Connection

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = value.split()
        if len(parts) != 6 or not parts[2].isdigit():
            raise SdpError(f"o= is not 'user id version IN type address': {value!r}", "o")
        return cls(parts[0], parts[1], int(parts[2]), Connection.parse(" ".join(parts[3:])))

    def __str__(self) -> str:
        return f"{self.username} {self.session_id} {self.version} {self.connection}"


Attribute = tuple[str, str | None]


@dataclass(slots=True)
class MediaDescription:
    media: str  # "audio", "video", ...
    port: int
    proto: str  # "RTP/AVP", "RTP/SAVP", ...
    formats: list[str]
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)  # i=, b=, k= lines, kept

    @classmethod
    def parse_m(cls, value: str) -> MediaDescription:
        parts = value.split()
        if len(parts) < 4:
            raise SdpError(f"m= needs media, port, proto and a format: {value!r}", "m")
        port_text = parts[1].split("/", 1)[0]
        if not port_text.isdigit() or int(port_text) > 65535:
            raise SdpError(f"m= port is not a port: {parts[1]!r}", "m")
        return cls(parts[0], int(port_text), parts[2], parts[3:])

    def attribute(self, name: str) -> str | None:
        """The first value of a=name (``""`` for a flag), or None."""
        for n, v in self.attributes:
            if n == name:
                return "" if v is None else v
        return None

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.attributes)

    def values(self, name: str) -> list[str]:
        return [v or "" for n, v in self.attributes if n == name]

    def rtpmap(self) -> dict[int, tuple[str, int, int]]:
        """Payload type -> (encoding name, clock rate, channels), from a=rtpmap."""
        out: dict[int, tuple[str, int, int]] = {}
        for v in self.values("rtpmap"):
            pt_text, _, enc = v.partition(" ")
            bits = enc.strip().split("/")
            if not pt_text.isdigit() or len(bits) < 2 or not bits[1].isdigit():
                raise SdpError(f"a=rtpmap is not 'pt name/rate[/channels]': {v!r}", "a")
            channels = int(bits[2]) if len(bits) > 2 and bits[2].isdigit() else 1
            out[int(pt_text)] = (bits[0], int(bits[1]), channels)
        return out

    def fmtp(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for v in self.values("fmtp"):
            pt_text, _, params = v.partition(" ")
            if pt_text.isdigit():
                out[int(pt_text)] = params.strip()
        return out

    def lines(self) -> list[str]:
        out = [f"m={self.media} {self.port} {self.proto} {' '.join(self.formats)}"]
        out += [f"{k}={v}" for k, v in self.other if k == "i"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"{k}={v}" for k, v in self.other if k != "i"]
        out += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes]
        return out


@dataclass(slots=True)
class SessionDescription:
    origin: Origin
    name: str = "-"
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)  # i= u= e= p= b= z= k= lines, kept
    times: list[str] = field(default_factory=lambda: ["0 0"])  # t= lines (r= lines are in other)

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        if len(data) > MAX_SDP:
            raise SdpError(f"description larger than {MAX_SDP} bytes", "sdp")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError("description is not UTF-8", "sdp") from exc
        lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
        if len(lines) > MAX_LINES:
            raise SdpError(f"more than {MAX_LINES} lines", "sdp")
        parsed = []
        for ln in lines:
            if len(ln) < 2 or ln[1] != "=" or not ln[0].isalpha():
                raise SdpError(f"not a 'type=value' line: {ln[:40]!r}", "sdp")
            parsed.append((ln[0], ln[2:].strip()))
        if not parsed or parsed[0] != ("v", "0"):
            raise SdpError("the first line must be v=0", "v")
        origin: Origin | None = None
        sd: SessionDescription | None = None
        pending: list[tuple[str, str]] = []
        name = "-"
        times: list[str] = []
        for kind, value in parsed[1:]:
            if kind == "o" and origin is None:
                origin = Origin.parse(value)
                sd = cls(origin, times=times)
                continue
            if sd is None:
                raise SdpError("o= must follow v=", "o")
            current = sd.media[-1] if sd.media else None
            if kind == "m":
                if len(sd.media) >= MAX_MEDIA:
                    raise SdpError(f"more than {MAX_MEDIA} media sections", "m")
                sd.media.append(MediaDescription.parse_m(value))
            elif kind == "c":
                conn = Connection.parse(value)
                if current is None:
                    sd.connection = conn
                else:
                    current.connection = conn
            elif kind == "a":
                n, sep, v = value.partition(":")
                attr: Attribute = (n, v if sep else None)
                (current.attributes if current is not None else sd.attributes).append(attr)
            elif current is None:
                if kind == "s":
                    name = value or "-"
                elif kind == "t":
                    times.append(value)
                else:
                    pending.append((kind, value))
            else:
                current.other.append((kind, value))
        if sd is None:
            raise SdpError("missing o= line", "o")
        sd.name = name
        sd.other = pending
        sd.times = times or ["0 0"]
        for m in sd.media:
            if m.connection is None and sd.connection is None and m.port != 0:
                raise SdpError("a media section has no c= line, nor does the session", "c")
        return sd

    def connection_for(self, media: MediaDescription) -> Connection | None:
        return media.connection or self.connection

    def __bytes__(self) -> bytes:
        out = ["v=0", f"o={self.origin}", f"s={self.name}"]
        out += [f"{k}={v}" for k, v in self.other if k in "iuep"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"{k}={v}" for k, v in self.other if k == "b"]
        out += [f"t={t}" for t in self.times]
        out += [f"{k}={v}" for k, v in self.other if k not in "iuepb"]
        out += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes]
        for m in self.media:
            out += m.lines()
        return ("\r\n".join(out) + "\r\n").encode("utf-8")


def is_ip(address: str) -> bool:
    """True for an IPv4 or IPv6 literal (c= may name a host; RTP needs an address)."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True
