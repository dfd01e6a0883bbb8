"""API errors: one JSON shape for every failure, and the request-body limits.

Every error a client can see is ``{"error": {"code", "message", "field"}}`` with
``field`` naming the offending input (``"sdp"``, ``"agent"``, ``"text"``) or null.
Handlers raise ``ApiError``; ``error_middleware`` also turns aiohttp's own
exceptions (unknown route 404, wrong method 405, body too large 413) into the same
shape, so a client never has to parse an HTML error page.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

__all__ = [
    "ApiError",
    "ClientGone",
    "MAX_BODY",
    "error_body",
    "error_middleware",
    "json_response",
    "read_json",
]

log = logging.getLogger(__name__)

# The largest request body accepted (bytes). An SDP offer is the largest legitimate
# body; its own limit (64 KiB, see openapi.SDP_MAX) sits below this one so that a
# JSON-escaped offer at the SDP limit still fits and the two limits are told apart.
MAX_BODY = 128 * 1024
BODY_TIMEOUT = 10.0  # s for a request body to arrive (config: http_body_timeout)
CLIENT_GONE = 499  # the status counted (never sent) when the client left mid-request

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A failure the client should see, with its HTTP status and the field at fault."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


class ClientGone(Exception):
    """The client closed its connection before the request was read: not a server error."""


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    # orjson: several times faster than json and handles numpy scalars from stats.
    body = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY, default=str)
    return web.Response(
        body=body, status=status, headers=headers, content_type="application/json"
    )


def _error_response(err: ApiError) -> web.Response:
    return json_response(error_body(err.code, err.message, err.field), err.status, err.headers)


# aiohttp's exceptions by status -> our code names.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        response = _error_response(err)
        if err.status in (401, 408):
            response.force_close()  # an unauthenticated or stalled client keeps no connection open
        return response
    except (ClientGone, ConnectionError) as exc:
        # Nobody to answer; counted as 499 by the metrics, logged for debugging only.
        log.debug("%s %s: the client went away (%s)", request.method, request.path, exc)
        response = web.Response(status=CLIENT_GONE)
        response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like pass through
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = {
            404: f"no route {request.path}",
            405: f"method {request.method} not allowed on {request.path}",
            413: f"request body larger than {MAX_BODY} bytes",
        }.get(exc.status, exc.reason)
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return json_response(error_body(code, message), exc.status, headers)
    except Exception:
        # A bug, not the client's fault; the log has the traceback, the client a 500.
        log.exception("%s %s failed", request.method, request.path)
        return json_response(error_body("internal", "internal server error"), 500)


async def read_json(request: web.Request, timeout: float = BODY_TIMEOUT) -> dict[str, Any]:
    """The request body as a JSON object, or ApiError 400/408/413/415; ClientGone if
    the client left before sending it."""
    ctype = request.content_type
    if ctype not in ("application/json", "application/octet-stream", ""):
        # octet-stream/absent: aiohttp's default when a client sends no Content-Type.
        raise ApiError(415, "unsupported_media_type", f"expected application/json, got {ctype}")
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()  # aiohttp enforces client_max_size (MAX_BODY) here
    except web.HTTPRequestEntityTooLarge as exc:
        raise ApiError(413, "body_too_large", f"request body larger than {MAX_BODY} bytes") from exc
    except TimeoutError as exc:
        err = ApiError(408, "body_timeout", f"the request body did not arrive within {timeout:g} s")
        raise err from exc
    except ConnectionError as exc:
        raise ClientGone(str(exc) or type(exc).__name__) from exc
    if not raw:
        raise ApiError(400, "invalid_json", "request body is empty; expected a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    return data
