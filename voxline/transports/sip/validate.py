"""What a UAS answers before it looks at a request's meaning (RFC 3261 §8.2).

``validate_request(req, policy)`` returns the error response the RFC expects,
or None when the request may be processed. The checks run in the order of
§8.2 (and RFC 4475 §3.1.2-3.4 names the expected outcome of each torture case):

1. header syntax (400 naming the header), SIP-Version (505, badvers),
   required headers present (400 naming them, insuf), one value in single-value
   headers (400, multi01);
2. method (405 with Allow for a known method we do not serve, 501 for an unknown
   one, mismatch02, esc02) and the CSeq method (400, mismatch01);
3. Request-URI scheme (416, unkscm, novelsc), REGISTER's To (400, unksm2);
4. Require (420 with Unsupported, bext01; Proxy-Require is for proxies);
5. the body's Content-Type (415 with Accept, invut), Accept (406, sdp01);
6. an Authorization of an unknown scheme when the policy challenges (401, regaut01).

A UAS does not act on Max-Forwards (a request with 0 is for us: RFC 4475
zeromf), and a bare ``z9hG4bK`` branch falls back to RFC 2543 matching
(badbranch) rather than being rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SipParseError
from .headers import HEADER_SPECS, parse_media_type
from .ids import new_tag
from .message import Request, Response, check_headers, make_response
from .uri import SipUri

__all__ = ["KNOWN_METHODS", "UasPolicy", "validate_request"]

KNOWN_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER MESSAGE UPDATE".split()
)
_REQUIRED = ("To", "From", "Call-ID", "CSeq", "Via")


@dataclass(frozen=True, slots=True)
class UasPolicy:
    """What this UAS serves. The defaults are a voice UA's; tests widen them."""

    methods: frozenset[str] = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "REFER", "NOTIFY"})
    schemes: frozenset[str] = frozenset({"sip", "sips", "tel"})
    supported: frozenset[str] = frozenset({"replaces", "timer"})
    content_types: frozenset[str] = frozenset({"application/sdp", "application/dtmf-relay"})
    # Media types our responses may carry; a request whose Accept excludes all is 406.
    produces: frozenset[str] = frozenset({"application/sdp"})
    # When set, a request authorized with a scheme we do not know is challenged (401).
    challenge: str | None = None


def _bad(req: Request, header: str, detail: str, to_tag: str) -> Response:
    return make_response(req, 400, f"Bad Request ({detail})"[:120], to_tag=to_tag)


def _accepts(accept_values: list[str], produces: frozenset[str]) -> bool:
    for v in accept_values:
        mt = parse_media_type(v, "Accept").mime
        for p in produces:
            t, _, _ = p.partition("/")
            if mt in ("*/*", f"{t}/*", p):
                return True
    return False


def validate_request(req: Request, policy: UasPolicy = UasPolicy(), *, to_tag: str | None = None) -> Response | None:
    tag = to_tag or new_tag()
    try:
        check_headers(req)
    except SipParseError as e:
        return _bad(req, e.header or "message", str(e), tag)
    if req.version != "SIP/2.0":
        return make_response(req, 505, to_tag=tag)
    missing = [h for h in _REQUIRED if not req.headers.get_all(h)]
    if missing:
        return _bad(req, missing[0], "missing " + ", ".join(missing), tag)
    for name, spec in HEADER_SPECS.items():
        if spec.single and len(req.headers.get_all(name)) > 1:
            return _bad(req, name, f"more than one {name}", tag)
    allow = ", ".join(sorted(policy.methods))
    if req.method not in policy.methods:
        status = 405 if req.method in KNOWN_METHODS else 501
        return make_response(req, status, to_tag=tag, extra=[("Allow", allow)])
    if req.cseq.method != req.method:
        return _bad(req, "CSeq", f"CSeq method {req.cseq.method} does not match {req.method}", tag)
    if req.uri.scheme.lower() not in policy.schemes:
        return make_response(req, 416, to_tag=tag)
    if req.method == "REGISTER" and not isinstance(req.to.uri, SipUri):
        # RFC 3261 §10.2: the To of a REGISTER is an address-of-record, a SIP(S) URI.
        return _bad(req, "To", "To of a REGISTER must be a SIP or SIPS URI", tag)
    if req.method not in ("ACK", "CANCEL"):
        unsupported = [t for t in req.tokens("Require") if t.lower() not in policy.supported]
        if unsupported:
            return make_response(req, 420, to_tag=tag, extra=[("Unsupported", ", ".join(unsupported))])
    if req.body:
        ct = req.content_type
        if ct is None:
            return _bad(req, "Content-Type", "a body without Content-Type", tag)
        if ct.mime not in policy.content_types:
            accept = ", ".join(sorted(policy.content_types))
            return make_response(req, 415, to_tag=tag, extra=[("Accept", accept)])
    accept_values = req.headers.values("Accept")
    if req.method in ("INVITE", "OPTIONS") and accept_values and not _accepts(accept_values, policy.produces):
        return make_response(req, 406, to_tag=tag)
    if policy.challenge is not None:
        auth = req.headers.get("Authorization")
        if auth is not None and auth.split(" ", 1)[0].lower() != "digest":
            return make_response(req, 401, to_tag=tag, extra=[("WWW-Authenticate", policy.challenge)])
    return None
