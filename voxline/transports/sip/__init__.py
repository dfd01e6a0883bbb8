"""voxline's SIP, sans-I/O: pure code over bytes and time, no sockets, no asyncio.

- ``message`` / ``framing``: parse and serialize requests and responses (RFC 3261
  §7, §25), one datagram or a Content-Length framed stream; ``headers``,
  ``address``, ``via``, ``uri`` and ``grammar`` hold the header grammars.
- ``validate``: the responses a UAS owes a malformed or unsupported request.
- ``timers`` / ``transaction`` / ``client`` / ``server`` / ``layer``: RFC 3261 §17
  transactions as state machines fed messages and time, returning messages to
  send and events (``events``); ``layer`` matches messages to them.
- ``dialog``: RFC 3261 §12 dialogs and in-dialog requests; ``uas`` the UAS core
  (incoming calls, their errors, 2xx reliability) over ``calls``' call state;
  ``uac`` the UAC core (outgoing calls: INVITE, CANCEL, the ACK of a 2xx);
  ``refer`` blind transfer (REFER, NOTIFY sipfrag); ``register`` registration
  with refresh; ``ua`` all of them on one transaction layer.
- ``digest``: HTTP digest (RFC 2617, 7616, 8760) for answering challenges;
  ``auth`` a request sent again with the credentials a 401/407 asks for.
- ``sdp`` / ``offer_answer``: RFC 4566 session descriptions, RFC 3264 negotiation.

Every parser raises one error family (``errors.SipParseError``, ``sdp.SdpError``).
"""
