"""The UAS core (RFC 3261 §8.2, §12-§15; RFC 3311, RFC 6086): incoming calls, sans-I/O.

``UasCore`` sits on a ``TransactionLayer``. The transport glue feeds it what
arrives (``receive``) and the time (``handle_timeout`` at ``next_timeout()``),
and sends every ``Send`` it returns. What the core cannot decide alone it hands
up as an event; the glue answers with a method call:

    IncomingCall  -> reject(call, 486|503|...)          admission refused
                  -> ring(call); negotiate(call, host, port) -> Negotiated
                     (NoCodec: reject(call, 488)); accept(call)  -> 180, 200 + answer
    CallConfirmed    the ACK came: media may flow
    MediaChanged     re-INVITE or UPDATE (hold, resume): the new Negotiated
    DtmfReceived     INFO application/dtmf-relay
    CallEnded        BYE, CANCEL (487 to the INVITE), no ACK, transport error,
                     reject or hang_up: once per call, always

The 2xx to an INVITE is re-sent at T1, 2T1, ... T2 until its ACK arrives
(§13.3.1.4); with no ACK after 64*T1 the call is ended with a BYE. The answers
to everything else come from here: OPTIONS, 481 for a dialog or transaction we
do not have, 500 for a CSeq out of order (§12.2.2), 491 for an offer while
another offer/answer on the dialog is unfinished (RFC 6337 §3.1), 488 for an
offer with no codec we have, and before any of it ``validate_request`` (400
naming the header, 405, 415, 416, 420, ...).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from .calls import (
    CallConfirmed,
    CallEnded,
    CallEvent,
    CallState,
    DtmfReceived,
    IncomingCall,
    MediaChanged,
    SipCall,
    parse_dtmf_relay,
)
from ..base import HANGUP, PEER_GONE, end_reason
from .client import ClientInviteTransaction
from .dialog import Dialog, DialogId, DialogState
from .errors import SipParseError, SipUsageError
from .events import Address, Output, RequestReceived, ResponseReceived, Send, TransactionTimeout, TransportError
from .ids import contact_value, new_tag, transport_of, via_value
from .layer import TransactionLayer
from .message import Request, Response, make_response
from .offer_answer import MediaPolicy, Negotiated, NoCodec, accept_answer, answer, make_offer
from .sdp import Connection, Origin, SdpError, SessionDescription, is_ip
from .server import ServerInviteTransaction, ServerTransaction
from .timers import TimerConfig
from .transaction import State
from .uri import SipUri
from .validate import UasPolicy, validate_request

__all__ = ["CallConfirmed", "CallEnded", "CallState", "CoreOutput", "DtmfReceived", "IncomingCall", "MediaChanged",
           "SipCall", "UasConfig", "UasCore", "UAS_POLICY", "parse_dtmf_relay"]

log = logging.getLogger(__name__)

UAS_POLICY = UasPolicy(methods=frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE"}),
                       supported=frozenset())
SDP = "application/sdp"
DTMF_RELAY = "application/dtmf-relay"


@dataclass(frozen=True, slots=True)
class UasConfig:
    host: str  # our address, for Contact and Via
    port: int
    transport: str = "UDP"
    user: str = "voxline"
    policy: UasPolicy = UAS_POLICY
    media: MediaPolicy = MediaPolicy()
    timers: TimerConfig = TimerConfig()
    max_calls: int = 2000  # calls held here, answered or not (past it: 503)

    @property
    def contact(self) -> str:
        return self.contact_for(self.transport)

    def contact_for(self, transport: str) -> str:
        return contact_value(self.user, self.host, self.port, transport)


CoreOutput = Output | CallEvent


class UasCore:
    def __init__(self, config: UasConfig, *, layer: TransactionLayer | None = None) -> None:
        self.config = config
        self.layer = layer or TransactionLayer(timers=config.timers)
        self.calls: dict[DialogId, SipCall] = {}
        self.counts: dict[str, int] = {}

    # -- input ------------------------------------------------------------------

    def receive(self, msg: Request | Response, source: Address, now: float, *, reliable: bool = False
                ) -> list[CoreOutput]:
        return self._dispatch(self.layer.receive(msg, source, now, reliable=reliable), now)

    def dispatch(self, outputs: list[Output], now: float) -> list[CoreOutput]:
        """The layer's outputs for this core (``ua.UserAgent`` routes the rest elsewhere)."""
        return self._dispatch(outputs, now)

    def next_timeout(self) -> float | None:
        times = [t for t in (self.layer.next_timeout(), *(c.deadlines.next() for c in self.calls.values()))
                 if t is not None]
        return min(times) if times else None

    def handle_timeout(self, now: float, *, layer: bool = True) -> list[CoreOutput]:
        """Fire what is due; ``layer=False``: the calls' own timers only (the layer's
        timers were fired by whoever shares the layer)."""
        out = self._dispatch(self.layer.handle_timeout(now), now) if layer else []
        for call in list(self.calls.values()):
            while (due := call.deadlines.pop_due(now)) is not None:
                out += self._call_timer(call, *due)
        return out

    def transport_error(self, send: Send, now: float) -> list[CoreOutput]:
        """The glue could not send ``send``: its transaction fails (and its call ends)."""
        if send.transaction is None:
            return []
        return self._dispatch(self.layer.transport_error(send.transaction), now)

    # -- the glue's decisions ---------------------------------------------------------

    def ring(self, call: SipCall, now: float) -> list[CoreOutput]:
        if call.state is not CallState.INCOMING:
            return []
        call.state = CallState.RINGING
        return self._respond(call.tx, self._response(call, call.invite, 180), now)

    def negotiate(self, call: SipCall, host: str, port: int) -> Negotiated:
        """Settle the media for our RTP at host:port: the answer to the offer, or
        (no offer in the INVITE) the offer we make in the 2xx. ``NoCodec`` if none fits."""
        local = Connection.of(host)
        if call.offer is None:
            only = MediaPolicy(codecs=self.config.media.codecs[:1], ptime=self.config.media.ptime,
                               dtmf=self.config.media.dtmf)
            call.offered_in_2xx = make_offer(local, port, only, origin=call.origin)
            call.local_sdp = call.offered_in_2xx
            m = call.offered_in_2xx.media[0]
            codec = only.codecs[0]
            pt = int(m.formats[0])
            dtmf = next((p for p, (n, r, _) in m.rtpmap().items() if n == "telephone-event" and r == codec.clock_rate),
                        None)
            call.negotiated = Negotiated(codec, pt, dtmf, None, None, only.ptime, "sendrecv", False, 0)
        else:
            call.local_sdp, call.negotiated = answer(call.offer, local, port, self.config.media, origin=call.origin)
        return call.negotiated

    def accept(self, call: SipCall, now: float) -> list[CoreOutput]:
        """Send the 200 with our SDP (``negotiate`` first) and wait for the ACK.
        A call that ended meanwhile (CANCEL while the pipeline was built) sends nothing."""
        if call.state not in (CallState.INCOMING, CallState.RINGING):
            return []
        if call.local_sdp is None:
            raise SipUsageError("accept before negotiate")
        call.state = CallState.ANSWERED
        call.dialog.state = DialogState.CONFIRMED
        ok = self._response(call, call.invite, 200, sdp=call.local_sdp)
        assert isinstance(call.tx, ServerInviteTransaction)  # INCOMING and RINGING are incoming calls'
        return self._send_2xx(call, call.tx, ok, now)

    def reject(self, call: SipCall, status: int, now: float, *, reason: str | None = None,
               retry_after: int | None = None) -> list[CoreOutput]:
        """A final error to the INVITE (486, 503, 488, ...); the call ends."""
        if call.state not in (CallState.INCOMING, CallState.RINGING):
            return []
        extra = [("Retry-After", str(retry_after))] if retry_after is not None else []
        resp = make_response(call.invite, status, reason, to_tag=call.id.local_tag, extra=extra)
        return [*self._respond(call.tx, resp, now), *self._end(call, f"rejected with {status}")]

    def hang_up(self, call: SipCall, now: float, reason: str = "hung up") -> list[CoreOutput]:
        """End the call from our side: BYE once answered, else 480 to the INVITE."""
        if call.state in (CallState.INCOMING, CallState.RINGING):
            resp = make_response(call.invite, 480, "Temporarily Unavailable", to_tag=call.id.local_tag)
            return [*self._respond(call.tx, resp, now), *self._end(call, reason)]
        if call.state is CallState.ENDED:
            return []
        return [*self._bye(call, now), *self._end(call, reason)]

    # -- dispatch ---------------------------------------------------------------

    def _dispatch(self, outputs: list[Output], now: float) -> list[CoreOutput]:
        out: list[CoreOutput] = []
        for o in outputs:
            if isinstance(o, RequestReceived):
                try:
                    out += self._request(o, now)
                except SipParseError as exc:  # a header validation let through, read only now
                    self._count("malformed")
                    if o.transaction is not None and not o.transaction.terminated:
                        out += self._respond(o.transaction, make_response(o.request, 400, f"Bad Request ({exc})"[:120],
                                                                          to_tag=new_tag()), now)
            elif isinstance(o, TransportError):
                call = self._call_of(o.transaction)
                out += self._end(call, "transport error") if call is not None else []
            elif isinstance(o, ResponseReceived | TransactionTimeout):
                continue  # our BYEs: the call ended when we sent them
            else:
                out.append(o)
        return out

    def _request(self, ev: RequestReceived, now: float) -> list[CoreOutput]:
        req, tx = ev.request, ev.transaction
        if tx is None:
            return self._ack(req, now)
        error = validate_request(req, self.config.policy)
        if error is not None:
            self._count(f"answered {error.status}")
            return self._respond(tx, error, now)
        method = req.method
        if method == "OPTIONS":
            return self._respond(tx, self._capabilities(make_response(req, 200, to_tag=req.to.tag or new_tag())), now)
        if method == "CANCEL":
            return self._cancel(req, tx, ev.cancels, now)
        if method == "INVITE" and req.to.tag is None:
            return self._invite(req, tx, ev.source, now)
        call = self.calls.get(DialogId.of_request(req)) if req.to.tag else None
        if call is None or call.state is CallState.ENDED:
            return self._respond(tx, make_response(req, 481, to_tag=req.to.tag or new_tag()), now)
        if not call.dialog.in_order(req):
            return self._respond(tx, make_response(req, 500, "Server Internal Error (CSeq out of order)"), now)
        if method == "BYE":
            return self._peer_bye(call, req, tx, now)
        if method == "INFO":
            return self._info(call, req, tx, now)
        return self._reoffer(call, req, tx, now)  # re-INVITE or UPDATE

    def _invite(self, req: Request, tx: ServerTransaction, source: Address, now: float) -> list[CoreOutput]:
        assert isinstance(tx, ServerInviteTransaction)
        tag = new_tag()
        if len(self.calls) >= self.config.max_calls:
            self._count("answered 503")
            return self._respond(tx, make_response(req, 503, to_tag=tag, extra=[("Retry-After", "5")]), now)
        if len(req.contacts) > 1:  # none is RFC 2543's way (the From is the target); two are an error
            return self._respond(tx, make_response(req, 400, "Bad Request (Contact: exactly one needed)", to_tag=tag),
                                 now)
        offer, error = self._offer_of(req, tag)
        if error is not None:
            return self._respond(tx, error, now)
        origin = Origin("voxline", str(secrets.randbelow(2**31)), 1, Connection.of(self.config.host))
        call = SipCall(Dialog.as_uas(req, tag), req, tx, source, tx.reliable, offer, origin)
        self.calls[call.id] = call
        return [IncomingCall(call)]

    def _offer_of(self, req: Request, tag: str) -> tuple[SessionDescription | None, Response | None]:
        """The SDP a request carries, or the error it earns (400 naming the body, 415)."""
        if not req.body:
            return None, None
        ct = req.content_type
        if ct is None or ct.mime != SDP:
            return None, make_response(req, 415, to_tag=tag, extra=[("Accept", SDP)])
        try:
            return SessionDescription.parse(req.body), None
        except SdpError as exc:
            self._count("malformed")
            return None, make_response(req, 400, f"Bad Request (body: {exc})"[:120], to_tag=tag)

    def _ack(self, req: Request, now: float) -> list[CoreOutput]:
        call = self.calls.get(DialogId.of_request(req)) if req.to.tag else None
        if call is None or call.pending is None or req.cseq.number != call.pending.cseq.number:
            self._count("stray ACK")
            return []
        call.pending = call.pending_tx = None
        call.deadlines.cancel("2xx", "ack")
        out: list[CoreOutput] = []
        if call.offered_in_2xx is not None:
            offered, call.offered_in_2xx = call.offered_in_2xx, None
            try:
                call.negotiated = accept_answer(offered, SessionDescription.parse(req.body),
                                                MediaPolicy(codecs=(call.negotiated.codec,) if call.negotiated
                                                            else self.config.media.codecs))
            except (SdpError, NoCodec) as exc:
                return [*self._bye(call, now), *self._end(call, f"no usable answer in the ACK: {exc}")]
            if call.state is CallState.CONFIRMED:
                out.append(MediaChanged(call, call.negotiated))
        if call.state is CallState.ANSWERED:
            call.state = CallState.CONFIRMED
            out.append(CallConfirmed(call))
        return out

    def _cancel(self, req: Request, tx: ServerTransaction, target: ServerInviteTransaction | None, now: float
                ) -> list[CoreOutput]:
        if target is None:
            return self._respond(tx, make_response(req, 481, to_tag=new_tag()), now)
        call = self._call_of(target)
        tag = call.id.local_tag if call is not None else new_tag()
        out = self._respond(tx, make_response(req, 200, to_tag=tag), now)
        if target.state is State.PROCEEDING:  # no final yet: the INVITE ends 487 (§9.2)
            out += self._respond(target, make_response(target.request, 487, to_tag=tag), now)
            if call is not None:
                out += self._end(call, end_reason(HANGUP, "CANCEL"))
        return out

    def _peer_bye(self, call: SipCall, req: Request, tx: ServerTransaction, now: float) -> list[CoreOutput]:
        out = self._respond(tx, make_response(req, 200), now)
        if call.tx.state is State.PROCEEDING:  # §15.1.2: a BYE before the answer ends the INVITE too
            out += self._respond(call.tx, make_response(call.invite, 487, to_tag=call.id.local_tag), now)
        return [*out, *self._end(call, end_reason(HANGUP, "BYE"))]

    def _info(self, call: SipCall, req: Request, tx: ServerTransaction, now: float) -> list[CoreOutput]:
        if not req.body:
            return self._respond(tx, make_response(req, 200), now)  # RFC 6086 §4.2.2: an empty INFO is fine
        ct = req.content_type
        if ct is None or ct.mime != DTMF_RELAY:
            return self._respond(tx, make_response(req, 415, extra=[("Accept", DTMF_RELAY)]), now)
        try:
            digit, duration = parse_dtmf_relay(req.body)
        except SipParseError as exc:
            self._count("malformed")
            return self._respond(tx, make_response(req, 400, f"Bad Request ({exc})"[:120]), now)
        return [*self._respond(tx, make_response(req, 200), now), DtmfReceived(call, digit, duration)]

    def _reoffer(self, call: SipCall, req: Request, tx: ServerTransaction, now: float) -> list[CoreOutput]:
        """A re-INVITE or an UPDATE: a target refresh, with or without a new offer."""
        is_invite = req.method == "INVITE"
        if call.state in (CallState.INCOMING, CallState.RINGING):
            # RFC 3311 §5.2: the INVITE's offer is not answered yet.
            return self._respond(tx, make_response(req, 500, "Server Internal Error (offer pending)",
                                                   extra=[("Retry-After", "1")]), now)
        if call.pending is not None or call.offered_in_2xx is not None:
            self._count("answered 491")  # an INVITE exchange on this dialog is unfinished (glare)
            return self._respond(tx, make_response(req, 491), now)
        offer, error = self._offer_of(req, call.id.local_tag)
        if error is not None:
            return self._respond(tx, error, now)
        call.dialog.refresh_target(req)
        negotiated = call.negotiated
        assert negotiated is not None and call.local_sdp is not None
        media = call.local_sdp.media[negotiated.index]
        local = call.local_sdp.connection or Connection.of(self.config.host)
        call.origin = Origin(call.origin.username, call.origin.session_id, call.origin.version + 1,
                             call.origin.connection)
        events: list[CoreOutput] = []
        if offer is not None:
            try:
                sdp, got = answer(offer, local, media.port, self.config.media, origin=call.origin,
                                  keep=negotiated.codec)
            except NoCodec as exc:  # §14.2: the session goes on unchanged
                return self._respond(tx, make_response(req, 488, f"Not Acceptable Here ({exc})"[:120]), now)
            call.local_sdp, call.negotiated = sdp, got
            events.append(MediaChanged(call, got))
        elif is_invite:  # a re-INVITE without an offer: we offer in the 2xx, the ACK answers
            only = MediaPolicy(codecs=(negotiated.codec,), ptime=negotiated.ptime, dtmf=negotiated.dtmf_pt is not None)
            call.offered_in_2xx = call.local_sdp = make_offer(local, media.port, only, origin=call.origin)
        ok = self._response(call, req, 200, sdp=call.local_sdp if (offer is not None or is_invite) else None)
        if is_invite:
            assert isinstance(tx, ServerInviteTransaction)
            return [*self._send_2xx(call, tx, ok, now), *events]
        return [*self._respond(tx, ok, now), *events]

    # -- 2xx reliability, BYE, ending ---------------------------------------------------

    def _send_2xx(self, call: SipCall, tx: ServerInviteTransaction, ok: Response, now: float) -> list[CoreOutput]:
        call.pending, call.pending_tx = ok, tx
        call.interval = self.config.timers.t1
        if not call.reliable:
            call.deadlines.set("2xx", now + call.interval)
        call.deadlines.set("ack", now + 64 * self.config.timers.t1)
        return self._respond(tx, ok, now)

    def _call_timer(self, call: SipCall, name: str, when: float) -> list[CoreOutput]:
        if call.pending is None:
            return []
        if name == "2xx":
            call.interval = min(call.interval * 2, self.config.timers.t2)
            call.deadlines.set("2xx", when + call.interval)
            tx = call.pending_tx
            if tx is not None and tx.state is State.ACCEPTED:
                return self._respond(tx, call.pending, when)
            return [Send(call.pending, call.source)]
        self._count("no ACK")  # §13.3.1.4: no ACK in 64*T1: the dialog is ended with a BYE
        return [*self._bye(call, when), *self._end(call, end_reason(PEER_GONE, "no ACK for the 2xx"))]

    def _bye(self, call: SipCall, now: float) -> list[CoreOutput]:
        cfg = self.config
        bye = call.dialog.new_request("BYE", via=via_value(cfg.host, cfg.port, transport_of(call.reliable)))
        _, out = self.layer.request(bye, self._next_hop(call), now, reliable=call.reliable)
        return list(out)

    def next_hop(self, call: SipCall) -> Address:
        """Where the call's in-dialog requests go."""
        return self._next_hop(call)

    def _next_hop(self, call: SipCall) -> Address:
        uri = call.dialog.next_hop()
        if isinstance(uri, SipUri) and _is_ip(uri.host):
            return (uri.host.strip("[]"), uri.port or 5060)
        return call.source  # a name we would have to resolve: the address the call came from

    def _end(self, call: SipCall, reason: str) -> list[CoreOutput]:
        if call.state is CallState.ENDED:
            return []
        call.state = CallState.ENDED
        call.ended = reason
        call.dialog.state = DialogState.TERMINATED
        call.deadlines.clear()
        self.calls.pop(call.id, None)
        return [CallEnded(call, reason)]

    # -- helpers ----------------------------------------------------------------

    def _respond(self, tx: ServerTransaction | ClientInviteTransaction, resp: Response, now: float
                 ) -> list[CoreOutput]:
        if tx.terminated or isinstance(tx, ClientInviteTransaction):  # a call we placed has no INVITE to answer
            return []
        return list(self.layer.respond(tx, resp, now))

    def _response(self, call: SipCall, req: Request, status: int, *, sdp: SessionDescription | None = None
                  ) -> Response:
        resp = make_response(req, status, to_tag=call.id.local_tag)
        if 100 < status < 300:
            resp.headers.add("Contact", self.config.contact_for(transport_of(call.reliable)))
            if req.method == "INVITE" and call.invite is req:
                for rr in req.headers.get_all("Record-Route"):
                    resp.headers.add("Record-Route", rr)
        if status >= 200:
            self._capabilities(resp)
        if sdp is not None:
            resp.set_body(bytes(sdp), SDP)
        return resp

    def _capabilities(self, resp: Response) -> Response:
        resp.headers.add("Allow", ", ".join(sorted(self.config.policy.methods)))
        resp.headers.add("Accept", f"{SDP}, {DTMF_RELAY}")
        return resp

    def _call_of(self, tx: object) -> SipCall | None:
        return next((c for c in self.calls.values() if c.tx is tx or c.pending_tx is tx), None)

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


def _is_ip(host: str) -> bool:
    return is_ip(host.strip("[]"))
