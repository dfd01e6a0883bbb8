"""Blind transfer (RFC 3515 REFER, RFC 3420 sipfrag, RFC 5589 §6), sans-I/O.

``Transfers.start(call, target)`` sends a REFER in the call's dialog asking the
peer to call ``target`` (``Refer-To``). The peer accepts it (202) and reports
how its call goes in NOTIFYs of the implicit ``refer`` subscription, each
carrying the status line of the new call as ``message/sipfrag``:

    REFER --202--> accepted -- NOTIFY "SIP/2.0 100 Trying" --> progress
                             -- NOTIFY "SIP/2.0 200 OK" (terminated) --> done: the glue hangs up
          --4xx-6xx--> refused       NOTIFY with a final >= 300 --> failed, the call goes on
          no final NOTIFY within ``timeout``                    --> failed, the call goes on

Each NOTIFY is answered 200 (481 for one that matches no transfer; 400 for a
body that is not a sipfrag status line). One transfer per call at a time.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .auth import AuthFailed, Authenticator
from .calls import SipCall
from .dialog import DialogId
from .errors import SipParseError
from .events import Address, Output, RequestReceived, ResponseReceived, TransactionTimeout, TransportError
from .ids import transport_of
from .layer import TransactionLayer
from .message import Request, make_response
from .timers import Deadlines
from .uri import SipUri

__all__ = ["TransferState", "Transfer", "TransferUpdate", "Transfers", "parse_sipfrag"]

SIPFRAG = "message/sipfrag"
TIMEOUT = 120.0  # s from the REFER to the final NOTIFY (the new call rings meanwhile)
_STATUS = re.compile(r"SIP/2\.0 ([1-6][0-9]{2})(?: ([^\r\n]*))?")


class TransferState(enum.Enum):
    REFERRING = "referring"
    ACCEPTED = "accepted"
    DONE = "done"
    FAILED = "failed"


@dataclass(eq=False, slots=True)
class Transfer:
    call: SipCall
    target: str
    refer: Request
    hop: Address
    state: TransferState = TransferState.REFERRING
    status: int | None = None  # the latest sipfrag status
    reason: str = ""
    deadlines: Deadlines = field(default_factory=Deadlines)


@dataclass(frozen=True, slots=True)
class TransferUpdate:
    """A transfer moved on; ``final``: it is over (``ok`` says how)."""

    transfer: Transfer
    status: int
    reason: str
    final: bool
    ok: bool


def parse_sipfrag(body: bytes) -> tuple[int, str]:
    """The status line a sipfrag starts with: ``SIP/2.0 180 Ringing`` -> (180, "Ringing")."""
    line = body[:512].split(b"\r\n", 1)[0].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    m = _STATUS.fullmatch(line)
    if m is None:
        raise SipParseError(f"sipfrag: not a status line: {line[:60]!r}", header="body")
    return int(m.group(1)), (m.group(2) or "").strip()


class Transfers:
    def __init__(self, layer: TransactionLayer, auth: Authenticator, via: Callable[[str], str], *,
                 timeout: float = TIMEOUT) -> None:
        self.layer = layer
        self.auth = auth
        self._via = via  # a fresh Via value (a new branch) for a transport, each call
        self.timeout = timeout
        self.active: dict[DialogId, Transfer] = {}
        self.counts: dict[str, int] = {}

    def start(self, call: SipCall, target: SipUri, hop: Address, now: float, *, contact: str
              ) -> tuple[Transfer, list[Output]]:
        """REFER ``call``'s peer to ``target``. ``ValueError`` if one is already under way."""
        if call.id in self.active:
            raise ValueError("a transfer of this call is already under way")
        refer = call.dialog.new_request("REFER", via=self._new_via(call), contact=contact)
        refer.headers.add("Refer-To", f"<{target}>")
        refer.headers.add("Referred-By", f"<{call.dialog.local.uri}>")
        t = Transfer(call, str(target), refer, hop)
        t.deadlines.set("notify", now + self.timeout)
        self.active[call.id] = t
        _, out = self.layer.request(refer, hop, now, reliable=call.reliable)
        return t, list(out)

    def forget(self, call: SipCall) -> None:
        self.active.pop(call.id, None)

    # -- what the layer hands up --------------------------------------------------------

    def owns(self, o: Output) -> bool:
        if isinstance(o, RequestReceived):
            return o.transaction is not None and o.request.method == "NOTIFY"
        if isinstance(o, ResponseReceived | TransactionTimeout | TransportError):
            tx = o.transaction
            return tx is not None and tx.method == "REFER" and any(t.refer is tx.request for t in self.active.values())
        return False

    def handle(self, o: Output, now: float) -> list[Output | TransferUpdate]:
        if isinstance(o, RequestReceived):
            return self._notify(o, now)
        assert isinstance(o, ResponseReceived | TransactionTimeout | TransportError) and o.transaction is not None
        t = next(t for t in self.active.values() if t.refer is o.transaction.request)
        if not isinstance(o, ResponseReceived):
            return self._end(t, 0, "no answer to the REFER", ok=False)
        resp = o.response
        if resp.status < 200:
            return []
        if resp.status < 300:
            if t.state is TransferState.REFERRING:
                t.state = TransferState.ACCEPTED
                return [TransferUpdate(t, resp.status, resp.reason, False, False)]
            return []
        if resp.status in (401, 407):
            try:
                again = self.auth.retry(t.refer, resp, via=self._new_via(t.call))
            except AuthFailed as exc:
                return self._end(t, resp.status, f"refused: {exc}", ok=False)
            t.refer = again
            t.call.dialog.local_seq = max(t.call.dialog.local_seq, again.cseq.number)
            _, out = self.layer.request(again, t.hop, now, reliable=t.call.reliable)
            return list(out)
        return self._end(t, resp.status, f"refused: {resp.status} {resp.reason}", ok=False)

    def _notify(self, ev: RequestReceived, now: float) -> list[Output | TransferUpdate]:
        req, tx = ev.request, ev.transaction
        assert tx is not None
        t = self.active.get(DialogId.of_request(req)) if req.to.tag else None
        event = (req.headers.get("Event") or "").split(";")[0].strip().lower()
        if t is None or event != "refer":
            self._count("NOTIFY for nothing")
            return list(self.layer.respond(tx, make_response(req, 481), now))
        if not t.call.dialog.in_order(req):
            return list(self.layer.respond(tx, make_response(req, 500, "Server Internal Error (CSeq out of order)"), now))
        ct = req.content_type
        try:
            if ct is None or ct.mime != SIPFRAG:
                raise SipParseError(f"NOTIFY body is {ct.mime if ct else 'missing'}, not {SIPFRAG}", header="body")
            status, reason = parse_sipfrag(req.body)
        except SipParseError as exc:
            self._count("malformed")
            return list(self.layer.respond(tx, make_response(req, 400, f"Bad Request ({exc})"[:120]), now))
        out: list[Output | TransferUpdate] = list(self.layer.respond(tx, make_response(req, 200), now))
        t.status = status
        state = (req.headers.get("Subscription-State") or "").split(";")[0].strip().lower()
        if status >= 200:
            return [*out, *self._end(t, status, f"{status} {reason}".strip(), ok=status < 300)]
        if state == "terminated":
            return [*out, *self._end(t, status, "the subscription ended without a final status", ok=False)]
        if t.state is TransferState.REFERRING:
            t.state = TransferState.ACCEPTED  # a NOTIFY may overtake the 202
        return [*out, TransferUpdate(t, status, reason, False, False)]

    def _end(self, t: Transfer, status: int, reason: str, *, ok: bool) -> list[Output | TransferUpdate]:
        if self.active.get(t.call.id) is not t:
            return []
        del self.active[t.call.id]
        t.state = TransferState.DONE if ok else TransferState.FAILED
        t.reason = reason
        t.deadlines.clear()
        self._count("transferred" if ok else "transfer failed")
        return [TransferUpdate(t, status, reason, True, ok)]

    # -- time -------------------------------------------------------------------

    def next_timeout(self) -> float | None:
        times = [d for t in self.active.values() if (d := t.deadlines.next()) is not None]
        return min(times) if times else None

    def handle_timeout(self, now: float) -> list[Output | TransferUpdate]:
        out: list[Output | TransferUpdate] = []
        for t in list(self.active.values()):
            if t.deadlines.pop_due(now) is not None:
                out += self._end(t, 0, f"no final NOTIFY within {self.timeout:.0f} s", ok=False)
        return out

    def _new_via(self, call: SipCall) -> str:
        return self._via(transport_of(call.reliable))

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
