"""HTTP digest authentication for SIP, the client's side (RFC 3261 §22, RFC 2617,
RFC 7616, RFC 8760): read a challenge, compute the credentials that answer it.

A registrar or a trunk answers a request with 401 (``WWW-Authenticate``) or 407
(``Proxy-Authenticate``); the UA sends the request again with ``Authorization``
or ``Proxy-Authorization``. RFC 7616 §3.4.1, with RFC 8760's algorithms:

    A1       = username ":" realm ":" password
    A2       = Method ":" digest-uri
    response = H( H(A1) ":" nonce ":" nc ":" cnonce ":" qop ":" H(A2) )   ; qop=auth
    response = H( H(A1) ":" nonce ":" H(A2) )                              ; no qop (RFC 2069)

    challenge = "Digest" LWS digest-cln *(COMMA digest-cln)
    digest-cln = realm / domain / nonce / opaque / stale / algorithm / qop-options / auth-param

``H`` is MD5 or SHA-256 (``-sess`` variants: H(A1) becomes
H(H(A1) ":" nonce ":" cnonce)). Only qop ``auth`` is answered (``auth-int`` is
not offered by the trunks this talks to, and a challenge naming only it is
refused). The nonce count ``nc`` goes up by one for every request sent with
the same nonce (``Nonces``), so a server can detect replays.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .errors import SipParseError
from .grammar import Scanner, quote, unquote

__all__ = ["ALGORITHMS", "Challenge", "Credentials", "DigestError", "Nonces", "answer", "parse_challenge"]

ALGORITHMS: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda b: hashlib.md5(b).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
}
MAX_CHALLENGE = 4096  # characters of one WWW-Authenticate value
MAX_NONCES = 64  # nonce counts kept (the least recently used go first)


class DigestError(SipParseError):
    """A challenge that is malformed or asks for what we cannot answer."""

    def __init__(self, message: str, header: str = "WWW-Authenticate") -> None:
        super().__init__(message, header=header)


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str
    realm: str | None = None  # answer only challenges for this realm; None: any


@dataclass(frozen=True, slots=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"  # as the challenge spells it, upper-case: MD5, SHA-256, MD5-sess ...
    qop: tuple[str, ...] = ()  # the options offered, lower-case
    opaque: str | None = None
    stale: bool = False
    proxy: bool = False  # from a 407's Proxy-Authenticate

    @property
    def hash_name(self) -> str:
        return self.algorithm.removesuffix("-SESS")

    @property
    def session(self) -> bool:
        return self.algorithm.endswith("-SESS")

    @property
    def reply_header(self) -> str:
        return "Proxy-Authorization" if self.proxy else "Authorization"


def parse_challenge(text: str, *, proxy: bool = False) -> Challenge:
    """One ``Digest`` challenge; ``DigestError`` naming the parameter that is wrong."""
    header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    if len(text) > MAX_CHALLENGE:
        raise DigestError(f"{header}: longer than {MAX_CHALLENGE} characters", header)
    scheme, _, rest = text.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"{header}: scheme {scheme[:20]!r} is not Digest", header)
    try:
        params = _params(rest, header)
    except DigestError:
        raise
    except SipParseError as exc:
        raise DigestError(str(exc), header) from exc
    for required in ("realm", "nonce"):
        if required not in params:
            raise DigestError(f"{header}: no {required}", header)
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm.removesuffix("-SESS") not in ALGORITHMS:
        raise DigestError(f"{header}: algorithm {algorithm[:20]!r} is not MD5 or SHA-256", header)
    qop = tuple(q.strip().lower() for q in params["qop"].split(",") if q.strip()) if "qop" in params else ()
    if qop and "auth" not in qop:
        raise DigestError(f"{header}: qop {params['qop'][:40]!r} does not offer auth", header)
    return Challenge(params["realm"], params["nonce"], algorithm, qop, params.get("opaque"),
                     params.get("stale", "").lower() == "true", proxy)


def _params(rest: str, header: str) -> dict[str, str]:
    """digest-cln *(COMMA digest-cln), each ``name = token / quoted-string``."""
    params: dict[str, str] = {}
    s = Scanner(rest, header)
    while True:
        s.skip_ws()
        if s.at_end():
            break
        name = s.token("auth-param name").lower()
        s.expect_sep("=", "'=' after an auth-param name")
        s.skip_ws()
        value = unquote(s.quoted_string()) if s.peek() == '"' else s.token("auth-param value")
        if name in params:
            raise DigestError(f"{header}: {name} given twice", header)
        params[name] = value
        if not s.sep(","):
            s.expect_end()
            break
    return params


def answer(ch: Challenge, creds: Credentials, method: str, uri: str, *, nc: int = 1,
           cnonce: str | None = None) -> str:
    """The ``Authorization`` (or ``Proxy-Authorization``) value answering ``ch``."""
    h = ALGORITHMS[ch.hash_name]
    cnonce = cnonce if cnonce is not None else secrets.token_hex(8)
    ha1 = h(f"{creds.username}:{ch.realm}:{creds.password}".encode())
    if ch.session:
        ha1 = h(f"{ha1}:{ch.nonce}:{cnonce}".encode())
    ha2 = h(f"{method}:{uri}".encode())
    qop = "auth" if ch.qop else None
    if qop:
        response = h(f"{ha1}:{ch.nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}".encode())
    else:
        response = h(f"{ha1}:{ch.nonce}:{ha2}".encode())
    parts = [f"username={quote(creds.username)}", f"realm={quote(ch.realm)}", f"nonce={quote(ch.nonce)}",
             f"uri={quote(uri)}", f"response={quote(response)}", f"algorithm={ch.algorithm}"]
    if qop:
        parts += [f"qop={qop}", f"nc={nc:08x}", f"cnonce={quote(cnonce)}"]
    if ch.opaque is not None:
        parts.append(f"opaque={quote(ch.opaque)}")
    return "Digest " + ", ".join(parts)


class Nonces:
    """The nonce count per (realm, nonce): 1 for a nonce's first use, then up by one."""

    def __init__(self, capacity: int = MAX_NONCES) -> None:
        self.capacity = capacity
        self._n: OrderedDict[tuple[str, str], int] = OrderedDict()

    def next(self, ch: Challenge) -> int:
        key = (ch.realm, ch.nonce)
        n = self._n.pop(key, 0) + 1
        self._n[key] = n
        while len(self._n) > self.capacity:
            self._n.popitem(last=False)
        return n


_PREFERENCE = ("SHA-256", "SHA-256-SESS", "MD5", "MD5-SESS")  # RFC 8760 §2.4: the strongest first


def pick_challenge(headers: list[str], *, proxy: bool, realm: str | None = None) -> Challenge:
    """The challenge to answer among a response's (one per algorithm, RFC 8760
    §2.4): the strongest we have, for ``realm`` when one is configured."""
    usable: list[Challenge] = []
    errors: list[str] = []
    for value in headers:
        try:
            ch = parse_challenge(value, proxy=proxy)
        except SipParseError as exc:
            errors.append(str(exc))
            continue
        if realm is None or ch.realm == realm:
            usable.append(ch)
    if not usable:
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        why = f"{name}: no challenge" + (f" for realm {realm!r}" if realm else "")
        raise DigestError(f"{why} ({errors[0]})" if errors else why, name)
    return min(usable, key=lambda c: _PREFERENCE.index(c.algorithm))


__all__ += ["pick_challenge"]
