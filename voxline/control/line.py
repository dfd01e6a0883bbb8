"""A session's line, as its agent may use it (``voxline.agent.toolbox.Line``).

The agent's built-in tools act on the call in the transport's own terms:

- ``hang_up``: the session ends, which closes its transport (SIP: BYE; a
  WebSocket stream: its close; WebRTC: the peer connection's close);
- ``transfer``: the transport's own way, looked up by the session's transport
  (``Transfers``: the SIP door's REFER), or the transport object's ``transfer``
  where it has one (a stream platform that can move a call from its media
  socket); a transport with neither is refused with a reason the agent can say;
- ``send_dtmf``: the transport's ``send_dtmf`` (RFC 4733 on RTP; ``Unsupported``
  elsewhere, with its reason).

A refusal is ``LineRefused``; nothing here raises anything else for a bad
request, and nothing blocks: the REFER and the BYE are sent by the door's tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from voxline.agent.toolbox import LineRefused
from voxline.transports.base import BadRequest, Conflict, Unsupported

from .session import Session, SessionState

__all__ = ["SessionLine", "Transfer", "Transfers", "sip_transfers"]

log = logging.getLogger(__name__)

# (session, target, check_only) -> None; raises BadRequest, Conflict or Unsupported when it cannot.
Transfer = Callable[[Any, str, bool], None]
Transfers = Mapping[str, Transfer]  # by the session's transport


class SessionLine:
    __slots__ = ("session", "_transfers")

    def __init__(self, session: Session, transfers: Transfers | None = None) -> None:
        self.session = session
        self._transfers = transfers if transfers is not None else {}

    def hang_up(self, reason: str) -> None:
        if self.session.state is not SessionState.ENDED:
            self.session.end_soon(reason)

    def check_transfer(self, target: str) -> None:
        self._transfer(target, check=True)

    def transfer(self, target: str) -> None:
        self._transfer(target, check=False)

    def _transfer(self, target: str, check: bool) -> None:
        s = self.session
        if s.state is not SessionState.ACTIVE:
            raise LineRefused(f"the call is {s.state.value}, so it cannot be transferred")
        how = self._transfers.get(s.transport)
        own = getattr(s.endpoint, "transfer", None)
        try:
            if how is not None:
                how(s, target, check)
            elif callable(own):
                if not check:
                    own(target)
            else:
                raise LineRefused(f"calls that come in over {s.transport} cannot be transferred from here")
        except (BadRequest, Conflict, Unsupported) as exc:
            raise LineRefused(f"the transfer cannot be made: {getattr(exc, 'message', None) or exc}") from exc

    def send_dtmf(self, digits: str) -> None:
        endpoint = self.session.endpoint
        send = getattr(endpoint, "send_dtmf", None)
        if self.session.state is not SessionState.ACTIVE or send is None:
            raise LineRefused("keys cannot be pressed on this call now")
        try:
            send(digits)
        except Unsupported as exc:
            raise LineRefused(f"keys cannot be pressed on this call: {exc}") from exc


def sip_transfers(doors: Mapping[str, Any]) -> dict[str, Transfer]:
    """The transfers the loaded doors offer: SIP's REFER through its door."""
    out: dict[str, Transfer] = {}
    sip = doors.get("sip")
    if sip is not None and hasattr(sip, "transfer"):
        from voxline.transports.sip_out import parse_target

        def refer(session: Any, target: str, check: bool) -> None:
            uri = parse_target(target, "target")  # BadRequest if it is not a sip: URI
            if not check:
                sip.transfer(session, uri)  # Conflict if not answered, or a transfer is under way

        out["sip"] = refer
    return out
