"""The UAC core (RFC 3261 §8.1, §9.1, §13.2, §22): outgoing calls, sans-I/O.

``UacCore.dial`` sends an INVITE with our SDP offer and follows it until the
call is answered or fails. It shares the transaction layer and the call table
of a ``uas.UasCore``: once a 2xx arrives and is ACKed, the call is an ordinary
``SipCall`` of that core (its BYE, INFO, re-INVITE and hang-up are the same
code as an incoming call's), and the glue hears ``CallAnswered``.

    dial -> INVITE --1xx--> CallProgress (180, 183)
                   --401/407--> INVITE again with credentials (auth.Authenticator)
                   --2xx--> ACK (ours, §13.2.2.4: a new branch, the INVITE's credentials)
                            -> CallAnswered (no usable SDP answer: ACK, BYE, ended)
                   --3xx-699--> OutgoingEnded "rejected: 486 Busy Here" (the layer ACKs)
                   Timer B (no response at all)          -> OutgoingEnded "no response"
                   ring_timeout after the INVITE         -> CANCEL, "no answer"
    cancel (the session ended while ringing): CANCEL once a provisional came (§9.1;
        before one, at the first that comes); the INVITE ends 487. A 2xx that
        crosses the CANCEL is ACKed and the call ended with a BYE. No final
        within 64*T1 of the CANCEL: the call is dropped anyway.

2xx retransmissions (and a 2xx from a second fork) are ACKed again from the
kept ACK for 64*T1 after the answer; a fork we did not take gets its BYE.
"""

from __future__ import annotations

import enum
import logging
import secrets
from dataclasses import dataclass, field

from .address import NameAddr
from .auth import AuthFailed, Authenticator
from .calls import CallState, SipCall
from .client import ClientInviteTransaction
from .dialog import Dialog, DialogState
from .digest import Credentials
from .errors import SipParseError
from .events import Address, Output, ResponseReceived, Send, TransactionTimeout, TransportError
from .ids import contact_value, new_call_id, new_tag, transport_of, via_value
from .message import Request, Response
from .offer_answer import MediaPolicy, Negotiated, NoCodec, accept_answer, make_offer
from .sdp import Connection, Origin, SdpError, SessionDescription, is_ip
from .timers import Deadlines, TimerConfig
from .transaction import State
from .uas import UasCore
from .uri import SipUri

__all__ = ["CallAnswered", "CallProgress", "OutgoingCall", "OutgoingEnded", "OutgoingState", "UacConfig",
           "UacCore", "UacEvent"]

log = logging.getLogger(__name__)

SDP = "application/sdp"
MAX_AUTH = 2  # challenged attempts per call (a stale nonce may cost a second)
MAX_OUTGOING = 1000  # calls being placed at once


@dataclass(frozen=True, slots=True)
class UacConfig:
    host: str
    port: int
    user: str = "voxline"
    transport: str = "UDP"
    credentials: Credentials | None = None
    ring_timeout: float = 60.0  # s from the INVITE to the answer, ringing included
    media: MediaPolicy = MediaPolicy()
    timers: TimerConfig = TimerConfig()

    @property
    def contact(self) -> str:
        return self.contact_for(self.transport)

    def contact_for(self, transport: str) -> str:
        return contact_value(self.user, self.host, self.port, transport)

    def via(self, transport: str | None = None) -> str:
        return via_value(self.host, self.port, transport or self.transport)


class OutgoingState(enum.Enum):
    CALLING = "calling"  # INVITE sent, nothing heard
    RINGING = "ringing"  # a provisional came: CANCEL may be sent
    CANCELLING = "cancelling"
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass(eq=False, slots=True)
class OutgoingCall:
    uri: SipUri
    local: NameAddr  # From, with our tag
    remote: NameAddr  # To, without a tag
    call_id: str
    dest: Address  # the first hop: the target, or the outbound proxy
    offer: SessionDescription
    origin: Origin
    invite: Request
    tx: ClientInviteTransaction
    state: OutgoingState = OutgoingState.CALLING
    cancel_wanted: bool = False
    authenticate: bool = True  # answer challenges with our credentials
    auth_tries: int = 0
    status: int | None = None  # the last response's
    reliable: bool = False  # over TCP: the INVITE, its ACK, CANCEL and the dialog's requests
    early: SessionDescription | None = None  # an SDP answer in a provisional
    answered: SipCall | None = None
    ack: Request | None = None
    ended: str | None = None
    deadlines: Deadlines = field(default_factory=Deadlines)


@dataclass(frozen=True, slots=True)
class CallProgress:
    call: OutgoingCall
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """The callee answered and we ACKed: media flows. ``sip_call`` is now the UAS core's."""

    call: OutgoingCall
    sip_call: SipCall
    negotiated: Negotiated


@dataclass(frozen=True, slots=True)
class OutgoingEnded:
    """The call ended before it was answered (rejected, no answer, cancelled, failed)."""

    call: OutgoingCall
    reason: str
    status: int | None


UacEvent = CallProgress | CallAnswered | OutgoingEnded


class UacCore:
    def __init__(self, config: UacConfig, uas: UasCore) -> None:
        self.config = config
        self.uas = uas
        self.layer = uas.layer
        self.auth = Authenticator(config.credentials)
        self.calls: dict[str, OutgoingCall] = {}  # by Call-ID, until 64*T1 after the answer
        self.counts: dict[str, int] = {}

    # -- the glue's side -------------------------------------------------------------

    def dial(self, uri: SipUri, dest: Address, rtp: tuple[str, int], now: float, *,
             from_: NameAddr | None = None, to: NameAddr | None = None, authenticate: bool = True,
             reliable: bool = False) -> tuple[OutgoingCall, list[Output]]:
        """Call ``uri`` through ``dest`` offering RTP at ``rtp`` (host, port).
        ``authenticate``: answer the call's challenges with our credentials (only a
        call that goes to our trunk should: anyone may be dialled). ``reliable``:
        over TCP (the glue has a connection to ``dest`` open)."""
        if len(self.calls) >= MAX_OUTGOING:
            raise OverflowError(f"{MAX_OUTGOING} outgoing calls already")
        cfg = self.config
        local = (from_ or NameAddr(SipUri(cfg.host, cfg.user))).with_tag(new_tag())
        remote = to or NameAddr(uri)
        origin = Origin("voxline", str(secrets.randbelow(2**31)), 1, Connection.of(rtp[0]))
        offer = make_offer(Connection.of(rtp[0]), rtp[1], cfg.media, origin=origin)
        transport = transport_of(reliable)
        invite = Request(method="INVITE", uri=uri)
        h = invite.headers
        h.add("Via", cfg.via(transport))
        h.add("Max-Forwards", "70")
        h.add("From", str(local))
        h.add("To", str(remote))
        h.add("Call-ID", new_call_id(cfg.host))
        h.add("CSeq", "1 INVITE")
        h.add("Contact", cfg.contact_for(transport))
        h.add("Allow", ", ".join(sorted(self.uas.config.policy.methods)))
        invite.set_body(bytes(offer), SDP)
        tx, out = self.layer.request(invite, dest, now, reliable=reliable)
        assert isinstance(tx, ClientInviteTransaction)
        call = OutgoingCall(uri, local, remote, invite.call_id, dest, offer, origin, invite, tx,
                            authenticate=authenticate, reliable=reliable)
        call.deadlines.set("ring", now + cfg.ring_timeout)
        self.calls[call.call_id] = call
        return call, list(out)

    def cancel(self, call: OutgoingCall, now: float, reason: str = "cancelled") -> list[Output | UacEvent]:
        """The session ended before the answer: CANCEL (now, or at the first provisional)."""
        if call.state in (OutgoingState.ANSWERED, OutgoingState.ENDED, OutgoingState.CANCELLING):
            return []
        call.cancel_wanted = True
        call.ended = call.ended or reason
        if call.state is OutgoingState.RINGING:
            return self._send_cancel(call, now)
        return []

    # -- what the layer hands up --------------------------------------------------------

    def owns(self, o: Output) -> bool:
        """Whether ``o`` (a response, a timeout, a transport error) is for one of our calls."""
        if isinstance(o, ResponseReceived):
            try:
                return o.response.cseq.method in ("INVITE", "CANCEL") and o.response.call_id in self.calls
            except SipParseError:
                return False
        if isinstance(o, TransactionTimeout | TransportError):
            call = self.calls.get(_call_id(o.transaction.request))
            return call is not None and o.transaction.method in ("INVITE", "CANCEL")
        return False

    def handle(self, o: Output, now: float) -> list[Output | UacEvent]:
        if isinstance(o, ResponseReceived):
            call = self.calls[o.response.call_id]
            if o.response.cseq.method == "CANCEL":
                return []  # 200 to our CANCEL: the INVITE's 487 ends the call
            return self._response(call, o.response, o.transaction, now)
        assert isinstance(o, TransactionTimeout | TransportError)
        call = self.calls[_call_id(o.transaction.request)]
        if o.transaction is not call.tx:
            return []  # a CANCEL that timed out: the cancel deadline ends the call
        why = "transport error" if isinstance(o, TransportError) else "no response (timeout)"
        return self._fail(call, call.ended or why, None)

    # -- responses ----------------------------------------------------------------------

    def _response(self, call: OutgoingCall, resp: Response, tx: object, now: float) -> list[Output | UacEvent]:
        code = resp.status
        if call.state is OutgoingState.ANSWERED or (tx is not None and tx is not call.tx):
            return self._late(call, resp, now) if 200 <= code < 300 else []
        if call.state is OutgoingState.ENDED:
            return self._late(call, resp, now) if 200 <= code < 300 else []
        call.status = code
        if code < 200:
            return self._provisional(call, resp, now)
        if code < 300:
            return self._answered(call, resp, now)
        if code in (401, 407) and not call.cancel_wanted:
            return self._challenged(call, resp, now)
        if code == 487 and call.cancel_wanted:
            return self._fail(call, call.ended or "cancelled", code)
        return self._fail(call, f"rejected: {code} {resp.reason}", code)

    def _provisional(self, call: OutgoingCall, resp: Response, now: float) -> list[Output | UacEvent]:
        out: list[Output | UacEvent] = []
        if call.state is OutgoingState.CALLING:
            call.state = OutgoingState.RINGING
            if call.cancel_wanted:
                return self._send_cancel(call, now)
        if resp.status == 100:
            return out
        if resp.body and resp.content_type is not None and resp.content_type.mime == SDP:
            try:
                call.early = SessionDescription.parse(resp.body)
            except SdpError:
                self._count("malformed")
        out.append(CallProgress(call, resp.status, resp.reason))
        return out

    def _challenged(self, call: OutgoingCall, resp: Response, now: float) -> list[Output | UacEvent]:
        if not call.authenticate:
            return self._fail(call, f"authentication failed: {resp.status} {resp.reason}: "
                                    "this target is not the trunk", resp.status)
        if call.auth_tries >= MAX_AUTH:
            return self._fail(call, f"authentication failed: {resp.status} {resp.reason}", resp.status)
        try:
            invite = self.auth.retry(call.invite, resp, via=self._via(call))
        except AuthFailed as exc:
            return self._fail(call, f"authentication failed: {exc}", resp.status)
        call.auth_tries += 1
        call.invite = invite
        call.state = OutgoingState.CALLING
        tx, out = self.layer.request(invite, call.dest, now, reliable=call.reliable)
        assert isinstance(tx, ClientInviteTransaction)
        call.tx = tx
        self._count("challenged")
        return list(out)

    def _answered(self, call: OutgoingCall, resp: Response, now: float) -> list[Output | UacEvent]:
        dialog = Dialog.as_uac(call.invite, resp)
        out: list[Output | UacEvent] = [self._ack(call, dialog)]
        call.deadlines.clear()
        call.deadlines.set("forget", now + 64 * self.config.timers.t1)
        if call.cancel_wanted:  # the 2xx crossed our CANCEL: §15 ends it with a BYE
            call.state = OutgoingState.ENDED
            return [*out, *self._bye(call, dialog, now), OutgoingEnded(call, call.ended or "cancelled", resp.status)]
        try:
            sdp = SessionDescription.parse(resp.body) if resp.body else call.early
            if sdp is None:
                raise NoCodec("the answer carries no SDP")
            negotiated = accept_answer(call.offer, sdp, self.config.media)
        except (SdpError, NoCodec) as exc:
            call.state = OutgoingState.ENDED
            reason = f"no usable answer: {exc}"
            return [*out, *self._bye(call, dialog, now), OutgoingEnded(call, reason, resp.status)]
        call.state = OutgoingState.ANSWERED
        sip_call = SipCall(dialog, call.invite, call.tx, call.dest, call.reliable, None, call.origin,
                           state=CallState.CONFIRMED, negotiated=negotiated, local_sdp=call.offer)
        call.answered = sip_call
        self.uas.calls[dialog.id] = sip_call
        return [*out, CallAnswered(call, sip_call, negotiated)]

    def _late(self, call: OutgoingCall, resp: Response, now: float) -> list[Output | UacEvent]:
        """A 2xx after the one we took: a retransmission (ACK again) or another fork (ACK, BYE)."""
        taken = call.answered.dialog if call.answered is not None else None
        if taken is not None and resp.to.tag == taken.id.remote_tag and call.ack is not None:
            self._count("2xx retransmitted")
            return [Send(call.ack, self._hop(taken, call), reliable=call.reliable)]
        dialog = Dialog.as_uac(call.invite, resp)
        self._count("2xx of another fork")
        return [self._ack(call, dialog, keep=False), *self._bye(call, dialog, now)]

    # -- requests we send ---------------------------------------------------------------

    def _ack(self, call: OutgoingCall, dialog: Dialog, *, keep: bool = True) -> Send:
        ack = dialog.new_request("ACK", via=self._via(call))
        for name in ("Authorization", "Proxy-Authorization"):  # §13.2.2.4: the INVITE's credentials
            for value in call.invite.headers.get_all(name):
                ack.headers.add(name, value)
        if keep:
            call.ack = ack
        return Send(ack, self._hop(dialog, call), reliable=call.reliable)

    def _bye(self, call: OutgoingCall, dialog: Dialog, now: float) -> list[Output | UacEvent]:
        bye = dialog.new_request("BYE", via=self._via(call))
        dialog.state = DialogState.TERMINATED
        _, out = self.layer.request(bye, self._hop(dialog, call), now, reliable=call.reliable)
        return list(out)

    def _send_cancel(self, call: OutgoingCall, now: float) -> list[Output | UacEvent]:
        """§9.1: the INVITE's Request-URI, Call-ID, From, To, CSeq number, Route and top Via."""
        inv = call.invite
        cancel = Request(method="CANCEL", uri=inv.uri)
        h = cancel.headers
        h.add("Via", inv.headers.get_all("Via")[0])
        for r in inv.headers.get_all("Route"):
            h.add("Route", r)
        h.add("Max-Forwards", "70")
        h.add("From", inv.headers.get_all("From")[0])
        h.add("To", inv.headers.get_all("To")[0])
        h.add("Call-ID", inv.call_id)
        h.add("CSeq", f"{inv.cseq.number} CANCEL")
        h.add("Content-Length", "0")
        call.state = OutgoingState.CANCELLING
        call.deadlines.set("cancel", now + 64 * self.config.timers.t1)
        _, out = self.layer.request(cancel, call.dest, now, reliable=call.reliable)
        return list(out)

    def _via(self, call: OutgoingCall) -> str:
        return self.config.via(transport_of(call.reliable))

    def _hop(self, dialog: Dialog, call: OutgoingCall) -> Address:
        uri = dialog.next_hop()
        if isinstance(uri, SipUri) and _is_ip(uri.host):
            return (uri.host.strip("[]"), uri.port or 5060)
        return call.dest

    # -- ending, time ---------------------------------------------------------------

    def _fail(self, call: OutgoingCall, reason: str, status: int | None) -> list[Output | UacEvent]:
        if call.state is OutgoingState.ANSWERED:
            return []
        first = call.state is not OutgoingState.ENDED
        call.state = OutgoingState.ENDED
        call.ended = call.ended or reason
        call.deadlines.clear()
        self.calls.pop(call.call_id, None)
        if call.tx.state in (State.CALLING, State.PROCEEDING):  # given up unanswered: it would stay forever
            self.layer.abandon(call.tx)
        self._count(reason.split(":")[0])
        return [OutgoingEnded(call, reason, status)] if first else []

    def next_timeout(self) -> float | None:
        times = [t for c in self.calls.values() if (t := c.deadlines.next()) is not None]
        return min(times) if times else None

    def handle_timeout(self, now: float) -> list[Output | UacEvent]:
        out: list[Output | UacEvent] = []
        for call in list(self.calls.values()):
            while (due := call.deadlines.pop_due(now)) is not None:
                name, _ = due
                if name == "forget":
                    self.calls.pop(call.call_id, None)
                elif name == "ring":
                    call.ended = call.ended or "no answer"
                    out += self.cancel(call, now, "no answer")
                elif name == "cancel":  # §9.1: no final response to the cancelled INVITE
                    out += self._fail(call, call.ended or "cancelled", None)
        return out

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


def _call_id(req: Request) -> str:
    try:
        return req.call_id
    except SipParseError:
        return ""


def _is_ip(host: str) -> bool:
    return is_ip(host.strip("[]"))
