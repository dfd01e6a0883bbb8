"""The control API: an aiohttp application built from a table of routes.

``ROUTES`` is data: (method, path, handler, auth, schemas, documented replies).
``create_app`` registers exactly those routes and serves the OpenAPI document
generated from them (see openapi.py), so the two cannot drift. State lives on the
app under typed ``web.AppKey``s; the runtime and the sessions each have their own
``cleanup_ctx``. Nothing is module-global.

The runtime's ``start()`` (model loading) runs as a background task so the port
binds at once: ``/healthz`` answers while models load and ``/readyz`` says 503
until they are loaded and the server is listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSCloseCode, web

from voxline import __version__
from voxline.agent.control import AgentControl
from voxline.config import ConfigError, ServiceConfig
from voxline.records.writer import WriterCollector

from voxline.transports.base import Door, Transport

from .admission import Admission
from .auth import AuthError, Authenticator, Identity
from .calls import DELIVERY_PATTERN, RECORDS
from .connections import MalformedRequests
from .doors import CallService, door_routes, door_schemas, load_doors
from .errors import MAX_BODY, ApiError, error_middleware, json_response, read_json
from .events import Subscription
from .line import sip_transfers
from .metrics import CONTENT_TYPE, Metrics
from .openapi import SESSION_ID_PATTERN, Reply, Route, build_document, schemas_for, validate
from .ratelimit import RateLimiter
from .record_routes import records_ctx, records_from
from .record_routes import routes as record_routes
from .session import Caps, Session, SessionRegistry, SessionState
from .stream import SEND_TIMEOUT, stream_events, watch_client

__all__ = [
    "ROUTES",
    "RuntimeLike",
    "RuntimeFactory",
    "ServiceState",
    "create_app",
    "mark_listening",
    "CONFIG", "SESSIONS", "RUNTIME", "METRICS", "STATE", "ADMISSION", "SERVICE", "DOORS", "RECORDS",
]

log = logging.getLogger(__name__)

DEFAULT_AGENTS = ("assistant", "echo", "transcribe")
EVENT_DEPTH = 256  # events buffered per WebSocket client before the oldest are dropped
SUBPROTOCOL = "voxline.v1"
TOKEN_SUBPROTOCOL = "bearer."  # browsers cannot set headers on a WebSocket
BUSY_RETRY = 5  # s, Retry-After when not ready or a session's subscribers are full
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class RuntimeLike(Protocol):
    """What the app needs of voxline.control.runtime.Runtime (tests pass a fake)."""

    @property
    def agents(self) -> tuple[str, ...]: ...

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def readiness(self) -> dict[str, bool]: ...
    async def open(self, session: Session, transport: Transport) -> Any: ...


RuntimeFactory = Callable[..., RuntimeLike]  # (config, registry, observer) -> runtime


@dataclass(slots=True)
class ServiceState:
    """Mutable per-app state: listening, the runtime's start, open event streams."""

    listening: bool = False
    start_task: asyncio.Task[None] | None = None
    streams: set[Subscription] = field(default_factory=set)

    def runtime_started(self) -> bool:
        t = self.start_task
        return t is not None and t.done() and not t.cancelled() and t.exception() is None


CONFIG = web.AppKey("config", ServiceConfig)
SESSIONS = web.AppKey("sessions", SessionRegistry)
RUNTIME = web.AppKey("runtime", RuntimeLike)
FACTORY: web.AppKey[RuntimeFactory] = web.AppKey("runtime_factory")
METRICS = web.AppKey("metrics", Metrics)
AUTH = web.AppKey("auth", Authenticator)
LIMITER = web.AppKey("limiter", RateLimiter)
STATE = web.AppKey("state", ServiceState)
ADMISSION = web.AppKey("admission", Admission)
SERVICE = web.AppKey("service", CallService)
DOORS: web.AppKey[list[Door]] = web.AppKey("doors")
SCHEMAS: web.AppKey[dict[str, dict[str, Any]]] = web.AppKey("schemas")
DOCUMENT: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
STATIC: web.AppKey[dict[str, tuple[bytes, str]]] = web.AppKey("static")  # name -> (body, content type)
IDENTITY = web.RequestKey("identity", Identity)


def mark_listening(app: web.Application, listening: bool = True) -> None:
    """Whoever binds the port says so; /readyz is 503 until then."""
    app[STATE].listening = listening


# -- helpers ------------------------------------------------------------------


def _session(request: web.Request) -> Session:
    sid = request.match_info["session_id"]
    session = request.app[SESSIONS].get(sid, request[IDENTITY].tenant)
    if session is None:  # also another tenant's: it does not exist for this caller
        raise ApiError(404, "not_found", f"no session {sid}", "session_id")
    return session


def _accepting(session: Session, action: str) -> Any:
    agent = session.agent
    if session.state is not SessionState.ACTIVE or agent is None:
        raise ApiError(409, "not_active", f"session {session.id} is {session.state.value}, not active")
    if isinstance(agent, AgentControl):  # Echo and Transcribe have say/interrupt, raising Unsupported
        supported = action in agent.capabilities
    else:
        supported = callable(getattr(agent, action, None))
    if not supported:
        raise ApiError(409, "unsupported", f"agent {session.agent_kind} cannot {action}")
    return agent


def _token_from_subprotocols(request: web.Request) -> str | None:
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(TOKEN_SUBPROTOCOL):
            return proto[len(TOKEN_SUBPROTOCOL) :]
    return None


def _authenticate(request: web.Request) -> Identity:
    auth = request.app[AUTH]
    try:
        header = request.headers.get("Authorization")
        if header is None and request.headers.get("Upgrade", "").lower() == "websocket":
            token = _token_from_subprotocols(request)
            if token is not None:
                return auth.authenticate(token)
        return auth.authenticate_header(header)
    except AuthError as exc:
        raise ApiError(401, "unauthorized", exc.message, headers={"WWW-Authenticate": exc.challenge}) from exc


# -- handlers -----------------------------------------------------------------


async def list_sessions(request: web.Request) -> web.StreamResponse:
    sessions = request.app[SESSIONS].list(request[IDENTITY].tenant)
    return json_response({"sessions": [s.info() for s in sessions]})


async def get_session(request: web.Request) -> web.StreamResponse:
    return json_response(_session(request).info(detail=True))


async def end_session(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    await session.end("deleted")  # each step of end() has its own deadline
    return web.Response(status=204)


async def say(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    body = await read_json(request, request.app[CONFIG].http_body_timeout)
    validate(request.app[SCHEMAS], "SayRequest", body)
    _accepting(session, "say").say(body["text"])
    return json_response({"session_id": session.id, "accepted": True}, 202)


async def interrupt(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    _accepting(session, "interrupt").interrupt()
    return json_response({"session_id": session.id, "accepted": True}, 202)


async def session_events(request: web.Request) -> web.StreamResponse:
    """WebSocket: recent history, then each event as a JSON text frame, until the session ends."""
    session = _session(request)
    ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), heartbeat=20.0, max_msg_size=4096)
    if not ws.can_prepare(request).ok:
        raise ApiError(426, "upgrade_required", "this route is a WebSocket", headers={"Upgrade": "websocket"})
    try:
        sub = session.events.subscribe(depth=EVENT_DEPTH)
    except OverflowError as exc:
        raise ApiError(503, "busy", str(exc), headers={"Retry-After": str(BUSY_RETRY)}) from exc
    streams = request.app[STATE].streams
    streams.add(sub)
    reader: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        reader = asyncio.create_task(watch_client(ws, sub), name=f"events-reader:{session.id}")
        await stream_events(ws, sub, request.app[METRICS])
    except (ConnectionError, TimeoutError) as exc:  # the client went away, or stopped reading
        log.debug("events stream of %s ended: %s", session.id, exc or type(exc).__name__,
                  extra={"session_id": session.id})
    finally:
        sub.close()
        streams.discard(sub)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if ws.prepared and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=WSCloseCode.OK, message=b"session ended"), SEND_TIMEOUT)
    return ws


async def healthz(request: web.Request) -> web.StreamResponse:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    app = request.app
    state = app[STATE]
    checks = {"listening": state.listening, "runtime": state.runtime_started(),
              "admitting": not app[SESSIONS].draining}
    if RUNTIME in app:
        try:
            checks.update({k: bool(v) for k, v in app[RUNTIME].readiness().items()})
        except Exception:
            log.exception("runtime readiness failed")
            checks["runtime"] = False
    ready = all(checks.values())
    return json_response({"ready": ready, "checks": checks}, 200 if ready else 503)


async def metrics(request: web.Request) -> web.StreamResponse:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[DOCUMENT])


_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; script-src 'self'; style-src 'self'; "
        "img-src 'self' data:; media-src 'self' blob: mediastream:"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _asset(request: web.Request, name: str) -> web.StreamResponse:
    found = request.app[STATIC].get(name)
    if found is None:
        raise ApiError(404, "not_found", f"no asset {name}", "name")
    body, ctype = found
    return web.Response(body=body, headers={**_PAGE_HEADERS, "Content-Type": ctype})


async def index(request: web.Request) -> web.StreamResponse:
    return _asset(request, "index.html")


async def static(request: web.Request) -> web.StreamResponse:
    return _asset(request, request.match_info["name"])


# -- the table ------------------------------------------------------------------

_R409 = Reply("The session is not active, or its agent cannot do this")
_ACCEPTED = Reply("Accepted", "Accepted")

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/sessions", list_sessions, "listSessions", "This tenant's sessions",
          replies={200: Reply("Sessions", "SessionList")}),
    Route("GET", "/v1/sessions/{session_id}", get_session, "getSession",
          "A session with per-stage stats, drops, and budget and actual latency per turn",
          replies={200: Reply("The session", "SessionDetail")}),
    Route("DELETE", "/v1/sessions/{session_id}", end_session, "endSession", "End a session",
          replies={204: Reply("Ended", None)}),
    Route("POST", "/v1/sessions/{session_id}/say", say, "say", "Have the agent say a text",
          request="SayRequest", replies={202: _ACCEPTED, 409: _R409}),
    Route("POST", "/v1/sessions/{session_id}/interrupt", interrupt, "interrupt",
          "Stop what the agent is saying", replies={202: _ACCEPTED, 409: _R409}),
    Route("GET", "/v1/sessions/{session_id}/events", session_events, "sessionEvents",
          "WebSocket (subprotocol voxline.v1; token as subprotocol bearer.<token>): recent events, "
          "then each event as a JSON text frame; closes when the session ends",
          replies={101: Reply("Switching to WebSocket", None), 426: Reply("Not a WebSocket upgrade"),
                   503: Reply("Too many subscribers on this session", headers=("Retry-After",))}),
    *record_routes(lambda r: r[IDENTITY].tenant, lambda r, call_id, tenant: r.app[SESSIONS].get(call_id, tenant)
                   is not None),
    Route("GET", "/healthz", healthz, "health", "The process is alive", auth=False,
          replies={200: Reply("Alive", "Health")}, tag="service"),
    Route("GET", "/readyz", readyz, "readiness", "Models loaded, port bound, admitting", auth=False,
          replies={200: Reply("Ready", "Readiness"), 503: Reply("Not ready", "Readiness")}, tag="service"),
    Route("GET", "/metrics", metrics, "metrics", "Prometheus metrics",
          replies={200: Reply("Prometheus text format", None, media=("text/plain",))}, tag="service"),
    Route("GET", "/openapi.json", openapi, "openapi", "This document", auth=False,
          replies={200: Reply("OpenAPI 3.1 document", "OpenApiDocument")}, tag="service"),
    Route("GET", "/", index, "demoPage", "The browser voice demo", auth=False,
          replies={200: Reply("HTML", None, media=("text/html",))}, tag="demo"),
    Route("GET", "/static/{name}", static, "staticAsset", "The demo page's scripts and styles", auth=False,
          replies={200: Reply("Asset", None, media=("text/javascript", "text/css", "text/html"))}, tag="demo"),
)


def _wrap(route: Route) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        if route.auth:
            request[IDENTITY] = _authenticate(request)
        return await route.handler(request)

    return handler


@web.middleware
async def _http_metrics(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    start = time.perf_counter()
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = getattr(request.match_info.route, "resource", None)
        route = resource.canonical if resource is not None else "unmatched"  # bounded label set
        method = request.method if request.method in METHODS else "other"
        m = request.app[METRICS]
        m.http_requests.labels(route, method, str(status)).inc()
        m.http_duration.labels(route, method).observe(time.perf_counter() - start)


# -- resources -------------------------------------------------------------------


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    metrics_ = app[METRICS]
    runtime = app[FACTORY](app[CONFIG], app[SESSIONS], metrics_.observe)
    app[RUNTIME] = runtime
    transfers = getattr(runtime, "transfers", None)
    if isinstance(transfers, dict):  # the agent's transfer tool, through the doors that can
        transfers.update(sip_transfers({d.name: d.handle for d in app[DOORS]}))
    provider_stats = getattr(runtime, "provider_stats", None)
    if provider_stats is not None:
        metrics_.watch_providers(provider_stats)
    state = app[STATE]
    state.start_task = asyncio.create_task(runtime.start(), name="runtime-start")
    state.start_task.add_done_callback(_report_start)
    yield
    if not state.start_task.done():
        state.start_task.cancel()
        with contextlib.suppress(BaseException):
            await state.start_task
    await runtime.stop()


def _report_start(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    if task.exception() is not None:
        log.error("runtime failed to start", exc_info=task.exception())
    else:
        log.info("runtime started")


async def _doors_ctx(app: web.Application) -> AsyncIterator[None]:
    started: list[Door] = []
    try:
        for door in app[DOORS]:
            if door.start is not None:
                await door.start(app[SERVICE])
            started.append(door)
        yield
    finally:
        for door in reversed(started):
            if door.stop is not None:
                try:
                    await door.stop()
                except Exception:
                    log.exception("stopping the %s door failed", door.name)


async def _malformed_ctx(app: web.Application) -> AsyncIterator[None]:
    # aiohttp's server logger is process-wide: each app adds its counting filter while it runs.
    logger = logging.getLogger("aiohttp.server")
    malformed = MalformedRequests(app[METRICS].http_malformed.inc)
    logger.addFilter(malformed)
    try:
        yield
    finally:
        logger.removeFilter(malformed)


async def _sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    # Runs before the runtime's cleanup (reverse order): calls end while their runtime is up.
    await app[SESSIONS].drain(0.0)


async def _close_streams(app: web.Application) -> None:
    # on_shutdown: event WebSockets would otherwise hold the server open until its timeout.
    for sub in list(app[STATE].streams):
        sub.close()


def _load_static() -> dict[str, tuple[bytes, str]]:
    types = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
             ".css": "text/css; charset=utf-8"}
    out: dict[str, tuple[bytes, str]] = {}
    root = importlib.resources.files("voxline.control").joinpath("static")
    if root.is_dir():
        for item in root.iterdir():
            suffix = "." + item.name.rsplit(".", 1)[-1]
            if item.is_file() and suffix in types:
                out[item.name] = (item.read_bytes(), types[suffix])
    return out


def create_app(
    config: ServiceConfig,
    runtime_factory: RuntimeFactory | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The control API app. ``runtime_factory`` defaults to voxline.control.runtime.Runtime."""
    if runtime_factory is None:
        from .runtime import Runtime  # heavy (models); imported only when actually serving

        runtime_factory = Runtime
    agents = tuple(getattr(runtime_factory, "agents", DEFAULT_AGENTS))
    if config.agent not in agents:
        raise ConfigError(f"agent must be one of {list(agents)}, got {config.agent!r}")
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_http_metrics, error_middleware])

    def session_ended(session: Session) -> None:
        app[METRICS].session_ended(session)

    app[CONFIG] = config
    app[FACTORY] = runtime_factory
    caps = Caps(per_key=config.max_sessions_per_token, per_tenant=config.max_sessions_per_tenant,
                pending_per_key=config.max_pending_per_token, pending_timeout=config.pending_timeout)
    app[SESSIONS] = SessionRegistry(config.max_sessions, on_end=session_ended, caps=caps)
    app[METRICS] = Metrics(app[SESSIONS])
    records = records_from(config)
    if records is not None:
        app[RECORDS] = records
        app[SESSIONS].on_admit = records.watch
        app[METRICS].registry.register(WriterCollector(records.writer))
    app[AUTH] = Authenticator(config)
    app[LIMITER] = RateLimiter(config.sessions_per_minute, config.session_burst, clock)
    app[STATE] = ServiceState()
    app[ADMISSION] = admission = Admission(app[SESSIONS], app[LIMITER], app[STATE].runtime_started)
    app[METRICS].watch_admission(admission)
    app[SERVICE] = CallService(config, admission, lambda: app[RUNTIME], agents, app[AUTH])
    app[DOORS] = doors = load_doors(config)
    app[SCHEMAS] = {**schemas_for(agents), **door_schemas(doors, agents)}
    assets = _load_static()
    app[STATIC] = assets
    routes = (*door_routes(doors, lambda r: r.app[SERVICE], lambda r: r.get(IDENTITY), lambda r: r.app[SCHEMAS]),
              *ROUTES)
    app[DOCUMENT] = build_document(routes, agents, __version__, tuple(assets), app[SCHEMAS])
    for route in routes:
        # A session id is routed only where it can be one, so a fixed path beside
        # it (/v1/sessions/rtp) is a resource of its own (its 405 names only its methods).
        pattern = SESSION_ID_PATTERN.strip("^$")
        path = route.path.replace("{session_id}", "{session_id:" + pattern + "}")
        path = path.replace("{call_id}", "{call_id:" + pattern + "}")
        path = path.replace("{delivery_id}", "{delivery_id:" + DELIVERY_PATTERN.strip("^$") + "}")
        app.router.add_route(route.method, path, _wrap(route))
    app.cleanup_ctx.append(records_ctx)
    app.cleanup_ctx.append(_malformed_ctx)
    app.cleanup_ctx.append(_runtime_ctx)
    app.cleanup_ctx.append(_doors_ctx)
    app.cleanup_ctx.append(_sessions_ctx)
    app.on_shutdown.append(_close_streams)
    return app

