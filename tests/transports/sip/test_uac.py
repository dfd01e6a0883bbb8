"""The UAC core on a fake clock: calls placed, answered, rejected, challenged, cancelled, timed out."""

from __future__ import annotations

from typing import Any

import pytest

from voxline.codecs import PCMA, PCMU
from voxline.transports.sip.address import parse_name_addr
from voxline.transports.sip.calls import CallEnded, CallState
from voxline.transports.sip.digest import Credentials, answer, parse_challenge
from voxline.transports.sip.events import Send
from voxline.transports.sip.message import Request, Response, make_response, parse_message
from voxline.transports.sip.offer_answer import MediaPolicy
from voxline.transports.sip.offer_answer import answer as sdp_answer
from voxline.transports.sip.sdp import Connection, Origin, SessionDescription
from voxline.transports.sip.uac import CallAnswered, CallProgress, OutgoingEnded, OutgoingState, UacConfig
from voxline.transports.sip.uas import UasConfig, UasCore
from voxline.transports.sip.ua import UserAgent
from voxline.transports.sip.uri import parse_uri

PEER = ("127.0.0.1", 5080)
TARGET = "sip:bob@127.0.0.1:5080"


class Harness:
    def __init__(self, credentials: Credentials | None = None, ring_timeout: float = 60.0) -> None:
        uas = UasCore(UasConfig("127.0.0.1", 5060))
        self.ua = UserAgent(uas, UacConfig("127.0.0.1", 5060, credentials=credentials, ring_timeout=ring_timeout))
        self.now = 0.0
        self.sent: list[Request | Response] = []

    def dial(self, reliable: bool = False) -> Any:
        uri = parse_uri(TARGET)
        call, out = self.ua.uac.dial(uri, PEER, ("127.0.0.1", 20000), self.now,  # type: ignore[arg-type]
                                     reliable=reliable)
        self._keep(out)
        self.reliable = reliable
        return call

    def feed(self, msg: Request | Response) -> list[Any]:
        msg = parse_message(bytes(msg))  # as it would arrive
        out = list(self.ua.receive(msg, PEER, self.now, reliable=getattr(self, "reliable", False)))
        self._keep(out)
        return out

    def until(self, t: float) -> list[Any]:
        out: list[Any] = []
        while (d := self.ua.next_timeout()) is not None and d <= t:
            self.now = d
            got = self.ua.handle_timeout(d)
            self._keep(got)
            out += got
        self.now = t
        return out

    def _keep(self, out: list[Any]) -> None:
        self.sent += [o.message for o in out if isinstance(o, Send)]

    def last(self, method: str) -> Request:
        return [m for m in self.sent if isinstance(m, Request) and m.method == method][-1]


def reply(req: Request, status: int, *, sdp: bool = False, tag: str = "bobtag", extra: list[tuple[str, str]] = ()
          ) -> Response:
    resp = make_response(req, status, to_tag=tag if status > 100 else None, extra=list(extra))
    if 100 < status < 300:
        resp.headers.add("Contact", "<sip:bob@127.0.0.1:5080>")
    if sdp:
        offer = SessionDescription.parse(req.body)
        local, _ = sdp_answer(offer, Connection.of("127.0.0.1"), 40000, MediaPolicy(codecs=(PCMA,)),
                              origin=Origin("-", "1", 1, Connection.of("127.0.0.1")))
        resp.set_body(bytes(local), "application/sdp")
    return resp


def kinds(out: list[Any]) -> list[type]:
    return [type(o) for o in out if not isinstance(o, Send)]


def test_invite_offers_every_codec_then_180_200_ack_and_the_call_is_a_normal_one() -> None:
    h = Harness()
    call = h.dial()
    invite = h.last("INVITE")
    assert str(invite.uri) == TARGET and invite.cseq.number == 1 and invite.from_.tag and invite.to.tag is None
    offer = SessionDescription.parse(invite.body)
    assert [c.split()[1] for _, c in offer.media[0].attributes if _ == "rtpmap"][:4] == \
        ["PCMU/8000", "PCMA/8000", "G722/8000", "opus/48000/2"]
    assert offer.media[0].port == 20000 and invite.headers.get("Contact") == "<sip:voxline@127.0.0.1:5060>"
    assert kinds(h.feed(reply(invite, 100))) == []
    out = h.feed(reply(invite, 180))
    assert [(type(o), o.status) for o in out if isinstance(o, CallProgress)] == [(CallProgress, 180)]
    assert call.state is OutgoingState.RINGING
    out = h.feed(reply(invite, 200, sdp=True))
    (answered,) = [o for o in out if isinstance(o, CallAnswered)]
    ack = h.last("ACK")
    # §13.2.2.4: the ACK of a 2xx is the UA's own: a new branch, the remote target, the INVITE's CSeq number.
    assert ack.top_via.branch != invite.top_via.branch and str(ack.uri) == "sip:bob@127.0.0.1:5080"
    assert ack.cseq.number == 1 and ack.to.tag == "bobtag" and ack.from_.tag == invite.from_.tag
    assert answered.negotiated.codec == PCMA and answered.negotiated.remote == ("127.0.0.1", 40000)
    sip_call = answered.sip_call
    assert sip_call.state is CallState.CONFIRMED and h.ua.uas.calls[sip_call.id] is sip_call
    # A 2xx retransmission is ACKed again with the same ACK; nothing else happens.
    n = len(h.sent)
    assert kinds(h.feed(reply(invite, 200, sdp=True))) == []
    assert h.sent[n:] == [ack]
    # The callee hangs up: the UAS core's BYE handling ends it like any call.
    bye = Request(method="BYE", uri=parse_uri("sip:voxline@127.0.0.1:5060"))
    for name, value in [("Via", "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-bye"), ("From", str(ack.to)),
                        ("To", str(ack.from_)), ("Call-ID", invite.call_id), ("CSeq", "1 BYE"),
                        ("Max-Forwards", "70"), ("Content-Length", "0")]:
        bye.headers.add(name, value)
    out = h.feed(bye)
    assert [o.reason for o in out if isinstance(o, CallEnded)] == ["hangup: BYE"]
    assert h.sent[-1].status == 200 and not h.ua.uas.calls  # type: ignore[union-attr]


def test_hang_up_after_the_answer_sends_bye_in_the_dialog() -> None:
    h = Harness()
    h.dial()
    invite = h.last("INVITE")
    out = h.feed(reply(invite, 200, sdp=True))
    (answered,) = [o for o in out if isinstance(o, CallAnswered)]
    out = h.ua.uas.hang_up(answered.sip_call, h.now, "deleted")
    bye = [o.message for o in out if isinstance(o, Send)][0]
    assert bye.method == "BYE" and bye.cseq.number == 2 and bye.to.tag == "bobtag"  # type: ignore[union-attr]
    assert [o.reason for o in out if isinstance(o, CallEnded)] == ["deleted"]


@pytest.mark.parametrize("status, reason", [(486, "rejected: 486 Busy Here"), (404, "rejected: 404 Not Found"),
                                            (503, "rejected: 503 Service Unavailable"), (603, "rejected: 603 Decline")])
def test_errors_end_the_call_with_their_status_and_are_acked(status: int, reason: str) -> None:
    h = Harness()
    call = h.dial()
    invite = h.last("INVITE")
    h.feed(reply(invite, 180))
    out = h.feed(reply(invite, status))
    assert [(o.reason, o.status) for o in out if isinstance(o, OutgoingEnded)] == [(reason, status)]
    ack = h.last("ACK")  # the transaction's ACK: the INVITE's branch (§17.1.1.3)
    assert ack.top_via.branch == invite.top_via.branch and ack.to.tag == "bobtag"
    assert call.state is OutgoingState.ENDED and not h.ua.uac.calls


CHALLENGE = 'Digest realm="trunk", nonce="abc123", qop="auth", algorithm=SHA-256, opaque="op"'


@pytest.mark.parametrize("status, header, reply_header", [
    (401, "WWW-Authenticate", "Authorization"), (407, "Proxy-Authenticate", "Proxy-Authorization")])
def test_a_challenge_is_answered_once_with_a_new_transaction(status: int, header: str, reply_header: str) -> None:
    creds = Credentials("alice", "s3cret")
    h = Harness(creds)
    call = h.dial()
    first = h.last("INVITE")
    out = h.feed(reply(first, status, extra=[(header, CHALLENGE)]))
    assert kinds(out) == []
    second = h.last("INVITE")
    assert second is not first and second.cseq.number == 2 and second.top_via.branch != first.top_via.branch
    assert second.call_id == first.call_id and second.from_.tag == first.from_.tag and second.to.tag is None
    assert second.body == first.body
    value = second.headers.get(reply_header)
    assert value is not None
    fields = dict(p.split("=", 1) for p in value[len("Digest "):].split(", "))
    cnonce = fields["cnonce"].strip('"')
    assert fields["nc"] == "00000001" and fields["uri"] == f'"{TARGET}"'
    expected = answer(parse_challenge(CHALLENGE, proxy=status == 407), creds, "INVITE", TARGET, nc=1, cnonce=cnonce)
    assert value == expected
    out = h.feed(reply(second, 200, sdp=True))
    assert kinds(out) == [CallAnswered]
    ack = h.last("ACK")
    assert ack.cseq.number == 2 and ack.headers.get(reply_header) == value  # §13.2.2.4: the same credentials
    assert call.auth_tries == 1


def test_wrong_credentials_end_the_call_instead_of_looping() -> None:
    h = Harness(Credentials("alice", "wrong"))
    h.dial()
    h.feed(reply(h.last("INVITE"), 401, extra=[("WWW-Authenticate", CHALLENGE)]))
    out = h.feed(reply(h.last("INVITE"), 401, extra=[("WWW-Authenticate", CHALLENGE)]))
    (ended,) = [o for o in out if isinstance(o, OutgoingEnded)]
    assert ended.reason.startswith("authentication failed") and "credentials refused" in ended.reason
    assert len([m for m in h.sent if isinstance(m, Request) and m.method == "INVITE"]) == 2


def test_a_challenge_without_credentials_ends_the_call() -> None:
    h = Harness()
    h.dial()
    out = h.feed(reply(h.last("INVITE"), 407, extra=[("Proxy-Authenticate", CHALLENGE)]))
    (ended,) = [o for o in out if isinstance(o, OutgoingEnded)]
    assert ended.reason == "authentication failed: 407 Proxy Authentication Required: no credentials configured"


def test_cancel_while_ringing_then_487() -> None:
    h = Harness()
    call = h.dial()
    invite = h.last("INVITE")
    h.feed(reply(invite, 180))
    out = h.ua.uac.cancel(call, h.now, "deleted")
    cancel = [o.message for o in out if isinstance(o, Send)][0]
    # §9.1: the INVITE's Request-URI, Call-ID, From, To (no tag), CSeq number and top Via branch.
    assert cancel.method == "CANCEL" and cancel.uri == invite.uri and cancel.cseq.number == 1  # type: ignore[union-attr]
    assert cancel.top_via.branch == invite.top_via.branch and cancel.to.tag is None
    assert call.state is OutgoingState.CANCELLING
    assert kinds(h.feed(make_response(cancel, 200, to_tag="bobtag"))) == []  # type: ignore[arg-type]
    out = h.feed(reply(invite, 487))
    assert [(o.reason, o.status) for o in out if isinstance(o, OutgoingEnded)] == [("deleted", 487)]
    assert h.last("ACK").top_via.branch == invite.top_via.branch


def test_cancel_before_any_provisional_waits_for_one() -> None:
    h = Harness()
    call = h.dial()
    invite = h.last("INVITE")
    assert h.ua.uac.cancel(call, h.now) == []  # §9.1: no CANCEL before a provisional
    h.feed(reply(invite, 100))
    assert h.last("CANCEL").cseq.method == "CANCEL"


def test_a_2xx_crossing_the_cancel_is_acked_and_ended_with_bye() -> None:
    h = Harness()
    call = h.dial()
    invite = h.last("INVITE")
    h.feed(reply(invite, 180))
    h.ua.uac.cancel(call, h.now)
    out = h.feed(reply(invite, 200, sdp=True))
    assert kinds(out) == [OutgoingEnded]
    assert h.last("ACK").to.tag == "bobtag" and h.last("BYE").to.tag == "bobtag" and not h.ua.uas.calls


def test_no_response_at_all_is_timer_b_with_retransmissions() -> None:
    h = Harness()
    h.dial()
    out = h.until(40.0)
    (ended,) = [o for o in out if isinstance(o, OutgoingEnded)]
    assert ended.reason == "no response (timeout)"
    invites = [m for m in h.sent if isinstance(m, Request) and m.method == "INVITE"]
    assert len(invites) == 7  # sent at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5; Timer B at 32
    assert not h.ua.uac.calls and h.ua.next_timeout() is None


def test_ringing_past_the_ring_timeout_is_cancelled_as_no_answer() -> None:
    h = Harness(ring_timeout=20.0)
    call = h.dial()
    invite = h.last("INVITE")
    h.feed(reply(invite, 180))
    h.until(19.9)
    assert call.state is OutgoingState.RINGING
    h.until(20.0)
    assert h.last("CANCEL") and call.state is OutgoingState.CANCELLING
    out = h.feed(reply(invite, 487))
    assert [o.reason for o in out if isinstance(o, OutgoingEnded)] == ["no answer"]


def test_a_peer_that_never_answers_the_cancel_is_dropped_after_64_t1() -> None:
    h = Harness()
    call = h.dial()
    h.feed(reply(h.last("INVITE"), 180))
    h.ua.uac.cancel(call, h.now)
    out = h.until(33.0)
    assert [o.reason for o in out if isinstance(o, OutgoingEnded)] == ["cancelled"]
    assert not h.ua.uac.calls
    h.until(40.0)  # the CANCEL's own transaction ends by Timer F; the INVITE's was dropped with the call
    assert len(h.ua.layer) == 0 and h.ua.next_timeout() is None


def test_an_answer_without_a_codec_we_offered_is_acked_then_byed() -> None:
    h = Harness()
    h.dial()
    invite = h.last("INVITE")
    resp = reply(invite, 200)
    resp.set_body(b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                  b"m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n", "application/sdp")
    out = h.feed(resp)
    (ended,) = [o for o in out if isinstance(o, OutgoingEnded)]
    assert ended.reason.startswith("no usable answer") and h.last("BYE") and h.last("ACK")


def test_early_sdp_in_183_is_the_answer_when_the_200_has_none() -> None:
    h = Harness()
    h.dial()
    invite = h.last("INVITE")
    out = h.feed(reply(invite, 183, sdp=True))
    assert [o.status for o in out if isinstance(o, CallProgress)] == [183]
    out = h.feed(reply(invite, 200))
    (answered,) = [o for o in out if isinstance(o, CallAnswered)]
    assert answered.negotiated.codec == PCMA


def test_a_second_fork_answering_gets_ack_and_bye() -> None:
    h = Harness()
    h.dial()
    invite = h.last("INVITE")
    h.feed(reply(invite, 200, sdp=True))
    out = h.feed(reply(invite, 200, sdp=True, tag="other"))
    assert kinds(out) == []
    assert h.last("ACK").to.tag == "other" and h.last("BYE").to.tag == "other"
    assert len(h.ua.uas.calls) == 1


def test_the_from_and_to_can_be_given() -> None:
    h = Harness()
    call, _ = h.ua.uac.dial(parse_uri(TARGET), PEER, ("127.0.0.1", 20000), 0.0,  # type: ignore[arg-type]
                            from_=parse_name_addr('"Agent" <sip:agent@trunk.example>', "From"))
    assert call.invite.from_.display_name == "Agent" and str(call.invite.from_.uri) == "sip:agent@trunk.example"
    assert PCMU  # the registry's codecs are the ones offered


def test_a_call_over_tcp_names_tcp_in_every_via_and_contact_and_never_retransmits() -> None:
    h = Harness()
    call = h.dial(reliable=True)
    invite = h.last("INVITE")
    assert invite.headers.get("Via").startswith("SIP/2.0/TCP 127.0.0.1:5060;branch=")
    assert invite.headers.get("Contact") == "<sip:voxline@127.0.0.1:5060;transport=tcp>"
    assert call.tx.reliable and call.reliable
    assert h.until(10.0) == [] and len([m for m in h.sent if isinstance(m, Request)]) == 1  # no Timer A
    h.feed(reply(invite, 180))
    out = h.feed(reply(invite, 200, sdp=True))
    ack = [o for o in out if isinstance(o, Send) and isinstance(o.message, Request)][0]
    assert ack.message.method == "ACK" and ack.reliable is True
    assert ack.message.headers.get("Via").startswith("SIP/2.0/TCP ")
    answered = [o for o in out if isinstance(o, CallAnswered)][0]
    assert answered.sip_call.reliable
    bye_out = h.ua.uas.hang_up(answered.sip_call, h.now, "done")
    bye = [o for o in bye_out if isinstance(o, Send)][0]
    assert bye.message.method == "BYE" and bye.message.headers.get("Via").startswith("SIP/2.0/TCP ")
    assert bye.transaction is not None and bye.transaction.reliable
