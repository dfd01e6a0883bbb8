"""Registration with a registrar (RFC 3261 §10.2), refreshed before it expires, sans-I/O.

``Registration`` binds our Contact to an address-of-record so a trunk can send
calls to us. One Call-ID for every REGISTER of the binding, the CSeq one higher
each time (§10.2.4). The registrar grants an expiry (the ``expires`` of our
Contact in the 200, else its Expires header, else what we asked for); the
binding is refreshed when ``REFRESH`` of it has passed, so it never lapses.

    start -> REGISTER --200--> Registered(expires), refresh at 0.8 * expires
                      --401/407--> again with credentials (auth.Authenticator)
                      --423 Interval Too Brief--> again asking for Min-Expires
                      --other final, no response--> RegistrationFailed, try again
                        after RETRY s, doubling up to RETRY_MAX
    stop -> REGISTER Expires: 0 (the binding is removed)
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .auth import AuthFailed, Authenticator
from .errors import SipParseError
from .events import Address, Output, ResponseReceived, TransactionTimeout, TransportError
from .headers import parse_delta_seconds
from .ids import new_call_id, new_tag
from .layer import TransactionLayer
from .message import Request, Response
from .timers import Deadlines
from .uri import SipUri

__all__ = ["Registered", "Registration", "RegistrationFailed", "RegistrationState", "REFRESH"]

REFRESH = 0.8  # of the granted expiry
RETRY = 30.0  # s after a failure, doubling
RETRY_MAX = 600.0
MIN_EXPIRES = 60
MAX_EXPIRES = 86400
MAX_AUTH = 2  # challenged attempts per REGISTER


class RegistrationState(enum.Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERING = "unregistering"


@dataclass(frozen=True, slots=True)
class Registered:
    expires: int


@dataclass(frozen=True, slots=True)
class RegistrationFailed:
    reason: str
    retry_in: float | None  # None: not retried (we are stopping)


class Registration:
    def __init__(self, layer: TransactionLayer, auth: Authenticator, registrar: SipUri, aor: SipUri,
                 contact: str, dest: Address, via: Callable[[], str], *, expires: int = 3600) -> None:
        self.layer = layer
        self.auth = auth
        self.registrar = registrar
        self.aor = aor
        self.contact = contact
        self.dest = dest
        self._via = via
        self.expires = max(MIN_EXPIRES, min(expires, MAX_EXPIRES))
        self.call_id = new_call_id(registrar.host)
        self.tag = new_tag()
        self.cseq = 0
        self.state = RegistrationState.IDLE
        self.granted: int | None = None
        self.request: Request | None = None
        self.auth_tries = 0
        self.failures = 0
        self.last_error: str | None = None
        self.deadlines = Deadlines()

    # -- the glue's side -------------------------------------------------------------

    def start(self, now: float) -> list[Output]:
        return self._register(now, self.expires)

    def stop(self, now: float) -> list[Output]:
        """Remove the binding (Expires: 0) if there is one; nothing is retried after."""
        self.deadlines.clear()
        was = self.state
        self.state = RegistrationState.UNREGISTERING
        if was is not RegistrationState.REGISTERED:
            return []
        return self._register(now, 0)

    def _register(self, now: float, expires: int) -> list[Output]:
        self.cseq += 1
        req = Request(method="REGISTER", uri=self.registrar)
        h = req.headers
        h.add("Via", self._via())
        h.add("Max-Forwards", "70")
        h.add("From", f"<{self.aor}>;tag={self.tag}")
        h.add("To", f"<{self.aor}>")
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.cseq} REGISTER")
        h.add("Contact", self.contact)
        h.add("Expires", str(expires))
        h.add("Content-Length", "0")
        if self.state is not RegistrationState.UNREGISTERING:
            self.state = RegistrationState.REGISTERING
        self.auth_tries = 0
        return self._send(req, now)

    def _send(self, req: Request, now: float) -> list[Output]:
        self.request = req
        _, out = self.layer.request(req, self.dest, now)
        return list(out)

    # -- what the layer hands up --------------------------------------------------------

    def owns(self, o: Output) -> bool:
        return (isinstance(o, ResponseReceived | TransactionTimeout | TransportError)
                and o.transaction is not None and o.transaction.request is self.request)

    def handle(self, o: Output, now: float) -> list[Output | Registered | RegistrationFailed]:
        if not isinstance(o, ResponseReceived):
            return self._failed("no response from the registrar" if isinstance(o, TransactionTimeout)
                                else "transport error", now)
        resp = o.response
        if resp.status < 200:
            return []
        assert self.request is not None
        if resp.status in (401, 407) and self.auth_tries < MAX_AUTH:  # removing the binding is challenged too
            try:
                again = self.auth.retry(self.request, resp, via=self._via())
            except AuthFailed as exc:
                return self._failed(f"authentication failed: {exc}", now)
            self.auth_tries += 1
            self.cseq = again.cseq.number
            return [*self._send(again, now)]
        if self.state is RegistrationState.UNREGISTERING:
            self.state = RegistrationState.IDLE
            return [] if resp.status < 300 else [RegistrationFailed(f"{resp.status} {resp.reason}", None)]
        if resp.status < 300:
            return self._registered(resp, now)
        if resp.status == 423:
            try:
                least = parse_delta_seconds(resp.headers.get("Min-Expires") or "", "Min-Expires")
            except SipParseError:
                return self._failed("423 without a usable Min-Expires", now)
            if least <= self.expires or least > MAX_EXPIRES:
                return self._failed(f"423: Min-Expires {least} is not above {self.expires}", now)
            self.expires = least
            return [*self._register(now, least)]
        return self._failed(f"{resp.status} {resp.reason}", now)

    def _registered(self, resp: Response, now: float) -> list[Output | Registered | RegistrationFailed]:
        granted = self._granted(resp)
        if granted <= 0:
            return self._failed("the registrar granted no time", now)
        self.state = RegistrationState.REGISTERED
        self.granted = granted
        self.failures = 0
        self.last_error = None
        self.deadlines.set("refresh", now + REFRESH * granted)
        return [Registered(granted)]

    def _granted(self, resp: Response) -> int:
        """Our Contact's expires in the 200, else the Expires header, else what we asked."""
        try:
            ours = self.contact.strip("<>").split(">")[0]
            for c in resp.contacts:
                if str(c.uri) == ours and c.param("expires") is not None:
                    return min(parse_delta_seconds(c.param("expires") or "", "Contact"), MAX_EXPIRES)
            value = resp.headers.get("Expires")
            if value is not None:
                return min(parse_delta_seconds(value, "Expires"), MAX_EXPIRES)
        except SipParseError:
            pass
        return self.expires

    def _failed(self, reason: str, now: float) -> list[Output | Registered | RegistrationFailed]:
        if self.state is RegistrationState.UNREGISTERING:
            self.state = RegistrationState.IDLE
            return [RegistrationFailed(reason, None)]
        self.state = RegistrationState.FAILED
        self.last_error = reason
        self.failures += 1
        retry = min(RETRY * 2 ** (self.failures - 1), RETRY_MAX)
        self.deadlines.set("retry", now + retry)
        return [RegistrationFailed(reason, retry)]

    # -- time -------------------------------------------------------------------

    def next_timeout(self) -> float | None:
        return self.deadlines.next()

    def handle_timeout(self, now: float) -> list[Output]:
        out: list[Output] = []
        while (due := self.deadlines.pop_due(now)) is not None:
            out += self._register(now, self.expires)
        return out
