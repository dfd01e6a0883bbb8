"""Registration on a fake clock: granted expiry, refresh before it, digest, 423, retry with back-off, removal."""

from __future__ import annotations

from typing import Any

from voxline.transports.sip.auth import Authenticator
from voxline.transports.sip.digest import Credentials
from voxline.transports.sip.events import Send
from voxline.transports.sip.layer import TransactionLayer
from voxline.transports.sip.message import Request, Response, make_response, parse_message
from voxline.transports.sip.register import Registered, Registration, RegistrationFailed, RegistrationState
from voxline.transports.sip.uri import parse_uri

REGISTRAR = ("127.0.0.1", 5090)
CONTACT = "<sip:voxline@127.0.0.1:5060>"
VIA = iter(f"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-r{i};rport" for i in range(1000))


class Harness:
    def __init__(self, creds: Credentials | None = None, expires: int = 3600) -> None:
        self.layer = TransactionLayer()
        self.reg = Registration(self.layer, Authenticator(creds), parse_uri("sip:trunk.example"),  # type: ignore[arg-type]
                                parse_uri("sip:alice@trunk.example"), CONTACT, REGISTRAR,  # type: ignore[arg-type]
                                lambda: next(VIA), expires=expires)
        self.now = 0.0
        self.sent: list[Request] = []

    def keep(self, out: list[Any]) -> list[Any]:
        self.sent += [o.message for o in out if isinstance(o, Send) and isinstance(o.message, Request)]
        return [o for o in out if not isinstance(o, Send)]

    def start(self) -> None:
        self.keep(self.reg.start(self.now))

    def answer(self, status: int, extra: list[tuple[str, str]] = ()) -> list[Any]:
        resp = make_response(self.sent[-1], status, to_tag="reg", extra=list(extra))
        outs = self.layer.receive(parse_message(bytes(resp)), REGISTRAR, self.now)
        got: list[Any] = []
        for o in outs:
            got += self.reg.handle(o, self.now) if self.reg.owns(o) else [o]
        return self.keep(got)

    def until(self, t: float) -> list[Any]:
        got: list[Any] = []
        while True:
            times = [x for x in (self.reg.next_timeout(), self.layer.next_timeout()) if x is not None]
            if not times or min(times) > t:
                break
            self.now = min(times)
            for o in self.layer.handle_timeout(self.now):
                got += self.reg.handle(o, self.now) if self.reg.owns(o) else [o]
            got += self.reg.handle_timeout(self.now)
        self.now = t
        return self.keep(got)


def test_register_then_refresh_at_80_percent_of_the_granted_time() -> None:
    h = Harness()
    h.start()
    first = h.sent[-1]
    assert first.method == "REGISTER" and str(first.uri) == "sip:trunk.example"
    assert first.headers.get("Expires") == "3600" and first.headers.get("Contact") == CONTACT
    assert str(first.to.uri) == str(first.from_.uri) == "sip:alice@trunk.example" and first.from_.tag
    # The registrar grants less than asked, in our Contact's expires.
    assert h.answer(200, [("Contact", f"{CONTACT};expires=600")]) == [Registered(600)]
    assert h.reg.state is RegistrationState.REGISTERED
    h.until(479.9)
    assert len(h.sent) == 1
    h.until(480.0)
    refresh = h.sent[-1]
    assert len(h.sent) == 2 and refresh.call_id == first.call_id and refresh.cseq.number == 2
    assert refresh.from_.tag == first.from_.tag and refresh.top_via.branch != first.top_via.branch
    assert h.answer(200, [("Expires", "300")]) == [Registered(300)]  # no Contact expires: the header
    h.until(480.0 + 240.0)
    assert len(h.sent) == 3 and h.sent[-1].cseq.number == 3


def test_digest_challenge_then_registered_and_nonce_count_rises_on_refresh() -> None:
    h = Harness(Credentials("alice", "pw"))
    h.start()
    challenge = 'Digest realm="trunk.example", nonce="n1", qop="auth", algorithm=MD5'
    assert h.answer(401, [("WWW-Authenticate", challenge)]) == []
    again = h.sent[-1]
    assert again.cseq.number == 2 and 'nc=00000001' in (again.headers.get("Authorization") or "")
    assert h.answer(200, [("Expires", "100")]) == [Registered(100)]
    h.until(80.0)
    # The refresh goes out without credentials; the registrar challenges again with the same nonce (not stale):
    # the count rises, the same nonce is answered once more since this REGISTER had not used it.
    assert h.answer(401, [("WWW-Authenticate", challenge)]) == []
    assert "nc=00000002" in (h.sent[-1].headers.get("Authorization") or "") and h.sent[-1].cseq.number == 4


def test_wrong_password_fails_and_retries_with_back_off() -> None:
    h = Harness(Credentials("alice", "bad"))
    h.start()
    ch = [("WWW-Authenticate", 'Digest realm="r", nonce="n1"')]
    h.answer(401, ch)
    (failed,) = h.answer(401, ch)
    assert isinstance(failed, RegistrationFailed) and "credentials refused" in failed.reason and failed.retry_in == 30
    h.until(29.9)
    assert len(h.sent) == 2
    h.until(30.0)
    assert len(h.sent) == 3
    (failed,) = h.answer(403)
    assert failed.reason == "403 Forbidden" and failed.retry_in == 60


def test_423_asks_again_for_min_expires() -> None:
    h = Harness(expires=60)
    h.start()
    assert h.answer(423, [("Min-Expires", "1800")]) == []
    assert h.sent[-1].headers.get("Expires") == "1800"
    assert h.answer(200) == [Registered(1800)]


def test_no_response_is_a_failure_retried_later() -> None:
    h = Harness()
    h.start()
    out = h.until(40.0)
    assert [type(o) for o in out] == [RegistrationFailed] and out[0].reason == "no response from the registrar"
    assert h.reg.state is RegistrationState.FAILED and h.reg.next_timeout() == 32.0 + 30.0


def test_stop_removes_the_binding_and_nothing_is_retried() -> None:
    h = Harness()
    h.start()
    h.answer(200)
    h.keep(h.reg.stop(h.now))
    assert h.sent[-1].headers.get("Expires") == "0" and h.sent[-1].cseq.number == 2
    h.answer(200)
    assert h.reg.state is RegistrationState.IDLE and h.reg.next_timeout() is None


def test_removing_the_binding_answers_a_challenge_too() -> None:
    h = Harness(Credentials("alice", "pw"))
    h.start()
    h.answer(200)
    h.keep(h.reg.stop(h.now))
    assert h.answer(401, [("WWW-Authenticate", 'Digest realm="r", nonce="n9"')]) == []
    again = h.sent[-1]
    assert again.headers.get("Expires") == "0" and again.headers.get("Authorization") and again.cseq.number == 3
    assert h.answer(200) == [] and h.reg.state is RegistrationState.IDLE
