"""Client transactions (RFC 3261 §17.1), as state machines over messages and time.

INVITE client (§17.1.1, with RFC 6026's Accepted state):

    Calling --1xx--> Proceeding --300-699 / send ACK--> Completed --Timer D--> Terminated
       |  Timer A: retransmit, interval doubles (no cap)      (absorbs retransmitted finals,
       |  Timer B (64*T1): timeout                             ACKing each again)
       +--2xx (from Calling or Proceeding)--> Accepted --Timer M--> Terminated
                                              (2xx retransmissions go to the TU, which ACKs:
                                               the ACK for a 2xx is not this transaction's)

Non-INVITE client (§17.1.2):

    Trying --1xx--> Proceeding --final--> Completed --Timer K--> Terminated
       Timer E: retransmit at T1, 2T1, ... capped at T2 (T2 in Proceeding)
       Timer F (64*T1): timeout

Over a reliable transport A and E are not started and D and K are zero.
"""

from __future__ import annotations

from .events import Address, Output, ResponseReceived, Send, TransactionTimeout
from .message import Request, Response
from .timers import TimerConfig
from .transaction import State, Transaction

__all__ = ["ClientInviteTransaction", "ClientNonInviteTransaction", "ClientTransaction", "build_ack"]


class ClientInviteTransaction(Transaction):
    def __init__(self, request: Request, dest: Address, *, reliable: bool, timers: TimerConfig = TimerConfig()):
        super().__init__(request, dest, reliable=reliable, timers=timers, state=State.CALLING)
        self.ack: Request | None = None  # the ACK of a non-2xx final, once sent

    def start(self, now: float) -> list[Output]:
        if not self.reliable:
            self._deadlines.set("A", now + self._interval)
        self._deadlines.set("B", now + self.timers.b)
        return [Send(self.request, self.peer, self)]

    def _fire(self, name: str, when: float) -> list[Output]:
        if name == "A" and self.state is State.CALLING:
            self._deadlines.set("A", when + self._back_off(None))  # INVITE: no cap until B
            self.retransmissions += 1
            return [Send(self.request, self.peer, self)]
        if name == "B" and self.state is State.CALLING:
            self._terminate()
            return [TransactionTimeout(self, "B")]
        if name in ("D", "M"):
            self._terminate()
        return []

    def receive_response(self, resp: Response, now: float) -> list[Output]:
        code = resp.status
        if self.state in (State.CALLING, State.PROCEEDING):
            self.last_response = resp
            if code < 200:
                self.state = State.PROCEEDING  # the server heard us: no more retransmissions
                self._deadlines.cancel("A", "B")
                return [ResponseReceived(resp, self)]
            self._deadlines.clear()
            if code < 300:
                self.state = State.ACCEPTED
                self._deadlines.set("M", now + self.timers.m)
                return [ResponseReceived(resp, self)]
            self.state = State.COMPLETED
            self.ack = build_ack(self.request, resp)
            out: list[Output] = [Send(self.ack, self.peer, self), ResponseReceived(resp, self)]
            self._linger("D", self.timers.d(self.reliable), now)
            return out
        if self.state is State.ACCEPTED and 200 <= code < 300:
            return [ResponseReceived(resp, self)]  # a 2xx retransmission (or a fork's): the TU ACKs it
        if self.state is State.COMPLETED and code >= 300 and self.ack is not None:
            self.absorbed += 1
            self.retransmissions += 1
            return [Send(self.ack, self.peer, self)]  # our ACK was lost: ACK again, tell nobody
        return []


class ClientNonInviteTransaction(Transaction):
    def __init__(self, request: Request, dest: Address, *, reliable: bool, timers: TimerConfig = TimerConfig()):
        super().__init__(request, dest, reliable=reliable, timers=timers, state=State.TRYING)

    def start(self, now: float) -> list[Output]:
        if not self.reliable:
            self._deadlines.set("E", now + self._interval)
        self._deadlines.set("F", now + self.timers.f)
        return [Send(self.request, self.peer, self)]

    def _fire(self, name: str, when: float) -> list[Output]:
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            if self.state is State.TRYING:
                interval = self._back_off(self.timers.t2)
            else:
                interval = self._interval = self.timers.t2
            self._deadlines.set("E", when + interval)
            self.retransmissions += 1
            return [Send(self.request, self.peer, self)]
        if name == "F" and self.state in (State.TRYING, State.PROCEEDING):
            self._terminate()
            return [TransactionTimeout(self, "F")]
        if name == "K":
            self._terminate()
        return []

    def receive_response(self, resp: Response, now: float) -> list[Output]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            self.absorbed += 1  # Completed absorbs retransmitted finals
            return []
        self.last_response = resp
        if resp.status < 200:
            self.state = State.PROCEEDING
            return [ResponseReceived(resp, self)]
        self._deadlines.clear()
        self.state = State.COMPLETED
        self._linger("K", self.timers.k(self.reliable), now)
        return [ResponseReceived(resp, self)]


ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction


def build_ack(invite: Request, resp: Response) -> Request:
    """The ACK for a non-2xx final response (§17.1.1.3): part of the INVITE transaction.

    Same Request-URI, Call-ID, From, CSeq number and top Via (so the same branch)
    as the INVITE; To from the response (its tag); the INVITE's Route headers.
    """
    ack = Request(method="ACK", uri=invite.uri, version=invite.version)
    h = ack.headers
    h.add("Via", str(invite.top_via))
    for value in invite.headers.get_all("Route"):
        h.add("Route", value)
    h.add("Max-Forwards", "70")
    h.add("From", invite.headers.get_all("From")[0])
    h.add("To", resp.headers.get_all("To")[0])
    h.add("Call-ID", invite.call_id)
    h.add("CSeq", f"{invite.cseq.number} ACK")
    h.add("Content-Length", "0")
    return ack
