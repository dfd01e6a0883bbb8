"""SIP, SIPS and tel URIs, and any other scheme as an opaque absolute URI.

RFC 3261 §25.1 (abridged):

    SIP-URI   = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
    SIPS-URI  = "sips:" [ userinfo ] hostport uri-parameters [ headers ]
    userinfo  = ( user / telephone-subscriber ) [ ":" password ] "@"
    user      = 1*( unreserved / escaped / user-unreserved )
    user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
    password  = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
    hostport  = host [ ":" port ]
    host      = hostname / IPv4address / IPv6reference
    uri-parameters = *( ";" uri-parameter )
    uri-parameter  = pname [ "=" pvalue ]      ; paramchar = param-unreserved
    param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"   ; / unreserved / escaped
    headers   = "?" header *( "&" header )
    header    = hname "=" hvalue
    hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"
    unreserved = alphanum / mark   ; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
    absoluteURI = scheme ":" ( hier-part / opaque-part )   ; RFC 2396
    scheme    = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )

Text fields hold the *unescaped* value (``sip:%75ser@h`` has user ``"user"``);
``str()`` escapes what must be escaped, so a parsed URI prints as an equivalent
one (RFC 3261 §19.1.4 compares URIs after unescaping). tel: is RFC 3966.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote as _pct_quote
from urllib.parse import unquote_to_bytes

from .errors import SipParseError

__all__ = ["AbsoluteUri", "SipUri", "TelUri", "Uri", "parse_uri"]

_ESC = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_USER_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESC})+\Z")
_PASSWORD_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESC})*\Z")
_PARAM_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESC})+\Z")
_HNV_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESC})*\Z")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?\Z")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]\Z")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_URIC_RE = re.compile(rf"(?:[{_UNRESERVED};/?:@&=+$,]|{_ESC})+\Z")
_TEL_RE = re.compile(r"[0-9A-Fa-f*#+\-.()pPwW]+\Z")
_PORT_RE = re.compile(r"[0-9]{1,5}\Z")

# What stays literal when a field is escaped again for output.
_SAFE_USER = "-_.!~*'()&=+$,;?/"
_SAFE_PASSWORD = "-_.!~*'()&=+$,"
_SAFE_PARAM = "-_.!~*'()[]/:&+$"
_SAFE_HNV = "-_.!~*'()[]/?:+$"


def _unescape(text: str) -> str:
    # surrogateescape keeps an escaped byte that is not UTF-8 (or a NUL) intact.
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def _escape(text: str, safe: str) -> str:
    return _pct_quote(text.encode("utf-8", "surrogateescape"), safe=safe)


def _error(text: str, what: str, header: str) -> SipParseError:
    return SipParseError(f"{header}: {what} in URI {text!r}", header=header, status=400)


@dataclass(slots=True)
class SipUri:
    """A sip: or sips: URI. ``params`` and ``headers`` keep order; values unescaped."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: list[tuple[str, str | None]] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    scheme: str = "sip"

    def param(self, name: str) -> str | None:
        lname = name.lower()
        for n, v in self.params:
            if n.lower() == lname:
                return v
        return None

    def has_param(self, name: str) -> bool:
        lname = name.lower()
        return any(n.lower() == lname for n, _ in self.params)

    @property
    def transport(self) -> str | None:
        t = self.param("transport")
        return t.upper() if t else None

    @property
    def is_loose_router(self) -> bool:
        return self.has_param("lr")

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(_escape(self.user, _SAFE_USER))
            if self.password is not None:
                out.append(":" + _escape(self.password, _SAFE_PASSWORD))
            out.append("@")
        out.append(self.hostport)
        for n, v in self.params:
            out.append(";" + _escape(n, _SAFE_PARAM))
            if v is not None:
                out.append("=" + _escape(v, _SAFE_PARAM))
        if self.headers:
            out.append("?")
            out.append(
                "&".join(f"{_escape(n, _SAFE_HNV)}={_escape(v, _SAFE_HNV)}" for n, v in self.headers)
            )
        return "".join(out)


@dataclass(slots=True)
class TelUri:
    """A tel: URI (RFC 3966): the number as written and its parameters."""

    number: str
    params: list[tuple[str, str | None]] = field(default_factory=list)
    scheme: str = "tel"

    def __str__(self) -> str:
        ps = "".join(f";{n}" if v is None else f";{n}={v}" for n, v in self.params)
        return f"tel:{self.number}{ps}"


@dataclass(slots=True)
class AbsoluteUri:
    """Any other scheme, kept opaque (RFC 4475 §3.3.2-3.3.4: carried, never interpreted)."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | TelUri | AbsoluteUri


def _parse_params(text: str, header: str, full: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    if not text:
        return out
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not name or not _PARAM_RE.match(name) or (eq and not _PARAM_RE.match(value)):
            raise _error(full, f"bad uri-parameter {item!r}", header)
        out.append((_unescape(name), _unescape(value) if eq else None))
    return out


def _parse_host(hostport: str, header: str, full: str) -> tuple[str, int | None]:
    port: int | None = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _error(full, "unterminated IPv6 reference", header)
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        if not _IPV6_RE.match(host):
            raise _error(full, "bad IPv6 reference", header)
    else:
        host, _, rest = hostport.partition(":")
        rest = ":" + rest if _ else ""
        if not _HOSTNAME_RE.match(host):
            raise _error(full, f"bad host {host!r}", header)
    if rest:
        if not rest.startswith(":") or not _PORT_RE.match(rest[1:]):
            raise _error(full, "bad port", header)
        port = int(rest[1:])
        if port > 65535:
            raise _error(full, "port out of range", header)
    return host, port


def _parse_sip(scheme: str, body: str, header: str, full: str) -> SipUri:
    user = password = None
    if body.count("@") > 1:
        raise _error(full, "more than one '@'", header)
    if "@" in body:
        userinfo, body = body.split("@")
        u, colon, p = userinfo.partition(":")
        if not _USER_RE.match(u) or (colon and not _PASSWORD_RE.match(p)):
            raise _error(full, "bad userinfo", header)
        user = _unescape(u)
        password = _unescape(p) if colon else None
    body, qmark, hdrs = body.partition("?")
    hostport, _, ptext = body.partition(";")
    host, port = _parse_host(hostport, header, full)
    params = _parse_params(ptext, header, full) if _ else []
    if _ and not ptext:
        raise _error(full, "empty uri-parameter", header)
    headers: list[tuple[str, str]] = []
    if qmark:
        for item in hdrs.split("&"):
            n, eq, v = item.partition("=")
            if not n or not eq or not _HNV_RE.match(n) or not _HNV_RE.match(v):
                raise _error(full, f"bad URI header {item!r}", header)
            headers.append((_unescape(n), _unescape(v)))
    return SipUri(host, user, password, port, params, headers, scheme)


def parse_uri(text: str, header: str = "URI") -> Uri:
    """Parse one URI; ``header`` names where it came from, for the error message."""
    scheme, colon, body = text.partition(":")
    if not colon or not _SCHEME_RE.match(scheme) or not body:
        raise _error(text, "no scheme", header)
    lscheme = scheme.lower()
    if lscheme in ("sip", "sips"):
        return _parse_sip(lscheme, body, header, text)
    if lscheme == "tel":
        number, _, ptext = body.partition(";")
        if not _TEL_RE.match(number):
            raise _error(text, "bad telephone number", header)
        return TelUri(number, _parse_params(ptext, header, text) if _ else [])
    if not _URIC_RE.match(body):
        raise _error(text, "bad character", header)
    return AbsoluteUri(scheme, body)
