"""One SIP user agent: the UAS and UAC cores, transfers and registration on one
transaction layer, sans-I/O.

The transport glue feeds ``UserAgent`` what arrives (``receive``) and the time
(``handle_timeout`` at ``next_timeout()``) and carries out what comes back, as
it does for ``uas.UasCore`` alone. Each output of the layer goes to its owner:

- responses, timeouts and transport errors of our INVITEs and CANCELs -> ``uac``
- those of a REFER, and every NOTIFY -> ``transfers``
- those of a REGISTER -> ``registration``
- a 401/407 to a BYE -> the BYE again with credentials (a trunk may challenge it)
- everything else (incoming calls, in-dialog requests of every call, answered
  outgoing ones included) -> ``uas``
"""

from __future__ import annotations

from .calls import CallEvent
from .events import Address, Output, ResponseReceived, Send
from .ids import transport_of
from .message import Request, Response
from .refer import TransferUpdate, Transfers
from .register import Registered, Registration, RegistrationFailed
from .auth import AuthFailed
from .uac import CallAnswered, CallProgress, OutgoingEnded, UacConfig, UacCore, UacEvent
from .uas import UasCore

__all__ = ["UaOutput", "UserAgent"]

UaOutput = Output | CallEvent | UacEvent | TransferUpdate | Registered | RegistrationFailed


class UserAgent:
    def __init__(self, uas: UasCore, uac_config: UacConfig) -> None:
        self.uas = uas
        self.layer = uas.layer
        self.uac = UacCore(uac_config, uas)
        self.transfers = Transfers(self.layer, self.uac.auth, uac_config.via)
        self.registration: Registration | None = None

    # -- input ------------------------------------------------------------------

    def receive(self, msg: Request | Response, source: Address, now: float, *, reliable: bool = False
                ) -> list[UaOutput]:
        return self._route(self.layer.receive(msg, source, now, reliable=reliable), now)

    def next_timeout(self) -> float | None:
        times = [t for t in (self.uas.next_timeout(), self.uac.next_timeout(), self.transfers.next_timeout(),
                             self.registration.next_timeout() if self.registration else None) if t is not None]
        return min(times) if times else None

    def handle_timeout(self, now: float) -> list[UaOutput]:
        out: list[UaOutput] = self._route(self.layer.handle_timeout(now), now)
        out += self.uas.handle_timeout(now, layer=False)
        out += self._route(self.uac.handle_timeout(now), now)
        out += self.transfers.handle_timeout(now)
        if self.registration is not None:
            out += self.registration.handle_timeout(now)
        return out

    def transport_error(self, send: Send, now: float) -> list[UaOutput]:
        if send.transaction is None:
            return []
        return self._route(self.layer.transport_error(send.transaction), now)

    # -- routing ----------------------------------------------------------------------

    def _route(self, outputs: list[Output] | list[Output | UacEvent], now: float) -> list[UaOutput]:
        out: list[UaOutput] = []
        for o in outputs:
            if isinstance(o, Send | CallProgress | CallAnswered | OutgoingEnded):
                out.append(o)
            elif self.uac.owns(o):
                out += self.uac.handle(o, now)
            elif self.transfers.owns(o):
                out += self.transfers.handle(o, now)
            elif self.registration is not None and self.registration.owns(o):
                out += self.registration.handle(o, now)
            elif isinstance(o, ResponseReceived) and o.response.status in (401, 407) \
                    and o.transaction is not None and o.transaction.method == "BYE":
                out += self._bye_again(o, now)
            else:
                out += self.uas.dispatch([o], now)
        return out

    def _bye_again(self, o: ResponseReceived, now: float) -> list[UaOutput]:
        tx = o.transaction
        assert tx is not None
        try:
            bye = self.uac.auth.retry(tx.request, o.response, via=self.uac.config.via(transport_of(tx.reliable)))
        except AuthFailed:
            return []  # the call has ended on our side already
        _, sent = self.layer.request(bye, tx.peer, now, reliable=tx.reliable)
        return list(sent)
