"""A request sent again with credentials, after a 401 or 407 (RFC 3261 §22.2, §22.3).

``Authenticator.retry(request, challenge_response, via)`` is the request as the
UAC sends it the second time: the same Call-ID, From, To and body, a new Via
branch (a new transaction), the CSeq one higher (§8.1.3.5), and an
``Authorization`` or ``Proxy-Authorization`` answering the strongest digest
challenge the response carries. It refuses (``AuthFailed``, saying why) when
there are no credentials, when the challenge cannot be answered, and when the
server challenges again with a nonce it was already answered with and does not
call stale: the credentials are wrong, and trying again would loop.
"""

from __future__ import annotations

from .digest import Credentials, DigestError, Nonces, answer, pick_challenge
from .message import Request, Response

__all__ = ["AuthFailed", "Authenticator"]


class AuthFailed(Exception):
    """A challenge we will not (or cannot) answer; the message says why."""


class Authenticator:
    def __init__(self, credentials: Credentials | None) -> None:
        self.credentials = credentials
        self.nonces = Nonces()

    def retry(self, req: Request, resp: Response, *, via: str) -> Request:
        creds = self.credentials
        if creds is None:
            raise AuthFailed(f"{resp.status} {resp.reason}: no credentials configured")
        proxy = resp.status == 407
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        try:
            ch = pick_challenge(resp.headers.get_all(name), proxy=proxy, realm=creds.realm)
        except DigestError as exc:
            raise AuthFailed(f"{resp.status} {resp.reason}: {exc}") from exc
        answered = [v for v in req.headers.get_all(ch.reply_header) if f'nonce="{ch.nonce}"' in v]
        if answered and not ch.stale:
            raise AuthFailed(f"{resp.status} {resp.reason}: credentials refused for realm {ch.realm!r}")
        value = answer(ch, creds, req.method, str(req.uri), nc=self.nonces.next(ch))
        out = Request(method=req.method, uri=req.uri, version=req.version, headers=req.headers.copy(), body=req.body)
        h = out.headers
        vias = h.get_all("Via")
        h.replace_all("Via", [via, *vias[1:]])
        h.set("CSeq", f"{req.cseq.number + 1} {req.method}")
        h.replace_all(ch.reply_header, [value])
        return out
