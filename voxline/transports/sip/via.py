"""The Via header: the path a request took and where its responses go.

RFC 3261 §25.1, with RFC 3581's rport:

    Via            = ( "Via" / "v" ) HCOLON via-parm *(COMMA via-parm)
    via-parm       = sent-protocol LWS sent-by *( SEMI via-params )
    via-params     = via-ttl / via-maddr / via-received / via-branch / response-port / via-extension
    sent-protocol  = protocol-name SLASH protocol-version SLASH transport
    sent-by        = host [ COLON port ]
    via-received   = "received" EQUAL (IPv4address / IPv6address)
    via-branch     = "branch" EQUAL token
    response-port  = "rport" [EQUAL 1*DIGIT]          ; RFC 3581
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipParseError
from .grammar import Params, Scanner, format_params, param_get, param_has, param_set, split_list

__all__ = ["MAGIC_COOKIE", "Via", "parse_via", "parse_via_list"]

MAGIC_COOKIE = "z9hG4bK"

_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+")
_PORT_RE = re.compile(r"[0-9]{1,5}")


@dataclass(slots=True)
class Via:
    host: str
    port: int | None = None
    transport: str = "UDP"
    params: Params = field(default_factory=list)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return param_get(self.params, "branch")

    @property
    def has_rfc3261_branch(self) -> bool:
        """True when the branch is RFC 3261's: the magic cookie and something after it.

        A bare ``z9hG4bK`` (RFC 4475 §3.2.1, badbranch) identifies nothing, so it
        gets the RFC 2543 matching rules like a missing branch.
        """
        b = self.branch
        return b is not None and b.startswith(MAGIC_COOKIE) and len(b) > len(MAGIC_COOKIE)

    @property
    def received(self) -> str | None:
        return param_get(self.params, "received")

    @property
    def rport(self) -> int | None:
        v = param_get(self.params, "rport")
        return int(v) if v and v.isdigit() else None

    @property
    def wants_rport(self) -> bool:
        return param_has(self.params, "rport")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def with_param(self, name: str, value: str | None) -> Via:
        return Via(self.host, self.port, self.transport, param_set(self.params, name, value), self.protocol)

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"


def parse_via(text: str, header: str = "Via") -> Via:
    s = Scanner(text, header)
    s.skip_ws()
    name = s.token("protocol-name")
    s.expect_sep("/", "'/' in sent-protocol")
    version = s.token("protocol-version")
    s.expect_sep("/", "'/' in sent-protocol")
    transport = s.token("transport")
    if not s.skip_ws():
        raise s.error("expected LWS before sent-by")
    host = s.regex(_HOST_RE, "sent-by host")
    port: int | None = None
    if s.sep(":"):
        port = int(s.regex(_PORT_RE, "sent-by port"))
        if port > 65535:
            raise s.error("port out of range")
    params = s.params()
    s.expect_end()
    for n, v in params:
        ln = n.lower()
        if ln in ("branch", "received", "maddr", "ttl") and v is None:
            raise SipParseError(f"{header}: {n} without a value", header=header)
        if ln == "rport" and v is not None and not v.isdigit():
            raise SipParseError(f"{header}: rport is not a number", header=header)
        if ln == "ttl" and v is not None and (not v.isdigit() or int(v) > 255):
            raise SipParseError(f"{header}: ttl out of range", header=header)
    return Via(host, port, transport.upper(), params, f"{name.upper()}/{version}")


def parse_via_list(text: str, header: str = "Via") -> list[Via]:
    out = []
    for part in split_list(text):
        if not part:
            raise SipParseError(f"{header}: empty via-parm", header=header)
        out.append(parse_via(part, header))
    return out
