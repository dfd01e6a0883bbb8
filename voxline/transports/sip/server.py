"""Server transactions (RFC 3261 §17.2), as state machines over messages and time.

INVITE server (§17.2.1, with RFC 6026's Accepted state):

    Proceeding --300-699--> Completed --ACK--> Confirmed --Timer I--> Terminated
      | 100 Trying sent at once          Timer G: re-send the final, doubling to T2
      | INVITE retransmission:           Timer H (64*T1): no ACK came -> timeout
      |   re-send the last provisional   INVITE retransmission: re-send the final
      +--2xx--> Accepted --Timer L--> Terminated
                INVITE retransmissions absorbed; the TU's 2xx retransmissions sent;
                an ACK that matches is the TU's (it is not absorbed)

The 2xx is reliable end to end, not hop by hop: the TU (``dialog``) re-sends it
until its ACK comes (§13.3.1.4), as RFC 6026 leaves it.

Non-INVITE server (§17.2.2):

    Trying --1xx--> Proceeding --final--> Completed --Timer J--> Terminated
      retransmitted requests: absorbed in Trying, answered with the last response after

Over a reliable transport G is not started and I and J are zero.
"""

from __future__ import annotations

from .errors import SipUsageError
from .events import Address, Output, RequestReceived, Send, TransactionTimeout
from .message import Request, Response, make_response
from .timers import TimerConfig
from .transaction import State, Transaction

__all__ = ["ServerInviteTransaction", "ServerNonInviteTransaction", "ServerTransaction"]


def _absorb(tx: Transaction, *, answer: bool) -> list[Output]:
    """A retransmitted request: taken here, answered with the last response if ``answer``."""
    tx.absorbed += 1
    if answer and tx.last_response is not None:
        tx.retransmissions += 1
        return [Send(tx.last_response, tx.peer, tx)]
    return []


def _check(tx: Transaction, resp: Response, allowed: tuple[State, ...]) -> None:
    # The response copies the request's CSeq (even one whose method is wrong: 400).
    if resp.headers.get("CSeq") != tx.request.headers.get("CSeq"):
        raise SipUsageError(f"response for CSeq {resp.headers.get('CSeq')} on a {tx.method} transaction")
    if tx.state not in allowed:
        raise SipUsageError(f"response {resp.status} on a {tx.method} transaction in state {tx.state.value}")


class ServerInviteTransaction(Transaction):
    def __init__(self, request: Request, source: Address, *, reliable: bool, timers: TimerConfig = TimerConfig()):
        super().__init__(request, source, reliable=reliable, timers=timers, state=State.PROCEEDING)

    def start(self, now: float, *, send_trying: bool = True) -> list[Output]:
        """§17.2.1: a 100 Trying at once, so the client stops retransmitting."""
        if not send_trying:
            return []
        trying = make_response(self.request, 100)
        self.last_response = trying
        return [Send(trying, self.peer, self)]

    def receive_request(self, req: Request, source: Address, now: float) -> list[Output]:
        """A retransmitted INVITE, or an ACK, matched to this transaction."""
        if req.method == "ACK":
            if self.state is State.ACCEPTED:
                return [RequestReceived(req, None, source)]  # RFC 6026 §8.7: the TU's ACK
            if self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                self._deadlines.cancel("G", "H")
                self._linger("I", self.timers.i(self.reliable), now)
            self.absorbed += 1
            return []
        return _absorb(self, answer=self.state in (State.PROCEEDING, State.COMPLETED))

    def send_response(self, resp: Response, now: float) -> list[Output]:
        code = resp.status
        if self.state is State.ACCEPTED and 200 <= code < 300:
            _check(self, resp, (State.ACCEPTED,))
            self.last_response = resp
            return [Send(resp, self.peer, self)]  # the TU re-sending its 2xx
        _check(self, resp, (State.PROCEEDING,))
        self.last_response = resp
        if 200 <= code < 300:
            self.state = State.ACCEPTED
            self._deadlines.set("L", now + self.timers.m)
        elif code >= 300:
            self.state = State.COMPLETED
            if not self.reliable:
                self._deadlines.set("G", now + self._interval)
            self._deadlines.set("H", now + self.timers.h)
        return [Send(resp, self.peer, self)]

    def _fire(self, name: str, when: float) -> list[Output]:
        if name == "G" and self.state is State.COMPLETED and self.last_response is not None:
            self._deadlines.set("G", when + self._back_off(self.timers.t2))
            self.retransmissions += 1
            return [Send(self.last_response, self.peer, self)]
        if name == "H" and self.state is State.COMPLETED:
            self._terminate()
            return [TransactionTimeout(self, "H")]
        if name in ("I", "L"):
            self._terminate()
        return []


class ServerNonInviteTransaction(Transaction):
    def __init__(self, request: Request, source: Address, *, reliable: bool, timers: TimerConfig = TimerConfig()):
        super().__init__(request, source, reliable=reliable, timers=timers, state=State.TRYING)

    def start(self, now: float) -> list[Output]:
        return []  # a non-INVITE server sends nothing until the TU answers

    def receive_request(self, req: Request, source: Address, now: float) -> list[Output]:
        return _absorb(self, answer=self.state is not State.TRYING)

    def send_response(self, resp: Response, now: float) -> list[Output]:
        _check(self, resp, (State.TRYING, State.PROCEEDING))
        self.last_response = resp
        if resp.status < 200:
            self.state = State.PROCEEDING
        else:
            self.state = State.COMPLETED
            self._linger("J", self.timers.j(self.reliable), now)
        return [Send(resp, self.peer, self)]

    def _fire(self, name: str, when: float) -> list[Output]:
        if name == "J":
            self._terminate()
        return []


ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction
