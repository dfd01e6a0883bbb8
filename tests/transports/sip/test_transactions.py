"""RFC 3261 §17 transactions on a fake clock: every retransmission, every timeout.

Time is a number passed in; nothing sleeps. T1 = 0.5 s, T2 = 4 s, T4 = 5 s.
"""

from __future__ import annotations

import pytest

from tests.transports.sip.helpers import PEER, request, response
from voxline.transports.sip.client import ClientInviteTransaction, ClientNonInviteTransaction, build_ack
from voxline.transports.sip.errors import SipUsageError
from voxline.transports.sip.events import (
    RequestReceived,
    ResponseReceived,
    Send,
    TransactionTimeout,
    TransportError,
)
from voxline.transports.sip.server import ServerInviteTransaction, ServerNonInviteTransaction
from voxline.transports.sip.timers import TimerConfig
from voxline.transports.sip.transaction import State, Transaction

T = TimerConfig()


def run(tx: Transaction, until: float) -> list[tuple[float, object]]:
    """Drive ``tx`` through its timers up to ``until``: (time, output) in order."""
    out = []
    while (t := tx.next_timeout()) is not None and t <= until:
        out += [(t, o) for o in tx.handle_timeout(t)]
    return out


def sends(events: list[tuple[float, object]]) -> list[float]:
    return [t for t, o in events if isinstance(o, Send)]


# -- INVITE client ------------------------------------------------------------------


def test_invite_client_timer_a_doubles_without_cap_until_timer_b() -> None:
    tx = ClientInviteTransaction(request("INVITE"), PEER, reliable=False)
    first = tx.start(0.0)
    assert [type(o) for o in first] == [Send] and first[0].message is tx.request and first[0].dest == PEER
    events = run(tx, 100.0)
    # Retransmissions at T1, 3T1, 7T1, ... (intervals T1, 2T1, 4T1, 8T1, 16T1, 32T1), all before B = 64*T1.
    assert sends(events) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert tx.retransmissions == 6
    assert [(t, type(o)) for t, o in events if not isinstance(o, Send)] == [(32.0, TransactionTimeout)]
    assert events[-1][1].timer == "B" and tx.terminated and tx.next_timeout() is None


def test_invite_client_reliable_never_retransmits_and_times_out_by_b() -> None:
    tx = ClientInviteTransaction(request("INVITE"), PEER, reliable=True)
    tx.start(0.0)
    events = run(tx, 100.0)
    assert sends(events) == [] and [(t, o.timer) for t, o in events] == [(32.0, "B")]


def test_invite_client_provisional_stops_retransmission_and_timer_b() -> None:
    tx = ClientInviteTransaction(request("INVITE"), PEER, reliable=False)
    tx.start(0.0)
    assert sends(run(tx, 0.6)) == [0.6 - 0.1]
    out = tx.receive_response(response(tx.request, 180), 1.0)
    assert [type(o) for o in out] == [ResponseReceived] and tx.state is State.PROCEEDING
    assert tx.next_timeout() is None  # no A, no B: the TU decides how long to ring


def test_invite_client_non_2xx_acks_absorbs_retransmissions_and_ends_after_d() -> None:
    invite = request("INVITE", extra=(("Route", "<sip:proxy@127.0.0.1;lr>"),))
    tx = ClientInviteTransaction(invite, PEER, reliable=False)
    tx.start(0.0)
    busy = response(invite, 486)
    out = tx.receive_response(busy, 0.2)
    ack = out[0]
    assert isinstance(ack, Send) and ack.message.method == "ACK" and isinstance(out[1], ResponseReceived)
    m = ack.message
    assert str(m.top_via) == str(invite.top_via) and len(m.vias) == 1  # same branch: this transaction's
    assert m.cseq.number == 1 and m.cseq.method == "ACK" and m.to.tag == "ttag" and m.from_.tag == "ftag"
    assert m.headers.get_all("Route") == ["<sip:proxy@127.0.0.1;lr>"] and m.uri == invite.uri
    assert tx.state is State.COMPLETED
    # A retransmitted 486 is ACKed again and not shown to the TU.
    again = tx.receive_response(busy, 5.0)
    assert [type(o) for o in again] == [Send] and again[0].message is m and tx.absorbed == 1
    # Timer D: 32 s over UDP.
    assert tx.next_timeout() == pytest.approx(32.2)
    assert run(tx, 100.0) == [] and tx.terminated


def test_invite_client_non_2xx_over_tcp_ends_at_once() -> None:
    tx = ClientInviteTransaction(request("INVITE"), PEER, reliable=True)
    tx.start(0.0)
    out = tx.receive_response(response(tx.request, 603), 0.1)
    assert [type(o) for o in out] == [Send, ResponseReceived] and tx.terminated  # D = 0


def test_invite_client_2xx_goes_to_accepted_and_passes_every_2xx_up() -> None:
    tx = ClientInviteTransaction(request("INVITE"), PEER, reliable=False)
    tx.start(0.0)
    ok = response(tx.request, 200)
    assert [type(o) for o in tx.receive_response(ok, 0.1)] == [ResponseReceived]
    assert tx.state is State.ACCEPTED  # no ACK from here: the 2xx's ACK is the TU's
    assert [type(o) for o in tx.receive_response(ok, 0.6)] == [ResponseReceived]  # retransmitted 2xx: up again
    assert tx.receive_response(response(tx.request, 500), 0.7) == []
    assert tx.next_timeout() == pytest.approx(0.1 + 64 * 0.5)  # Timer M
    assert run(tx, 100.0) == [] and tx.terminated


def test_invite_client_transport_error() -> None:
    tx = ClientInviteTransaction(request("INVITE"), PEER, reliable=False)
    tx.start(0.0)
    out = tx.transport_error()
    assert [type(o) for o in out] == [TransportError] and out[0].transaction is tx and tx.terminated
    assert tx.transport_error() == [] and tx.next_timeout() is None


def test_build_ack_uses_only_the_top_via() -> None:
    invite = request("INVITE")
    invite.headers.add("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKbelow")
    ack = build_ack(invite, response(invite, 404))
    assert [v.branch for v in ack.vias] == ["z9hG4bK-1"]


# -- non-INVITE client --------------------------------------------------------------


def test_non_invite_client_timer_e_doubles_to_t2_then_timer_f() -> None:
    tx = ClientNonInviteTransaction(request("OPTIONS"), PEER, reliable=False)
    tx.start(0.0)
    events = run(tx, 100.0)
    # Intervals 0.5, 1, 2, 4, 4, 4, ... (capped at T2) until F = 32 s.
    assert sends(events) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [(t, o.timer) for t, o in events if isinstance(o, TransactionTimeout)] == [(32.0, "F")]
    assert tx.terminated


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    tx = ClientNonInviteTransaction(request("BYE"), PEER, reliable=False)
    tx.start(0.0)
    assert sends(run(tx, 0.5)) == [0.5]  # next due at 1.5
    assert [type(o) for o in tx.receive_response(response(tx.request, 100), 0.7)] == [ResponseReceived]
    assert tx.state is State.PROCEEDING
    events = run(tx, 40.0)
    # The pending E fires at 1.5, and from then on every T2 until F.
    assert sends(events) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert [o.timer for _, o in events if isinstance(o, TransactionTimeout)] == ["F"]


def test_non_invite_client_final_then_timer_k_absorbs_retransmissions() -> None:
    tx = ClientNonInviteTransaction(request("BYE"), PEER, reliable=False)
    tx.start(0.0)
    ok = response(tx.request, 200)
    assert [type(o) for o in tx.receive_response(ok, 0.1)] == [ResponseReceived]
    assert tx.state is State.COMPLETED and tx.next_timeout() == pytest.approx(5.1)  # K = T4
    assert tx.receive_response(ok, 1.0) == [] and tx.absorbed == 1
    assert run(tx, 10.0) == [] and tx.terminated


def test_non_invite_client_reliable_has_no_e_and_k_is_zero() -> None:
    tx = ClientNonInviteTransaction(request("BYE"), PEER, reliable=True)
    tx.start(0.0)
    assert tx.next_timeout() == 32.0  # F only
    tx.receive_response(response(tx.request, 200), 0.1)
    assert tx.terminated


def test_non_invite_client_transport_error() -> None:
    tx = ClientNonInviteTransaction(request("BYE"), PEER, reliable=False)
    tx.start(0.0)
    assert [type(o) for o in tx.transport_error()] == [TransportError] and tx.terminated


# -- INVITE server ------------------------------------------------------------------


def test_invite_server_sends_100_and_answers_retransmissions_with_the_last_provisional() -> None:
    invite = request("INVITE")
    tx = ServerInviteTransaction(invite, PEER, reliable=False)
    trying = tx.start(0.0)
    assert trying[0].message.status == 100 and trying[0].dest == PEER and trying[0].message.to.tag is None
    again = tx.receive_request(invite, PEER, 0.5)
    assert again[0].message.status == 100 and tx.absorbed == 1
    tx.send_response(response(invite, 180), 0.6)
    assert tx.receive_request(invite, PEER, 1.0)[0].message.status == 180 and tx.absorbed == 2


def test_invite_server_non_2xx_timer_g_until_timer_h() -> None:
    invite = request("INVITE")
    tx = ServerInviteTransaction(invite, PEER, reliable=False)
    tx.start(0.0)
    tx.send_response(response(invite, 486), 0.0)
    assert tx.state is State.COMPLETED
    events = run(tx, 100.0)
    # G: T1, 2T1, 4T1, then capped at T2 = 4 s, until H = 64*T1.
    assert sends(events) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [(t, o.timer) for t, o in events if isinstance(o, TransactionTimeout)] == [(32.0, "H")]
    assert all(o.message.status == 486 for _, o in events if isinstance(o, Send))


def test_invite_server_ack_confirms_then_timer_i_absorbs_acks() -> None:
    invite = request("INVITE")
    tx = ServerInviteTransaction(invite, PEER, reliable=False)
    tx.start(0.0)
    tx.send_response(response(invite, 404), 0.0)
    assert tx.receive_request(invite, PEER, 0.2)[0].message.status == 404  # retransmitted INVITE
    ack = request("ACK", to_tag="ttag")
    assert tx.receive_request(ack, PEER, 0.3) == []
    assert tx.state is State.CONFIRMED and tx.next_timeout() == pytest.approx(5.3)  # I = T4
    assert tx.receive_request(ack, PEER, 1.0) == [] and tx.absorbed == 3
    assert run(tx, 10.0) == [] and tx.terminated


def test_invite_server_reliable_has_no_g_and_i_is_zero() -> None:
    invite = request("INVITE")
    tx = ServerInviteTransaction(invite, PEER, reliable=True)
    tx.start(0.0)
    tx.send_response(response(invite, 486), 0.0)
    assert tx.next_timeout() == 32.0  # H only
    tx.receive_request(request("ACK", to_tag="ttag"), PEER, 0.1)
    assert tx.terminated


def test_invite_server_2xx_accepted_absorbs_invites_passes_ack_and_2xx_resends() -> None:
    invite = request("INVITE")
    tx = ServerInviteTransaction(invite, PEER, reliable=False)
    tx.start(0.0)
    ok = response(invite, 200)
    assert tx.send_response(ok, 0.1)[0].message is ok and tx.state is State.ACCEPTED
    assert tx.receive_request(invite, PEER, 0.4) == [] and tx.absorbed == 1  # no 200 from here
    assert tx.send_response(ok, 0.6)[0].message is ok  # the TU's retransmission goes out
    ack = request("ACK", to_tag="ttag")
    out = tx.receive_request(ack, PEER, 0.7)
    assert [type(o) for o in out] == [RequestReceived] and out[0].request is ack and out[0].transaction is None
    assert tx.next_timeout() == pytest.approx(0.1 + 32.0)  # Timer L
    assert run(tx, 100.0) == [] and tx.terminated  # the transaction never re-sends the 2xx itself


def test_invite_server_refuses_what_the_state_forbids() -> None:
    invite = request("INVITE")
    tx = ServerInviteTransaction(invite, PEER, reliable=False)
    tx.send_response(response(invite, 486), 0.0)
    with pytest.raises(SipUsageError, match="state completed"):
        tx.send_response(response(invite, 200), 0.1)
    with pytest.raises(SipUsageError, match="response for CSeq 1 BYE"):
        ServerInviteTransaction(invite, PEER, reliable=False).send_response(response(request("BYE"), 200), 0.0)


def test_invite_server_transport_error() -> None:
    tx = ServerInviteTransaction(request("INVITE"), PEER, reliable=False)
    tx.send_response(response(tx.request, 500), 0.0)
    assert [type(o) for o in tx.transport_error()] == [TransportError] and tx.terminated
    assert tx.next_timeout() is None


# -- non-INVITE server --------------------------------------------------------------


def test_non_invite_server_absorbs_in_trying_and_answers_after() -> None:
    bye = request("BYE", to_tag="ttag")
    tx = ServerNonInviteTransaction(bye, PEER, reliable=False)
    assert tx.start(0.0) == []
    assert tx.receive_request(bye, PEER, 0.1) == [] and tx.absorbed == 1
    tx.send_response(response(bye, 100), 0.2)
    assert tx.receive_request(bye, PEER, 0.3)[0].message.status == 100
    tx.send_response(response(bye, 200), 0.4)
    assert tx.state is State.COMPLETED and tx.next_timeout() == pytest.approx(32.4)  # J = 64*T1
    assert tx.receive_request(bye, PEER, 1.0)[0].message.status == 200 and tx.absorbed == 3
    with pytest.raises(SipUsageError):
        tx.send_response(response(bye, 200), 1.1)
    assert run(tx, 100.0) == [] and tx.terminated


def test_non_invite_server_reliable_j_is_zero() -> None:
    bye = request("BYE", to_tag="ttag")
    tx = ServerNonInviteTransaction(bye, PEER, reliable=True)
    tx.send_response(response(bye, 200), 0.0)
    assert tx.terminated


def test_timers_scale_with_t1() -> None:
    fast = TimerConfig(t1=0.1, t2=0.4, t4=1.0)
    tx = ClientNonInviteTransaction(request("OPTIONS"), PEER, reliable=False, timers=fast)
    tx.start(0.0)
    events = run(tx, 10.0)
    assert [round(t, 3) for t in sends(events)] == [0.1, 0.3, 0.7, 1.1, 1.5, 1.9, 2.3, 2.7, 3.1, 3.5, 3.9, 4.3,
                                                    4.7, 5.1, 5.5, 5.9, 6.3]
    assert [round(t, 3) for t, o in events if isinstance(o, TransactionTimeout)] == [6.4]
