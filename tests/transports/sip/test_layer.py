"""The transaction layer: matching (§17.1.3, §17.2.3), CANCEL, ACKs, rport, bounds."""

from __future__ import annotations

from tests.transports.sip.helpers import PEER, request, response
from voxline.transports.sip.events import RequestReceived, ResponseReceived, Send, StrayDropped, TransactionTimeout
from voxline.transports.sip.layer import TransactionLayer
from voxline.transports.sip.message import parse_message
from voxline.transports.sip.server import ServerInviteTransaction

NATTED = ("203.0.113.7", 40000)  # where the request really came from


def test_new_invite_gets_100_and_reaches_the_tu_retransmission_is_absorbed() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    out = layer.receive(invite, PEER, 0.0)
    assert [type(o) for o in out] == [Send, RequestReceived]
    assert out[0].message.status == 100 and out[0].dest == PEER
    tx = out[1].transaction
    assert isinstance(tx, ServerInviteTransaction) and out[1].source == PEER
    again = layer.receive(request("INVITE"), PEER, 0.5)
    assert [type(o) for o in again] == [Send] and again[0].message.status == 100 and len(layer) == 1


def test_responses_go_where_the_request_came_from_with_received_and_rport() -> None:
    layer = TransactionLayer()
    out = layer.receive(request("OPTIONS", sent_by="10.0.0.5:5060"), NATTED, 0.0)
    ev = out[-1]
    assert isinstance(ev, RequestReceived)
    via = ev.request.top_via
    assert via.received == "203.0.113.7" and via.rport == 40000
    sent = layer.respond(ev.transaction, response(ev.request, 200), 0.1)
    assert sent[0].dest == NATTED
    assert sent[0].message.top_via.rport == 40000  # the response carries what we saw


def test_same_branch_other_sent_by_is_another_transaction() -> None:
    layer = TransactionLayer()
    layer.receive(request("OPTIONS"), PEER, 0.0)
    out = layer.receive(request("OPTIONS", sent_by="127.0.0.2:5070"), ("127.0.0.2", 5070), 0.0)
    assert isinstance(out[-1], RequestReceived) and len(layer) == 2


def test_cancel_names_the_invite_it_cancels_and_is_its_own_transaction() -> None:
    layer = TransactionLayer()
    inv = layer.receive(request("INVITE"), PEER, 0.0)[-1]
    out = layer.receive(request("CANCEL"), PEER, 1.0)
    ev = out[-1]
    assert isinstance(ev, RequestReceived) and ev.cancels is inv.transaction
    assert ev.transaction is not inv.transaction and len(layer) == 2
    other = layer.receive(request("CANCEL", branch="z9hG4bK-nothing"), PEER, 1.0)[-1]
    assert other.cancels is None


def test_ack_of_a_non_2xx_is_absorbed_ack_of_a_2xx_goes_to_the_tu() -> None:
    layer = TransactionLayer()
    tx = layer.receive(request("INVITE"), PEER, 0.0)[-1].transaction
    layer.respond(tx, response(tx.request, 486), 0.1)
    assert layer.receive(request("ACK", to_tag="ttag"), PEER, 0.2) == []
    # An ACK of a 2xx has a branch of its own: no transaction, straight to the TU.
    out = layer.receive(request("ACK", branch="z9hG4bK-ack2xx", to_tag="ttag"), PEER, 0.3)
    assert [type(o) for o in out] == [RequestReceived] and out[0].transaction is None


def test_rfc2543_requests_match_without_a_branch() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="1")  # not an RFC 3261 branch
    tx = layer.receive(invite, PEER, 0.0)[-1].transaction
    layer.respond(tx, response(invite, 404), 0.1)
    assert layer.receive(request("INVITE", branch="1"), PEER, 0.2)[0].message.status == 404
    assert layer.receive(request("ACK", branch="1", to_tag="ttag"), PEER, 0.3) == []
    assert tx.absorbed == 2


def test_client_responses_match_by_branch_and_method() -> None:
    layer = TransactionLayer()
    bye = request("BYE", branch="z9hG4bK-out", to_tag="ttag")
    tx, out = layer.request(bye, PEER, 0.0)
    assert out[0].message is bye
    got = layer.receive(response(bye, 200), PEER, 0.1)
    assert [type(o) for o in got] == [ResponseReceived] and got[0].transaction is tx
    # Same branch, other method: not ours.
    stray = layer.receive(response(request("INFO", branch="z9hG4bK-out"), 200), PEER, 0.2)
    assert [type(o) for o in stray] == [StrayDropped] and layer.counts["stray"] == 1


def test_late_2xx_to_invite_goes_to_the_tu_others_are_dropped() -> None:
    layer = TransactionLayer()
    out = layer.receive(response(request("INVITE", branch="z9hG4bK-gone"), 200), PEER, 0.0)
    assert [type(o) for o in out] == [ResponseReceived] and out[0].transaction is None
    assert isinstance(layer.receive(response(request("INVITE", branch="z9hG4bK-gone"), 486), PEER, 0.0)[0],
                      StrayDropped)


def test_a_response_with_two_vias_is_dropped() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", branch="z9hG4bK-two")
    layer.request(req, PEER, 0.0)
    resp = response(req, 200)
    resp.headers.add("Via", "SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKx")
    out = layer.receive(resp, PEER, 0.1)
    assert isinstance(out[0], StrayDropped) and "Via" in out[0].reason


def test_unmatchable_request_is_answered_400_without_state() -> None:
    layer = TransactionLayer()
    raw = (b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP ;branch=z9hG4bKq\r\n"
           b"From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: x\r\nCSeq: one OPTIONS\r\n"
           b"Content-Length: 0\r\n\r\n")
    msg = parse_message(raw, check=False)
    out = layer.receive(msg, PEER, 0.0)
    assert [type(o) for o in out] == [Send] and out[0].message.status == 400 and out[0].dest == PEER
    assert layer.counts["malformed"] == 1 and len(layer) == 0
    # A bad CSeq does not stop matching on the branch: the UA core answers it (400) in its transaction.
    ok_via = parse_message(raw.replace(b"UDP ;", b"UDP 127.0.0.1:5070;"), check=False)
    assert isinstance(layer.receive(ok_via, PEER, 0.0)[-1], RequestReceived) and len(layer) == 1


def test_past_the_bound_new_requests_get_503_without_state() -> None:
    layer = TransactionLayer(max_transactions=2)
    layer.receive(request("OPTIONS", branch="z9hG4bK-a"), PEER, 0.0)
    layer.receive(request("OPTIONS", branch="z9hG4bK-b"), PEER, 0.0)
    out = layer.receive(request("OPTIONS", branch="z9hG4bK-c"), PEER, 0.0)
    assert [type(o) for o in out] == [Send] and out[0].message.status == 503
    assert out[0].message.headers.get("Retry-After") == "5" and len(layer) == 2 and layer.counts["overload"] == 1


def test_timers_run_through_the_layer_and_ended_transactions_are_reaped() -> None:
    layer = TransactionLayer()
    layer.request(request("OPTIONS", branch="z9hG4bK-t"), PEER, 0.0)
    tx = layer.receive(request("BYE", to_tag="ttag"), PEER, 0.0)[-1].transaction
    layer.respond(tx, response(tx.request, 200), 0.0)
    seen = []
    while (t := layer.next_timeout()) is not None:
        seen += layer.handle_timeout(t)
    timeouts = [o for o in seen if isinstance(o, TransactionTimeout)]
    assert [o.timer for o in timeouts] == ["F"] and len(layer) == 0
    assert sum(isinstance(o, Send) for o in seen) == 10  # the OPTIONS' retransmissions


def test_transport_error_ends_and_reaps() -> None:
    layer = TransactionLayer()
    tx, _ = layer.request(request("INVITE", branch="z9hG4bK-e"), PEER, 0.0)
    assert layer.transport_error(tx)[0].transaction is tx and len(layer) == 0
