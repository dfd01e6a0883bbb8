"""Dialogs (RFC 3261 §12): ids, route sets, CSeq order, target refresh, in-dialog requests."""

from __future__ import annotations

import pytest

from tests.transports.sip.helpers import request, response
from voxline.transports.sip.dialog import Dialog, DialogId, DialogState
from voxline.transports.sip.errors import SipUsageError

RR = (("Record-Route", "<sip:p1.example.net;lr>, <sip:p2.example.net;lr>"),)


def test_uas_dialog_from_the_invite() -> None:
    d = Dialog.as_uas(request("INVITE", extra=RR), "ours")
    assert d.id == DialogId("call-1@127.0.0.1", "ours", "ftag")
    assert d.route_set == ["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"]  # request order at the UAS
    assert str(d.remote_target) == "sip:caller@127.0.0.1:5070" and d.remote_seq == 1 and d.local.tag == "ours"
    assert DialogId.of_request(request("BYE", to_tag="ours")) == d.id


def test_uac_dialog_reverses_the_route_set() -> None:
    invite = request("INVITE")
    ok = response(invite, 200, to_tag="theirs")
    ok.headers.add("Record-Route", "<sip:p1.example.net;lr>, <sip:p2.example.net;lr>")
    ok.headers.add("Contact", "<sip:agent@127.0.0.2:5080>")
    d = Dialog.as_uac(invite, ok)
    assert d.id == DialogId("call-1@127.0.0.1", "ftag", "theirs") and d.state is DialogState.CONFIRMED
    assert d.route_set == ["<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>"]
    assert str(d.remote_target) == "sip:agent@127.0.0.2:5080"


def test_cseq_order_and_target_refresh() -> None:
    d = Dialog.as_uas(request("INVITE", cseq=10), "ours")
    assert not d.in_order(request("BYE", cseq=9, to_tag="ours"))
    assert d.in_order(request("ACK", cseq=10, to_tag="ours"))
    assert d.in_order(request("INVITE", cseq=11, to_tag="ours", extra=(("Contact", "<sip:moved@127.0.0.3>"),)))
    assert d.remote_seq == 11
    d.refresh_target(request("INVITE", cseq=11, to_tag="ours"))  # one Contact (the helper's): taken
    assert str(d.remote_target) == "sip:caller@127.0.0.1:5070"


def test_loose_and_strict_routing() -> None:
    d = Dialog.as_uas(request("INVITE", extra=RR), "ours")
    bye = d.new_request("BYE", via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKb")
    assert str(bye.uri) == "sip:caller@127.0.0.1:5070" and bye.headers.get_all("Route")[0] == "<sip:p1.example.net;lr>"
    assert bye.cseq.number == 1 and bye.from_.tag == "ours" and bye.to.tag == "ftag"
    strict = Dialog.as_uas(request("INVITE", extra=(("Record-Route", "<sip:strict.example.net>"),)), "ours")
    req = strict.new_request("INFO", via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKc")
    assert str(req.uri) == "sip:strict.example.net"
    assert req.headers.get_all("Route") == ["<sip:caller@127.0.0.1:5070>"]  # the target goes last


def test_cseq_increments_and_a_terminated_dialog_refuses() -> None:
    d = Dialog.as_uas(request("INVITE"), "ours", local_seq=41)
    assert d.new_request("INFO", via="SIP/2.0/UDP h;branch=z9hG4bK1").cseq.number == 42
    assert d.new_request("BYE", via="SIP/2.0/UDP h;branch=z9hG4bK2").cseq.number == 43
    d.state = DialogState.TERMINATED
    with pytest.raises(SipUsageError):
        d.new_request("BYE", via="SIP/2.0/UDP h;branch=z9hG4bK3")


def test_two_contacts_make_no_dialog() -> None:
    with pytest.raises(SipUsageError):
        Dialog.as_uas(request("INVITE", extra=(("Contact", "<sip:x@127.0.0.1>"),)), "ours")


def test_an_rfc_2543_invite_without_contact_targets_its_from() -> None:
    invite = request("INVITE")
    invite.headers.remove("Contact")
    d = Dialog.as_uas(invite, "ours")
    assert d.remote_target == invite.from_.uri
