"""Blind transfer on a fake clock: REFER in the dialog, 202, NOTIFY sipfrag progress and result, failures."""

from __future__ import annotations

from typing import Any

import pytest

from tests.transports.sip.test_uac import PEER, Harness, reply
from voxline.transports.sip.errors import SipParseError
from voxline.transports.sip.message import Request, make_response
from voxline.transports.sip.refer import TransferState, TransferUpdate, parse_sipfrag
from voxline.transports.sip.uac import CallAnswered
from voxline.transports.sip.uri import parse_uri


def answered(h: Harness) -> Any:
    h.dial()
    out = h.feed(reply(h.last("INVITE"), 200, sdp=True))
    return next(o for o in out if isinstance(o, CallAnswered)).sip_call


def start(h: Harness, call: Any) -> tuple[Any, Request]:
    t, out = h.ua.transfers.start(call, parse_uri("sip:carol@127.0.0.1:5099"), PEER, h.now,  # type: ignore[arg-type]
                                  contact="<sip:voxline@127.0.0.1:5060>")
    h._keep(out)
    return t, h.last("REFER")


def notify(refer: Request, frag: bytes, cseq: int, state: str = "active;expires=60") -> Request:
    """The NOTIFY the peer sends in the dialog (its From is the REFER's To)."""
    n = Request(method="NOTIFY", uri=parse_uri("sip:voxline@127.0.0.1:5060"))
    for name, value in [("Via", f"SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-n{cseq}"), ("Max-Forwards", "70"),
                        ("From", refer.headers.get("To") or ""), ("To", refer.headers.get("From") or ""),
                        ("Call-ID", refer.call_id), ("CSeq", f"{cseq} NOTIFY"), ("Event", "refer"),
                        ("Subscription-State", state), ("Contact", "<sip:bob@127.0.0.1:5080>")]:
        n.headers.add(name, value)
    n.set_body(frag, "message/sipfrag;version=2.0")
    return n


def updates(out: list[Any]) -> list[tuple[int, bool, bool]]:
    return [(o.status, o.final, o.ok) for o in out if isinstance(o, TransferUpdate)]


def test_refer_202_notify_100_then_200_is_a_transfer_done() -> None:
    h = Harness()
    call = answered(h)
    t, refer = start(h, call)
    assert refer.headers.get("Refer-To") == "<sip:carol@127.0.0.1:5099>" and refer.to.tag == "bobtag"
    assert refer.cseq.number == 2 and refer.headers.get("Contact")
    assert updates(h.feed(make_response(refer, 202))) == [(202, False, False)]
    assert t.state is TransferState.ACCEPTED
    out = h.feed(notify(refer, b"SIP/2.0 100 Trying\r\n", 1))
    assert updates(out) == [(100, False, False)] and h.sent[-1].status == 200  # type: ignore[union-attr]
    out = h.feed(notify(refer, b"SIP/2.0 200 OK\r\n", 2, "terminated;reason=noresource"))
    assert updates(out) == [(200, True, True)] and t.state is TransferState.DONE and not h.ua.transfers.active


def test_refused_refer_and_failed_new_call_leave_the_call_up() -> None:
    h = Harness()
    call = answered(h)
    _, refer = start(h, call)
    out = h.feed(make_response(refer, 603))
    assert updates(out) == [(603, True, False)]
    t, refer = start(h, call)  # one at a time, and another may follow a failed one
    h.feed(make_response(refer, 202))
    out = h.feed(notify(refer, b"SIP/2.0 486 Busy Here\r\n", 1, "terminated"))
    assert updates(out) == [(486, True, False)] and t.reason == "486 Busy Here"
    assert call.id in h.ua.uas.calls


def test_one_transfer_at_a_time_and_a_deadline_for_the_result() -> None:
    h = Harness()
    call = answered(h)
    t, refer = start(h, call)
    with pytest.raises(ValueError, match="already under way"):
        start(h, call)
    h.feed(make_response(refer, 202))
    out = h.until(h.now + 121.0)
    assert updates(out) == [(0, True, False)] and "no final NOTIFY" in t.reason


def test_bad_notifies_are_answered_and_change_nothing() -> None:
    h = Harness()
    call = answered(h)
    t, refer = start(h, call)
    h.feed(make_response(refer, 202))
    bad = notify(refer, b"hello", 1)
    assert updates(h.feed(bad)) == [] and h.sent[-1].status == 400  # type: ignore[union-attr]
    stranger = notify(refer, b"SIP/2.0 200 OK\r\n", 2)
    stranger.headers.set("Call-ID", "other@x")
    assert updates(h.feed(stranger)) == [] and h.sent[-1].status == 481  # type: ignore[union-attr]
    assert t.state is TransferState.ACCEPTED


def test_a_challenged_refer_is_sent_again_with_credentials() -> None:
    from voxline.transports.sip.digest import Credentials
    h = Harness(Credentials("alice", "pw"))
    call = answered(h)
    _, refer = start(h, call)
    h.feed(make_response(refer, 407, extra=[("Proxy-Authenticate", 'Digest realm="r", nonce="n"')]))
    again = h.last("REFER")
    assert again.cseq.number == 3 and again.headers.get("Proxy-Authorization") and call.dialog.local_seq == 3
    assert updates(h.feed(make_response(again, 202))) == [(202, False, False)]


@pytest.mark.parametrize("body, want", [(b"SIP/2.0 180 Ringing\r\n", (180, "Ringing")),
                                        (b"SIP/2.0 200 OK", (200, "OK")), (b"SIP/2.0 503\r\nVia: x\r\n", (503, ""))])
def test_sipfrag(body: bytes, want: tuple[int, str]) -> None:
    assert parse_sipfrag(body) == want


@pytest.mark.parametrize("body", [b"", b"SIP/2.0 99 Low", b"HTTP/1.1 200 OK", b"INVITE sip:a@b SIP/2.0"])
def test_bad_sipfrag(body: bytes) -> None:
    with pytest.raises(SipParseError, match="sipfrag"):
        parse_sipfrag(body)




def test_an_incoming_call_is_transferred_the_same_way() -> None:
    from tests.transports.sip.helpers import request
    from tests.transports.sip.test_uas import OFFER
    from voxline.transports.sip.calls import CallConfirmed, IncomingCall
    from voxline.transports.sip.message import parse_message

    h = Harness()
    out = h.ua.receive(request("INVITE", body=OFFER), ("127.0.0.1", 5070), 0.0)
    (incoming,) = [o for o in out if isinstance(o, IncomingCall)]
    call = incoming.call
    core = h.ua.uas
    core.negotiate(call, "127.0.0.1", 20000)
    ok = [o.message for o in core.accept(call, 0.0) if hasattr(o, "message")][0]
    out = h.ua.receive(request("ACK", branch="z9hG4bK-ack", to_tag=ok.to.tag), ("127.0.0.1", 5070), 0.0)
    assert [type(o) for o in out] == [CallConfirmed]
    t, sent = h.ua.transfers.start(call, parse_uri("sip:carol@127.0.0.1:5099"), core.next_hop(call), 0.0,
                                   contact=core.config.contact)
    refer = [o.message for o in sent if hasattr(o, "message")][0]
    # In the caller's dialog: to its Contact, our tag in From, its tag in To, our first CSeq.
    assert str(refer.uri) == "sip:caller@127.0.0.1:5070" and refer.from_.tag == ok.to.tag
    assert refer.to.tag == "ftag" and refer.cseq.number == 1 and sent[0].dest == ("127.0.0.1", 5070)
    h.ua.receive(parse_message(bytes(make_response(refer, 202))), ("127.0.0.1", 5070), 0.0)
    n = notify(refer, b"SIP/2.0 200 OK\r\n", 2, "terminated")
    out = h.ua.receive(parse_message(bytes(n)), ("127.0.0.1", 5070), 0.0)
    assert updates(out) == [(200, True, True)] and t.state is TransferState.DONE
