"""What the transaction layer hands back: messages to send and events for the TU.

Nothing here does I/O: ``Send`` is a request to the transport glue to put a
message on the wire towards ``dest``; the other outputs are for the transaction
user (the UA core, dialogs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .message import Request, Response

if TYPE_CHECKING:
    from .client import ClientTransaction
    from .server import ServerInviteTransaction, ServerTransaction
    from .transaction import Transaction

__all__ = [
    "Address",
    "Output",
    "RequestReceived",
    "ResponseReceived",
    "Send",
    "StrayDropped",
    "TransactionTimeout",
    "TransportError",
]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Send:
    """Put ``message`` on the wire towards ``dest``. ``transaction`` is whose it is,
    so a failure to send can be reported back (``transport_error``). ``reliable``:
    over a stream (TCP); None, as the transaction says (or, with none, over a
    connection if one is open to ``dest``)."""

    message: Request | Response
    dest: Address
    transaction: Transaction | None = None
    reliable: bool | None = None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for the TU; ``transaction`` is None for a stray one (a 2xx retransmission)."""

    response: Response
    transaction: ClientTransaction | None


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request (or an ACK for a 2xx, which has no server transaction).

    ``source`` is where it came from; ``cancels`` is the INVITE server
    transaction a CANCEL matches (§9.2), if any.
    """

    request: Request
    transaction: ServerTransaction | None
    source: Address
    cancels: ServerInviteTransaction | None = None


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B, F (no final response) or H (no ACK) fired: the transaction failed."""

    transaction: Transaction
    timer: str


@dataclass(frozen=True, slots=True)
class TransportError:
    """The transport could not send the transaction's message; it has ended."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class StrayDropped:
    """A message no transaction or TU should see (bad response Via count, ACK for nothing)."""

    message: Request | Response
    reason: str


Output = Send | ResponseReceived | RequestReceived | TransactionTimeout | TransportError | StrayDropped
