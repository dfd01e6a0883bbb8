"""What every RFC 3261 §17 transaction shares: its request, its peer, its timers.

A transaction is a state machine fed messages and time. It never sends: each
method returns outputs (``events.Send`` for the transport glue, the rest for
the transaction user), and the owner asks ``next_timeout()`` when to call
``handle_timeout(now)``. Client (``client``) and server (``server``)
transactions differ only in their states and in what their timers do, so the
running of timers, the retransmission back-off, transport errors and
termination live here, once.
"""

from __future__ import annotations

from enum import Enum

from .events import Address, Output, TransportError
from .message import Request, Response
from .timers import Deadlines, TimerConfig

__all__ = ["State", "Transaction"]


class State(Enum):
    """The states of §17.1 and §17.2, with RFC 6026's Accepted."""

    CALLING = "calling"  # INVITE client, request sent
    TRYING = "trying"  # non-INVITE, client and server
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # INVITE after a 2xx (RFC 6026)
    COMPLETED = "completed"
    CONFIRMED = "confirmed"  # INVITE server, ACK received
    TERMINATED = "terminated"


class Transaction:
    """The common part of the four transaction kinds.

    ``peer`` is where this transaction sends: the request's destination for a
    client, where the request came from for a server (§18.2.2 with RFC 3581).
    ``reliable`` (TCP, TLS) turns retransmission timers off and the timers that
    only absorb retransmissions to zero.
    """

    def __init__(self, request: Request, peer: Address, *, reliable: bool, timers: TimerConfig,
                 state: State) -> None:
        self.request = request
        self.peer = peer
        self.reliable = reliable
        self.timers = timers
        self.method = request.method
        self.state = state
        self.last_response: Response | None = None
        self.retransmissions = 0  # messages this transaction sent again
        self.key: tuple[str, ...] = ()  # set by the layer that matches messages to it
        self.absorbed = 0  # retransmissions received and taken here, never shown to the TU
        self._deadlines = Deadlines()
        self._interval = timers.t1

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def next_timeout(self) -> float | None:
        """When ``handle_timeout`` should next be called (None: no timer runs)."""
        return self._deadlines.next()

    def handle_timeout(self, now: float) -> list[Output]:
        """Fire every timer due by ``now``, earliest first."""
        out: list[Output] = []
        while (due := self._deadlines.pop_due(now)) is not None:
            out += self._fire(*due)
        return out

    def transport_error(self) -> list[Output]:
        """The transport could not send (§17.1.1.2, §17.1.2.2, §17.2.4): tell the TU, end."""
        if self.terminated:
            return []
        self._terminate()
        return [TransportError(self)]

    def abandon(self) -> None:
        """End now, sending nothing and telling nobody (the TU has given up on it)."""
        self._terminate()

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        self._deadlines.clear()

    def _linger(self, name: str, seconds: float, now: float) -> None:
        """Enter a state that only absorbs retransmissions for ``seconds``
        (D, I, J, K); zero over a reliable transport terminates at once."""
        if seconds > 0:
            self._deadlines.set(name, now + seconds)
        else:
            self._terminate()

    def _back_off(self, cap: float | None) -> float:
        """The next retransmission interval: doubled, capped at ``cap`` (None: no cap)."""
        self._interval = self._interval * 2 if cap is None else min(self._interval * 2, cap)
        return self._interval

    def _fire(self, name: str, when: float) -> list[Output]:
        raise NotImplementedError
