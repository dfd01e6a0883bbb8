"""One incoming call as the UAS core keeps it, and the events the core reports about calls.

The glue (the SIP door) reads these; only ``uas.UasCore`` changes them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from voxline.codecs import Codec

from .dialog import Dialog, DialogId
from .errors import SipParseError
from .events import Address
from .message import Request, Response
from .offer_answer import Negotiated
from .sdp import Origin, SessionDescription
from .client import ClientInviteTransaction
from .server import ServerInviteTransaction
from .timers import Deadlines

__all__ = ["CallConfirmed", "CallEnded", "CallEvent", "CallState", "DtmfReceived", "IncomingCall", "MediaChanged",
           "SipCall", "parse_dtmf_relay"]

_DIGITS = frozenset("0123456789*#ABCD")


class CallState(enum.Enum):
    INCOMING = "incoming"  # INVITE received, not answered
    RINGING = "ringing"
    ANSWERED = "answered"  # 2xx sent, no ACK yet
    CONFIRMED = "confirmed"
    ENDED = "ended"


@dataclass(eq=False, slots=True)
class SipCall:
    """One call, as the UAS core keeps it: an incoming one, or one we placed once
    it was answered (``uac``: its INVITE, and the client transaction that sent it)."""

    dialog: Dialog
    invite: Request
    tx: ServerInviteTransaction | ClientInviteTransaction
    source: Address  # where the INVITE came from (or went): where requests go when the target is a name
    reliable: bool
    offer: SessionDescription | None
    origin: Origin
    state: CallState = CallState.INCOMING
    negotiated: Negotiated | None = None
    local_sdp: SessionDescription | None = None
    ended: str | None = None
    pending: Response | None = None  # the 2xx re-sent until its ACK
    pending_tx: ServerInviteTransaction | None = None
    offered_in_2xx: SessionDescription | None = None  # delayed offer: the ACK carries the answer
    deadlines: Deadlines = field(default_factory=Deadlines)
    interval: float = 0.0

    @property
    def id(self) -> DialogId:
        return self.dialog.id

    @property
    def codec(self) -> Codec | None:
        return self.negotiated.codec if self.negotiated is not None else None


@dataclass(frozen=True, slots=True)
class IncomingCall:
    call: SipCall


@dataclass(frozen=True, slots=True)
class CallConfirmed:
    call: SipCall


@dataclass(frozen=True, slots=True)
class MediaChanged:
    call: SipCall
    negotiated: Negotiated


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    call: SipCall
    digit: str
    duration: float  # seconds


@dataclass(frozen=True, slots=True)
class CallEnded:
    call: SipCall
    reason: str


CallEvent = IncomingCall | CallConfirmed | MediaChanged | DtmfReceived | CallEnded


def parse_dtmf_relay(body: bytes) -> tuple[str, float]:
    """``Signal=5\\r\\nDuration=160`` (ms) -> ("5", 0.16). SipParseError naming the body."""
    fields: dict[str, str] = {}
    for line in body.decode("utf-8", "replace").splitlines():
        k, sep, v = line.partition("=")
        if sep:
            fields[k.strip().lower()] = v.strip()
    digit = fields.get("signal", "").upper()
    if len(digit) != 1 or digit not in _DIGITS:
        raise SipParseError(f"dtmf-relay Signal is not a digit: {digit!r}", header="body")
    duration = fields.get("duration", "100")
    if not duration.isdigit() or not 0 < int(duration) <= 60000:
        raise SipParseError(f"dtmf-relay Duration is not milliseconds: {duration!r}", header="body")
    return digit, int(duration) / 1000
