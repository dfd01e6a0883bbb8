"""SIP requests and responses: parsed from bytes, serialized back to bytes.

RFC 3261 §7, §25.1:

    SIP-message    = Request / Response
    Request        = Request-Line *( message-header ) CRLF [ message-body ]
    Request-Line   = Method SP Request-URI SP SIP-Version CRLF
    Response       = Status-Line *( message-header ) CRLF [ message-body ]
    Status-Line    = SIP-Version SP Status-Code SP Reason-Phrase CRLF
    SIP-Version    = "SIP" "/" 1*DIGIT "." 1*DIGIT
    Status-Code    = 3DIGIT            ; 100-699 (§7.2, RFC 4475 §3.1.2.19 bigcode)
    Reason-Phrase  = *(reserved / unreserved / escaped / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
    message-header = field-name HCOLON field-value CRLF   ; continuation lines start with WSP

One datagram is one message (§18.3): the body is what Content-Length says, bytes
past it are discarded (RFC 4475 dblreq), and a Content-Length larger than what
arrived is a 400 (clerr). Streams are split by ``framing.StreamFramer``.

``parse_message(data)`` checks the syntax of every known header (``check=True``);
``check=False`` frames the message only, so a service can still answer a request
whose headers are bad with a 400 built from the raw Via/From/To/Call-ID/CSeq.
Header values are text decoded from UTF-8; bytes that are not UTF-8 survive the
round trip (surrogateescape) so that ``bytes(parse_message(x))`` is equivalent to x.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .address import NameAddr, parse_name_addr, parse_name_addr_list
from .errors import SipParseError
from .grammar import is_token
from .headers import (
    HEADER_SPECS,
    CSeq,
    Headers,
    MediaType,
    parse_cseq,
    parse_int,
    parse_max_forwards,
    parse_media_type,
    parse_tokens,
)
from .uri import SipUri, Uri, parse_uri
from .via import Via, parse_via_list

__all__ = [
    "REASONS",
    "Limits",
    "Message",
    "Request",
    "Response",
    "check_headers",
    "make_response",
    "parse_message",
    "parse_head",
]

SIP_VERSION = "SIP/2.0"
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.IGNORECASE)
_CODE_RE = re.compile(r"[1-6][0-9]{2}\Z")

REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 603: "Decline",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one message may cost to parse (every input has a size limit).

    The defaults hold the RFC 4475 messages (longreq: 3.5 KB, 70 headers) with room.
    """

    max_message: int = 65536
    max_headers: int = 256
    max_line: int = 8192


DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class Message:
    """What requests and responses share: headers, body, typed header accessors."""

    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def _single(self, name: str) -> str | None:
        values = self.headers.get_all(name)
        if len(values) > 1:
            raise SipParseError(f"{name}: more than one value", header=name)
        return values[0] if values else None

    def _required(self, name: str) -> str:
        v = self._single(name)
        if v is None:
            raise SipParseError(f"missing {name} header", header=name)
        return v

    @property
    def vias(self) -> list[Via]:
        return [v for line in self.headers.get_all("Via") for v in parse_via_list(line)]

    @property
    def top_via(self) -> Via:
        lines = self.headers.get_all("Via")
        if not lines:
            raise SipParseError("missing Via header", header="Via")
        return parse_via_list(lines[0])[0]

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self._required("From"), "From")

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self._required("To"), "To")

    @property
    def call_id(self) -> str:
        return self._required("Call-ID").strip()

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self._required("CSeq"))

    @property
    def max_forwards(self) -> int | None:
        v = self._single("Max-Forwards")
        return None if v is None else parse_max_forwards(v)

    @property
    def contacts(self) -> list[NameAddr]:
        lines = self.headers.get_all("Contact")
        if len(lines) == 1 and lines[0].strip() == "*":
            return []
        return [a for line in lines for a in parse_name_addr_list(line, "Contact")]

    @property
    def record_routes(self) -> list[NameAddr]:
        return [a for line in self.headers.get_all("Record-Route") for a in parse_name_addr_list(line, "Record-Route")]

    @property
    def routes(self) -> list[NameAddr]:
        return [a for line in self.headers.get_all("Route") for a in parse_name_addr_list(line, "Route")]

    @property
    def content_type(self) -> MediaType | None:
        v = self._single("Content-Type")
        return None if v is None else parse_media_type(v)

    def tokens(self, name: str) -> list[str]:
        """The option tags of Require, Supported, Allow... over every line."""
        return [t for line in self.headers.get_all(name) for t in parse_tokens(line, name)]

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        """Set the body and keep Content-Length (and Content-Type) in step with it."""
        self.body = body
        if content_type is not None:
            self.headers.set("Content-Type", content_type)
        elif not body:
            self.headers.remove("Content-Type")
        self.headers.set("Content-Length", str(len(body)))

    def _head_lines(self) -> list[str]:
        return [f"{n}: {v}" for n, v in self.headers]

    def _serialize(self, start: str) -> bytes:
        head = "\r\n".join([start, *self._head_lines()]) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body


@dataclass(slots=True)
class Request(Message):
    method: str = "OPTIONS"
    uri: Uri = field(default_factory=lambda: SipUri("invalid"))

    def __bytes__(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} {self.version}")


@dataclass(slots=True)
class Response(Message):
    status: int = 200
    reason: str = "OK"

    def __bytes__(self) -> bytes:
        return self._serialize(f"{self.version} {self.status} {self.reason}")


def _parse_start(line: str) -> Request | Response:
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        code, sp, reason = rest.partition(" ")
        if not _VERSION_RE.match(version):
            raise SipParseError(f"start-line: bad SIP-Version {version!r}", header="start-line")
        if not _CODE_RE.match(code):
            raise SipParseError(f"start-line: bad Status-Code {code!r}", header="start-line")
        if any(c in reason for c in "\r\n"):
            raise SipParseError("start-line: bad Reason-Phrase", header="start-line")
        return Response(version=version.upper(), status=int(code), reason=reason)
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        # lwsstart, trws, lwsruri: exactly one SP between the three elements (§7.1).
        raise SipParseError(
            f"start-line: expected 'Method SP Request-URI SP SIP-Version', got {line[:80]!r}",
            header="start-line",
        )
    method, uri_text, version = parts
    if not is_token(method):
        raise SipParseError(f"start-line: bad Method {method!r}", header="start-line")
    if not _VERSION_RE.match(version):
        raise SipParseError(f"start-line: bad SIP-Version {version!r}", header="start-line")
    uri = parse_uri(uri_text, "Request-URI")
    if isinstance(uri, SipUri) and uri.headers:
        # §19.1.1: headers are not allowed in a Request-URI (RFC 4475 escruri).
        raise SipParseError("Request-URI: headers are not allowed in a Request-URI", header="Request-URI")
    return Request(version=version.upper(), method=method, uri=uri)


def parse_head(head: bytes, limits: Limits = DEFAULT_LIMITS) -> Request | Response:
    """Parse the start line and header lines (no body); unfold continuation lines."""
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise SipParseError("message: empty", header="message")
    for ln in lines:
        if len(ln) > limits.max_line:
            raise SipParseError(f"message: a line is longer than {limits.max_line}", status=513, header="message")
        if "\r" in ln or "\n" in ln:
            raise SipParseError("message: bare CR or LF in the header section", header="message")
    msg = _parse_start(lines[0])
    items: list[tuple[str, str]] = []
    for ln in lines[1:]:
        if ln[:1] in (" ", "\t"):
            if not items:
                raise SipParseError("message: continuation line before any header", header="message")
            name, value = items[-1]
            items[-1] = (name, (value + " " + ln.strip(" \t")).strip(" \t"))
            continue
        name, colon, value = ln.partition(":")
        name = name.rstrip(" \t")
        if not colon or not is_token(name):
            raise SipParseError(
                f"message: bad header line {ln[:60]!r}", header=name if colon and name else "message"
            )
        items.append((name, value.strip(" \t")))
        if len(items) > limits.max_headers:
            raise SipParseError(f"message: more than {limits.max_headers} headers", status=513, header="message")
    msg.headers = Headers(items)
    return msg


def content_length(msg: Message) -> int | None:
    """The one Content-Length value, or None; several are a 400 (RFC 4475 mcl01)."""
    values = msg.headers.get_all("Content-Length")
    if not values:
        return None
    if len(values) > 1 or "," in values[0]:
        raise SipParseError("Content-Length: more than one value", header="Content-Length")
    return parse_int(values[0], "Content-Length", limit=2**31 - 1)


def check_headers(msg: Message) -> None:
    """Check the syntax of every known header value (see ``HEADER_SPECS``)."""
    for name, value in msg.headers:
        spec = HEADER_SPECS.get(name)
        if spec is not None:
            spec.check(value, name)


def parse_message(data: bytes, limits: Limits = DEFAULT_LIMITS, *, check: bool = True) -> Request | Response:
    """Parse one datagram (one message). Raises ``SipParseError``."""
    if len(data) > limits.max_message:
        raise SipParseError(f"message: larger than {limits.max_message} bytes", status=513, header="message")
    i = 0
    while data.startswith(b"\r\n", i):  # §7.5: empty lines before the start line
        i += 2
    end = data.find(b"\r\n\r\n", i)
    if end < 0:
        # Tolerated: a datagram whose header section just ends (no empty line).
        head, body = data[i:], b""
    else:
        head, body = data[i : end + 2], data[end + 4 :]
    msg = parse_head(head, limits)
    length = content_length(msg)
    if length is not None:
        if length > len(body):
            raise SipParseError(
                f"Content-Length: {length} is larger than the {len(body)} bytes of body", header="Content-Length"
            )
        body = body[:length]
    msg.body = body
    if check:
        check_headers(msg)
    return msg


_COPIED = ("Via", "From", "To", "Call-ID", "CSeq")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> Response:
    """A response to ``request`` per §8.2.6.2: Via, From, To, Call-ID and CSeq copied.

    Works from the raw header lines, so it can answer a request whose headers are
    malformed. ``to_tag`` is added to To unless it has a tag already (or this is 100).
    """
    resp = Response(version=SIP_VERSION, status=status, reason=reason or REASONS.get(status, "Unknown"))
    for name in _COPIED:
        for value in request.headers.get_all(name):
            if name == "To" and to_tag and status > 100 and ";tag=" not in value.replace(" ", "").lower():
                value = f"{value};tag={to_tag}"
            resp.headers.add(name, value)
    for name, value in extra or []:
        resp.headers.add(name, value)
    resp.headers.add("Content-Length", "0")
    return resp
