"""SIP dialogs (RFC 3261 §12): the state two UAs keep between INVITE and BYE.

A dialog is identified by Call-ID, local tag and remote tag. It holds the
remote target (the peer's Contact, updated by target refresh requests), the
route set (Record-Route, in request order at the UAS and reversed at the UAC,
§12.1), the local CSeq (incremented per request we send) and the remote CSeq
(a request below it is out of order: 500, §12.2.2). ``new_request`` builds an
in-dialog request the way §12.2.1.1 says, loose routing (lr) or strict.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .address import NameAddr, parse_name_addr
from .errors import SipUsageError
from .headers import MAX_CSEQ
from .message import Request, Response
from .uri import SipUri, Uri

__all__ = ["Dialog", "DialogId", "DialogState"]


@dataclass(frozen=True, slots=True)
class DialogId:
    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_request(cls, req: Request) -> DialogId:
        """The dialog a received in-dialog request belongs to (its To tag is ours)."""
        return cls(req.call_id, req.to.tag or "", req.from_.tag or "")


class DialogState(enum.Enum):
    EARLY = "early"  # provisional with a To tag sent; no 2xx yet
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(slots=True)
class Dialog:
    id: DialogId
    local: NameAddr  # our From in requests we send (with our tag)
    remote: NameAddr  # their address, with their tag
    remote_target: Uri
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    state: DialogState = DialogState.EARLY

    @classmethod
    def as_uas(cls, invite: Request, local_tag: str, local_seq: int = 0) -> Dialog:
        """§12.1.1: the dialog a UAS creates with its response to ``invite``. An
        RFC 2543 INVITE may have no Contact (RFC 4475 §3.4.1): then the remote
        target is its From, as RFC 2543 had it."""
        contacts = invite.contacts
        if len(contacts) > 1:
            raise SipUsageError("a dialog needs exactly one Contact in the request")
        return cls(
            DialogId(invite.call_id, local_tag, invite.from_.tag or ""),
            local=invite.to.with_tag(local_tag),
            remote=invite.from_,
            remote_target=contacts[0].uri if contacts else invite.from_.uri,
            route_set=[str(r) for r in invite.record_routes],
            local_seq=local_seq,
            remote_seq=invite.cseq.number,
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response) -> Dialog:
        """§12.1.2: the dialog a UAC creates from a 2xx (or a 1xx with a To tag)."""
        contacts = response.contacts
        target = contacts[0].uri if contacts else request.uri
        return cls(
            DialogId(request.call_id, request.from_.tag or "", response.to.tag or ""),
            local=request.from_,
            remote=response.to,
            remote_target=target,
            route_set=[str(r) for r in reversed(response.record_routes)],
            local_seq=request.cseq.number,
            state=DialogState.CONFIRMED if response.status < 300 else DialogState.EARLY,
        )

    def in_order(self, req: Request) -> bool:
        """§12.2.2: a request whose CSeq is below the last one seen is out of order.
        (ACK and CANCEL carry the CSeq of what they acknowledge or cancel.)"""
        if req.method in ("ACK", "CANCEL"):
            return True
        n = req.cseq.number
        if self.remote_seq is not None and n < self.remote_seq:
            return False
        self.remote_seq = n if self.remote_seq is None or n > self.remote_seq else self.remote_seq
        return True

    def refresh_target(self, req: Request) -> None:
        """A target refresh request (re-INVITE, UPDATE) replaces the remote target."""
        contacts = req.contacts
        if len(contacts) == 1:
            self.remote_target = contacts[0].uri

    def next_hop(self) -> Uri:
        """Where an in-dialog request goes first: the first route, else the remote target."""
        return parse_name_addr(self.route_set[0], "Route").uri if self.route_set else self.remote_target

    def new_request(self, method: str, *, via: str, contact: str | None = None) -> Request:
        """An in-dialog request (§12.2.1.1); ``via`` is the whole Via value, with its branch."""
        if self.state is DialogState.TERMINATED:
            raise SipUsageError(f"{method} on a terminated dialog")
        if method != "ACK" and method != "CANCEL":
            if self.local_seq >= MAX_CSEQ:
                raise SipUsageError("the local CSeq is exhausted")
            self.local_seq += 1
        uri, routes = self.remote_target, list(self.route_set)
        if routes:
            first = parse_name_addr(routes[0], "Route").uri
            if not (isinstance(first, SipUri) and first.is_loose_router):
                # Strict routing: the first route becomes the Request-URI, the target the last route.
                uri, routes = first, [*routes[1:], f"<{self.remote_target}>"]
        req = Request(method=method, uri=uri)
        h = req.headers
        h.add("Via", via)
        h.add("Max-Forwards", "70")
        for r in routes:
            h.add("Route", r)
        h.add("From", str(self.local))
        h.add("To", str(self.remote))
        h.add("Call-ID", self.id.call_id)
        h.add("CSeq", f"{self.local_seq} {method}")
        if contact is not None:
            h.add("Contact", contact)
        h.add("Content-Length", "0")
        return req
