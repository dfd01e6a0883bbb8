"""The transaction layer: matching messages to transactions (RFC 3261 §17.1.3, §17.2.3).

``TransactionLayer`` owns every live transaction of one SIP endpoint. The
transport glue hands it each parsed message with its source (``receive``) and
calls ``handle_timeout(now)`` at ``next_timeout()``; the UA core starts client
transactions (``request``) and answers server ones (``respond``). All of it
returns outputs: ``Send`` for the glue, the rest for the UA core.

Matching. A response matches the client transaction of its top Via branch and
CSeq method. A request carrying an RFC 3261 branch matches on (branch, sent-by,
method), an ACK on the INVITE's; a request without one (RFC 2543) on Call-ID,
CSeq number, From tag, Request-URI and top Via. A CANCEL is a transaction of its
own and names the INVITE transaction it cancels (§9.2). An ACK that matches
nothing is for the TU (the ACK of a 2xx), as is a 2xx that matches nothing (a
retransmission after the INVITE transaction has gone to Accepted and ended).

Received requests get RFC 3581 ``received``/``rport`` on their top Via, and every
server transaction answers to the address the request came from (§18.2.2 with
RFC 3581), so responses never go to a host the message merely names.

The number of live transactions is bounded: past ``max_transactions`` a new
request is answered 503 without state.
"""

from __future__ import annotations

import logging

from .client import ClientInviteTransaction, ClientNonInviteTransaction, ClientTransaction
from .errors import SipParseError
from .events import Address, Output, RequestReceived, ResponseReceived, Send, StrayDropped
from .grammar import split_list
from .message import Request, Response, make_response
from .server import ServerInviteTransaction, ServerNonInviteTransaction, ServerTransaction
from .timers import TimerConfig
from .transaction import State, Transaction

__all__ = ["TransactionLayer", "client_key", "server_key"]

log = logging.getLogger(__name__)

Key = tuple[str, ...]
MAX_TRANSACTIONS = 8192


def client_key(msg: Request | Response) -> Key:
    """§17.1.3: the top Via branch and the CSeq method."""
    return (msg.top_via.branch or "", msg.cseq.method)


def server_key(req: Request, method: str | None = None) -> Key:
    """§17.2.3 (and RFC 2543 matching when the branch is not RFC 3261's).

    ``method`` overrides the request's: an ACK looks for its INVITE, a CANCEL
    for the INVITE it cancels.
    """
    via = req.top_via
    m = method or ("INVITE" if req.method == "ACK" else req.method)
    if via.has_rfc3261_branch:
        return ("3261", via.branch or "", via.sent_by.lower(), m)
    return ("2543", req.call_id, str(req.cseq.number), req.from_.tag or "", str(req.uri), via.sent_by.lower(), m)


def _mark_source(req: Request, source: Address) -> None:
    """§18.2.1 and RFC 3581: note on the top Via where the request really came from."""
    lines = req.headers.get_all("Via")
    via = req.top_via
    host, port = source
    if via.host.strip("[]").lower() != host.lower() or via.wants_rport:
        via = via.with_param("received", host)
    if via.wants_rport:
        via = via.with_param("rport", str(port))
    parts = split_list(lines[0])  # the first line may carry several via-parms
    req.headers.replace_all("Via", [", ".join([str(via), *parts[1:]]), *lines[1:]])


class TransactionLayer:
    def __init__(self, *, timers: TimerConfig = TimerConfig(), max_transactions: int = MAX_TRANSACTIONS) -> None:
        self.timers = timers
        self.max_transactions = max_transactions
        self.clients: dict[Key, ClientTransaction] = {}
        self.servers: dict[Key, ServerTransaction] = {}
        self.counts: dict[str, int] = {"malformed": 0, "stray": 0, "overload": 0}

    def __len__(self) -> int:
        return len(self.clients) + len(self.servers)

    # -- received ---------------------------------------------------------------

    def receive(self, msg: Request | Response, source: Address, now: float, *, reliable: bool = False) -> list[Output]:
        try:
            if isinstance(msg, Response):
                return self._response(msg, now)
            return self._request(msg, source, now, reliable)
        except SipParseError as exc:
            # Not even the fields matching needs: answer 400 without state (never an ACK).
            self.counts["malformed"] += 1
            log.debug("x %s from %s: %s", type(msg).__name__, source, exc)
            if isinstance(msg, Request) and msg.method != "ACK":
                return [Send(make_response(msg, 400, f"Bad Request ({exc})"[:120]), source)]
            return [StrayDropped(msg, str(exc))]

    def _response(self, resp: Response, now: float) -> list[Output]:
        if len(resp.vias) != 1:
            return self._stray(resp, "a response must carry exactly one Via (§18.1.2)")
        tx = self.clients.get(client_key(resp))
        if tx is None:
            if resp.cseq.method == "INVITE" and 200 <= resp.status < 300:
                return [ResponseReceived(resp, None)]  # a late 2xx: the dialog ACKs it
            return self._stray(resp, "no transaction")
        out = tx.receive_response(resp, now)
        self._reap(tx)
        return out

    def _request(self, req: Request, source: Address, now: float, reliable: bool) -> list[Output]:
        _mark_source(req, source)
        key = server_key(req)
        tx = self.servers.get(key)
        if tx is not None:
            out = tx.receive_request(req, source, now)
            self._reap(tx)
            return out
        if req.method == "ACK":
            return [RequestReceived(req, None, source)]
        if len(self) >= self.max_transactions:
            self.counts["overload"] += 1
            return [Send(make_response(req, 503, extra=[("Retry-After", "5")]), source)]
        cancels = None
        if req.method == "CANCEL":
            target = self.servers.get(server_key(req, "INVITE"))
            cancels = target if isinstance(target, ServerInviteTransaction) else None
        new: ServerTransaction
        if req.method == "INVITE":
            new = ServerInviteTransaction(req, source, reliable=reliable, timers=self.timers)
        else:
            new = ServerNonInviteTransaction(req, source, reliable=reliable, timers=self.timers)
        new.key = key
        self.servers[key] = new
        return [*new.start(now), RequestReceived(req, new, source, cancels)]

    def _stray(self, msg: Request | Response, reason: str) -> list[Output]:
        self.counts["stray"] += 1
        return [StrayDropped(msg, reason)]

    # -- the UA core's side -------------------------------------------------------

    def request(self, req: Request, dest: Address, now: float, *, reliable: bool = False
                ) -> tuple[ClientTransaction, list[Output]]:
        """Start a client transaction for ``req`` (which has its Via and branch)."""
        tx: ClientTransaction
        if req.method == "INVITE":
            tx = ClientInviteTransaction(req, dest, reliable=reliable, timers=self.timers)
        else:
            tx = ClientNonInviteTransaction(req, dest, reliable=reliable, timers=self.timers)
        tx.key = client_key(req)
        self.clients[tx.key] = tx
        return tx, tx.start(now)

    def respond(self, tx: ServerTransaction, resp: Response, now: float) -> list[Output]:
        out = tx.send_response(resp, now)
        self._reap(tx)
        return out

    def abandon(self, tx: Transaction) -> None:
        """Drop ``tx`` without a word: its TU has given up on it (an INVITE in
        Proceeding has no timer of its own, so one nobody answers would stay)."""
        tx.abandon()
        self._reap(tx)

    def transport_error(self, tx: Transaction) -> list[Output]:
        out = tx.transport_error()
        self._reap(tx)
        return out

    # -- time -------------------------------------------------------------------

    def next_timeout(self) -> float | None:
        times = [t for tx in self._all() if (t := tx.next_timeout()) is not None]
        return min(times) if times else None

    def handle_timeout(self, now: float) -> list[Output]:
        out: list[Output] = []
        for tx in self._all():
            t = tx.next_timeout()
            if t is not None and t <= now:
                out += tx.handle_timeout(now)
                self._reap(tx)
        return out

    def _all(self) -> list[Transaction]:
        return [*self.clients.values(), *self.servers.values()]

    def _reap(self, tx: Transaction) -> None:
        if tx.state is not State.TERMINATED:
            return
        if self.clients.get(tx.key) is tx:
            del self.clients[tx.key]
        elif self.servers.get(tx.key) is tx:
            del self.servers[tx.key]
