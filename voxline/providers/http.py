"""HTTP plumbing shared by the remote providers.

- **One client session per event loop.** An ``aiohttp.ClientSession`` owns a
  connection pool; creating one per request throws away TLS sessions and keep-alive
  connections, which is most of a vendor's time to first byte. A session is bound to
  the loop that created it, so the registry is keyed by loop (weakly: a closed,
  collected loop drops out). This registry is the one module-level mutable object
  in the providers, on purpose; ``close_shared_session()`` belongs in the service's
  shutdown (an aiohttp ``cleanup_ctx``) and in test teardown.
- **Deadlines on the loop's clock.** ``CallDeadlines`` turns a ``Deadlines`` into
  absolute times for one call: time to first result, idle time between results,
  and the total. Every await on the network goes through ``CallDeadlines.run`` so
  that a missed deadline is a ``ProviderTimeout`` naming the phase.
- **Status to error.** 408/425/429/5xx are retryable (another attempt or provider
  may succeed), any other 4xx is not (a bad key stays bad). The vendor's own error
  text goes into the message, truncated: an operator reading a log needs
  ``invalid_api_key``, not ``401``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncGenerator, Awaitable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import numpy as np
import orjson

from .base import PCM, Deadlines, ProviderError, ProviderTimeout

__all__ = [
    "HttpConfig",
    "HttpStatusError",
    "CallDeadlines",
    "shared_session",
    "close_shared_session",
    "request_timeout",
    "status_error",
    "vendor_message",
    "post_streaming",
    "iter_body",
    "stream_pcm16",
    "MAX_ERROR_BODY",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# An error body past this is cut: it is only read to quote it in a message.
MAX_ERROR_BODY = 16 * 1024
# Characters of a vendor's error text kept in an exception message.
MAX_ERROR_TEXT = 300
_RETRYABLE_4XX = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Connection pool of the shared session (one per process and loop)."""

    limit: int = 200  # connections in all
    limit_per_host: int = 64  # per vendor host: one stream holds one connection
    keepalive_timeout: float = 30.0  # idle pooled connections live this long
    dns_cache_ttl: int = 300


# The documented shared registry: loop -> its client session.
_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)


def shared_session(config: HttpConfig | None = None) -> aiohttp.ClientSession:
    """The running loop's pooled session, created on first use.

    ``config`` applies when the session is created; later calls share that pool.
    """
    loop = asyncio.get_running_loop()
    session = _SESSIONS.get(loop)
    if session is None or session.closed:
        cfg = config or HttpConfig()
        connector = aiohttp.TCPConnector(
            limit=cfg.limit,
            limit_per_host=cfg.limit_per_host,
            keepalive_timeout=cfg.keepalive_timeout,
            ttl_dns_cache=cfg.dns_cache_ttl,
        )
        # No session-wide timeout: each call passes its own from its Deadlines.
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )
        _SESSIONS[loop] = session
        log.debug("created shared HTTP session for loop %#x", id(loop))
    return session


async def close_shared_session() -> None:
    """Close the running loop's shared session (idempotent)."""
    session = _SESSIONS.pop(asyncio.get_running_loop(), None)
    if session is not None and not session.closed:
        await session.close()


def request_timeout(deadlines: Deadlines) -> aiohttp.ClientTimeout:
    """aiohttp's part of the deadlines: establishing the connection.

    Reads are bounded by ``CallDeadlines`` instead, which knows whether the call
    is waiting for its first result or idling between results.
    """
    return aiohttp.ClientTimeout(
        total=None, connect=deadlines.connect, sock_connect=deadlines.connect
    )


class HttpStatusError(ProviderError):
    """A vendor answered with an HTTP error status."""

    def __init__(
        self, provider: str, status: int, detail: str, *, retry_after: float | None = None
    ) -> None:
        retryable = status >= 500 or status in _RETRYABLE_4XX
        super().__init__(provider, f"HTTP {status}: {detail}", retryable=retryable)
        self.status = status
        self.retry_after = retry_after


def _truncate(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _message_of(obj: object) -> str | None:
    """The human part of a vendor's JSON error, across the shapes vendors use."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, list):
        # FastAPI-style validation errors (ElevenLabs 422): [{"loc", "msg", "type"}].
        parts = [m for m in (_message_of(x) for x in obj[:3]) if m]
        return "; ".join(parts) or None
    if not isinstance(obj, dict):
        return None
    for key in ("error", "detail"):  # OpenAI-style {"error": {...}}, ElevenLabs {"detail": {...}}
        if key in obj:
            inner = _message_of(obj[key])
            if inner:
                code = obj[key].get("code") or obj[key].get("status") if isinstance(obj[key], dict) else None
                return f"{inner} ({code})" if isinstance(code, str) and code not in inner else inner
    if "err_msg" in obj:  # Deepgram REST: {"err_code", "err_msg", "request_id"}
        code = obj.get("err_code")
        return f"{obj['err_msg']} ({code})" if code else str(obj["err_msg"])
    for key in ("message", "msg", "description", "reason"):
        if isinstance(obj.get(key), str):
            return str(obj[key])
    return None


def vendor_message(body: bytes) -> str:
    """A vendor's error body as one short line."""
    if not body.strip():
        return "(empty body)"
    try:
        found = _message_of(orjson.loads(body))
    except orjson.JSONDecodeError:
        found = None
    return _truncate(found if found else body.decode("utf-8", "replace"))


def status_error(
    provider: str, status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> HttpStatusError:
    """Map an HTTP error status and the vendor's body to a ``ProviderError``."""
    detail = vendor_message(body)
    retry_after: float | None = None
    if headers is not None:
        # Deepgram also names the error in a header (useful when the body is empty,
        # e.g. a refused WebSocket handshake).
        dg = headers.get("dg-error")
        if dg and detail == "(empty body)":
            detail = _truncate(dg)
        raw = headers.get("Retry-After")
        if raw is not None:
            try:
                retry_after = float(raw)
            except ValueError:
                retry_after = None  # an HTTP date: rare from these APIs, not worth parsing
    return HttpStatusError(provider, status, detail, retry_after=retry_after)


class CallDeadlines:
    """Absolute deadlines of one streaming call, on the event loop's clock."""

    __slots__ = ("provider", "deadlines", "start", "_first_seen", "_last", "_loop")

    def __init__(self, provider: str, deadlines: Deadlines) -> None:
        self._loop = asyncio.get_running_loop()
        self.provider = provider
        self.deadlines = deadlines
        self.start = self._loop.time()
        self._first_seen = False
        self._last = self.start

    @property
    def got_result(self) -> bool:
        return self._first_seen

    def result(self) -> None:
        """A result (token, audio) arrived: the first-result deadline is met."""
        self._first_seen = True
        self._last = self._loop.time()

    def progress(self) -> None:
        """The peer sent something meaningful: restart the idle timer (once results flow)."""
        self._last = self._loop.time()

    def current(self) -> tuple[float, str, float]:
        """(absolute deadline, phase, seconds) that binds now."""
        d = self.deadlines
        total_at = self.start + d.total
        if self._first_seen:
            at, phase, secs = self._last + d.idle, "data (idle)", d.idle
        else:
            at, phase, secs = self.start + d.first_result, "first result", d.first_result
        if total_at <= at:
            return total_at, "completion (total)", d.total
        return at, phase, secs

    async def run(self, aw: Awaitable[T]) -> T:
        """Await ``aw`` within the binding deadline; a miss is ``ProviderTimeout``."""
        at, phase, secs = self.current()
        try:
            async with asyncio.timeout_at(at) as cm:
                return await aw
        except TimeoutError:
            if cm.expired():
                raise ProviderTimeout(self.provider, phase, secs) from None
            raise


async def post_streaming(
    provider: str,
    session: aiohttp.ClientSession,
    url: str,
    *,
    calls: CallDeadlines,
    body: bytes,
    headers: Mapping[str, str],
    params: Mapping[str, str] | None = None,
) -> aiohttp.ClientResponse:
    """POST and return the response once its headers are in, or raise.

    Waiting for the headers counts against the first-result deadline: a vendor
    that accepts the connection and then thinks for ten seconds is as late as one
    that sends headers at once and no data.

    One immediate retry when a *pooled* connection turns out dead before any
    response (the server closed it while idle): llama.cpp's server advertises
    keep-alive yet closes the connection after each streamed answer, so the next
    turn would otherwise fail on the stale socket. A fresh connection that fails
    to connect is not retried.
    """
    for attempt in (1, 2):
        try:
            resp = await calls.run(
                session.post(
                    url,
                    data=body,
                    headers=dict(headers),
                    params=params,
                    timeout=request_timeout(calls.deadlines),
                )
            )
            break
        except aiohttp.ConnectionTimeoutError:
            raise ProviderTimeout(provider, "connect", calls.deadlines.connect) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            if attempt == 2 or isinstance(e, aiohttp.ClientConnectorError):
                raise ProviderError(provider, f"request failed: {e!r}") from e
            log.info("x %s: pooled connection was dead (%r); retrying once", provider, e)
        except aiohttp.ClientError as e:
            raise ProviderError(provider, f"request failed: {e!r}") from e
    if resp.status >= 400:
        try:
            err_body = await calls.run(resp.content.read(MAX_ERROR_BODY))
        except (ProviderError, aiohttp.ClientError):
            err_body = b""
        finally:
            resp.close()
        raise status_error(provider, resp.status, err_body, resp.headers)
    return resp


async def iter_body(
    resp: aiohttp.ClientResponse, calls: CallDeadlines
) -> AsyncGenerator[bytes, None]:
    """The response body as it arrives, each read within the binding deadline.

    The caller marks results on ``calls``; this only reads. A connection that
    drops mid-body is a retryable ``ProviderError``.
    """
    provider = calls.provider
    while True:
        try:
            data = await calls.run(resp.content.readany())
        except aiohttp.ClientPayloadError as e:
            raise ProviderError(provider, f"connection dropped mid-stream: {e!r}") from e
        except aiohttp.ClientError as e:
            raise ProviderError(provider, f"read failed: {e!r}") from e
        if not data:
            return
        yield data


async def stream_pcm16(
    provider: str,
    session: aiohttp.ClientSession,
    url: str,
    *,
    calls: CallDeadlines,
    body: bytes,
    headers: Mapping[str, str],
    params: Mapping[str, str] | None = None,
) -> AsyncGenerator[PCM, None]:
    """POST for raw s16le audio and yield int16 arrays as the bytes arrive.

    TCP splits a body anywhere, so a read may end halfway through a sample: the odd
    byte is carried to the next read. Each non-empty chunk counts as a result for
    the deadlines. Ending early (cancel, ``aclose``, failure) closes the connection
    rather than returning a half-read socket to the pool.
    """
    resp = await post_streaming(
        provider, session, url, calls=calls, body=body, headers=headers, params=params
    )
    clean = False
    try:
        carry = b""
        async with aclosing(iter_body(resp, calls)) as chunks:
            async for data in chunks:
                if carry:
                    data = carry + data
                n = len(data) & ~1
                carry = data[n:]
                if n:
                    calls.result()
                    # astype copies: frombuffer alone would alias aiohttp's read buffer.
                    yield np.frombuffer(data[:n], dtype="<i2").astype(np.int16)
        if carry:
            log.warning("x %s: body ended on half a sample; dropped 1 byte", provider)
        clean = True
    finally:
        if clean:
            resp.release()
        else:
            resp.close()
