"""HTTP connections: how many may be open, how long one may sit idle, and what a
client that goes away or sends garbage costs the rest.

Idle and slow heads: aiohttp closes a connection that has no request in progress
for ``keepalive_timeout`` — from the moment it opens as well as between requests,
and whether nothing arrives or a request head trickles in a byte at a time (its
timer is reset only when a whole request has been handled). voxline passes
``http_idle_timeout`` as that value (its default is an hour): an idle or
slowloris connection holds its descriptor for seconds, not forever. (A client
flooding connects may see a few "connections" that are never closed: those whose
handshake overflowed the listen backlog, which the kernel never completed; they
hold nothing here.)

The cap: aiohttp accepts every connection. ``capped`` wraps the server's protocol
factory; past ``max_connections`` open at once a new connection is answered 503
with ``Retry-After`` and closed, so descriptors remain for /healthz and for calls.
``fit_descriptors`` raises the process's soft descriptor limit to its hard limit
and lowers the cap to fit what is left after the calls' own sockets.

Bodies: a request body that does not arrive within ``http_body_timeout`` is a 408
(``errors.read_json``). Garbage: aiohttp logs every request it cannot parse as an
ERROR with a traceback, which lets anyone fill the logs; ``MalformedRequests``
counts them instead and keeps them out of the log.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["capped", "CappedSite", "MalformedRequests", "fit_descriptors", "REFUSAL"]

log = logging.getLogger(__name__)

_REFUSAL_BODY = b'{"error":{"code":"too_many_connections","message":"connection limit reached","field":null}}'
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)
CALL_DESCRIPTORS = 4  # sockets a call may hold besides its HTTP request (ICE, RTP, RTCP)
RESERVE = 64  # descriptors for logs, models, the listening sockets


class _Refuse(asyncio.Protocol):
    """Answers one connection with the 503 and closes it; reads nothing."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both have write.
        transport.write(REFUSAL)  # type: ignore[attr-defined]
        transport.close()


def capped(server: web.Server, limit: int, on_refused: Callable[[], None] | None = None) -> Callable[[], Any]:
    """``server``'s protocol factory, answering 503 once ``limit`` connections are open."""

    def factory() -> asyncio.Protocol:
        if limit > 0 and len(server.connections) >= limit:
            if on_refused is not None:
                on_refused()
            return _Refuse()
        return server()

    return factory


class CappedSite(web.TCPSite):
    """A TCP site whose listener takes at most ``limit`` connections at once."""

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, *, limit: int,
                 on_refused: Callable[[], None] | None = None) -> None:
        super().__init__(runner, host, port)
        self._limit = limit
        self._on_refused = on_refused

    async def start(self) -> None:
        # TCPSite.start's own body, with the factory wrapped: BaseSite.start
        # registers the site with the runner, then the listener is created.
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            capped(server, self._limit, self._on_refused), self._host, self._port,
            backlog=self._backlog, reuse_address=self._reuse_address, reuse_port=self._reuse_port)


def fit_descriptors(max_connections: int, max_sessions: int) -> int:
    """Raise the soft descriptor limit to the hard one; the connection cap that fits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the descriptor limit from %d: %s", soft, exc)
    room = soft - RESERVE - CALL_DESCRIPTORS * max_sessions
    if room < max_connections:
        fitted = max(16, room)
        log.warning("max_connections %d lowered to %d: the descriptor limit is %d", max_connections, fitted, soft)
        return fitted
    return max_connections


class MalformedRequests(logging.Filter):
    """On aiohttp's server logger: count requests it could not parse; log none of them."""

    def __init__(self, on_malformed: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.count = 0
        self._on_malformed = on_malformed

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            self.count += 1
            if self._on_malformed is not None:
                self._on_malformed()
            return False
        return True
