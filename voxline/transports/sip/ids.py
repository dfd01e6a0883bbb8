"""Fresh identifiers: tags, branches, Call-IDs (RFC 3261 §19.3: globally unique, random).

The random source is injectable so tests can pin identifiers.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from .via import MAGIC_COOKIE

__all__ = ["IdSource", "new_branch", "new_call_id", "new_tag"]

IdSource = Callable[[int], str]


def _hex(nbytes: int) -> str:
    return secrets.token_hex(nbytes)


def new_tag(source: IdSource = _hex) -> str:
    return source(6)


def new_branch(source: IdSource = _hex) -> str:
    """A branch with the RFC 3261 magic cookie, so receivers match on it (§8.1.1.7)."""
    return MAGIC_COOKIE + source(8)


def new_call_id(host: str, source: IdSource = _hex) -> str:
    return f"{source(10)}@{host}"


def transport_of(reliable: bool) -> str:
    """The transport a message goes over, as Via and Contact name it."""
    return "TCP" if reliable else "UDP"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def via_value(host: str, port: int, transport: str) -> str:
    """A Via for a request we send: a new branch, rport asked for (RFC 3581)."""
    return f"SIP/2.0/{transport} {_hostport(host, port)};branch={new_branch()};rport"


def contact_value(user: str, host: str, port: int, transport: str) -> str:
    """Our Contact: TCP is named, so the peer's requests come over TCP too (RFC 3261 §19.1.4)."""
    param = "" if transport == "UDP" else f";transport={transport.lower()}"
    return f"<sip:{user}@{_hostport(host, port)}{param}>"
