"""The transports' front doors, mounted on the control app.

Each door registered in ``voxline.transports.DOORS`` contributes HTTP routes
(authenticated, validated against the door's own schemas, and described in the
OpenAPI document like every other route) and/or a listener started with the app.
``CallService`` is what a door is given: admission (the one every front door
shares) and ``open`` (the runtime builds the call's pipeline on the transport).

Errors say whose fault, the same for every door: ``Refused`` is 429 (this caller's rate, or its
concurrent or pending sessions, or its tenant's) or 503 + Retry-After (capacity, draining, not ready — including a shared
resource at its limit while the call was built, e.g. the Silero batcher full);
``BadRequest`` is 400 naming its field; a timeout 504; anything else is a fault
inside voxline: 500, logged with its reason.

Per call: every door route that creates a session (its 201) takes an optional
``record`` (boolean) in its body, added to its schema here: true records the
call, false does not, whatever ``record`` and ``record_agents`` say. It reaches
the session at admission (the request's context), so no door needs to know.
"""

from __future__ import annotations

import contextvars
import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from voxline.transports import DOORS
from voxline.transports.base import BadRequest, Conflict, Door, DoorRoute, NotFound, Refused, Transport, Unauthorized

from .admission import Admission, capacity_error
from .auth import AuthError, Authenticator, Identity
from .errors import ApiError, json_response, read_json
from .logs import bind_session
from .openapi import Reply, Route, validate
from .session import Session

__all__ = ["CallService", "load_doors", "door_routes", "door_schemas", "refusal"]

log = logging.getLogger(__name__)

# The request's ``record`` while its door handler runs (None: the configuration decides).
_RECORD: contextvars.ContextVar[bool | None] = contextvars.ContextVar("record", default=None)
RECORD_FIELD = {"type": "boolean",
                "description": "Record this call (stereo WAV), or not, whatever the configuration says"}


class CallService:
    """The service as a door sees it (``voxline.transports.base.Service``)."""

    def __init__(self, config: Any, admission: Admission, runtime: Callable[[], Any], agents: tuple[str, ...],
                 authenticator: Authenticator | None = None):
        self._config = config
        self.admission = admission
        self._runtime = runtime  # the runtime is created with the app's resources: looked up late
        self._agents = agents
        self._auth = authenticator

    @property
    def agents(self) -> tuple[str, ...]:
        return self._agents

    @property
    def config(self) -> Any:
        return self._config

    def authenticate(self, token: str | None) -> Identity:
        if self._auth is None:
            self._auth = Authenticator(self._config)
        try:
            return self._auth.authenticate(token or "")
        except AuthError as exc:
            raise Unauthorized(exc.message) from exc

    def admit(self, transport: str, agent: str | None, *, tenant: str, key: str | None) -> Session:
        kind = agent or self._config.agent
        if kind not in self._agents:
            raise BadRequest("agent", f"agent must be one of {', '.join(self._agents)}, not {kind!r}")
        session = self.admission.admit(transport, kind, tenant=tenant, key=key)
        record = _RECORD.get()
        if record is not None:
            session.extra["record"] = record
        return session

    def session(self, session_id: str, tenant: str) -> Session | None:
        return self.admission.registry.get(session_id, tenant)

    async def open(self, call: Any, transport: Transport) -> None:
        bind_session(call.id)  # the transport's libraries log from tasks started here on
        try:
            await self._runtime().open(call, transport)
        except Exception as exc:
            refused = capacity_error(exc)
            if refused is not None:
                self.admission.count(refused, transport.kind)
                raise refused from exc
            raise


def load_doors(config: Any, registry: Mapping[str, str] = DOORS) -> list[Door]:
    doors = []
    for name, target in registry.items():
        module, _, attr = target.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        door = factory(config)
        if door.name != name:
            raise RuntimeError(f"door {target} calls itself {door.name!r}, registered as {name!r}")
        doors.append(door)
    return doors


def door_schemas(doors: list[Door], agents: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for door in doors:
        if door.schemas is not None:
            out.update(door.schemas(agents))
    for door in doors:  # a request that creates a session may ask for (or against) its recording
        for r in door.routes:
            schema = out.get(r.request or "")
            if 201 in r.replies and schema is not None and "properties" in schema:
                out[r.request or ""] = {**schema, "properties": {**schema["properties"], "record": RECORD_FIELD}}
    return out


def refusal(exc: Refused) -> ApiError:
    """A refusal in HTTP's terms."""
    if exc.caller_limit:  # this caller's share, not the service's state
        return ApiError(429, exc.code, exc.reason, headers={"Retry-After": str(exc.retry_after)})
    return ApiError(503, exc.code if exc.code != "capacity" else "refused", exc.reason,
                    headers={"Retry-After": str(exc.retry_after)})


_R429 = Reply("This token's session creation rate, or its (or its tenant's) concurrent or pending "
              "sessions, at their limit", headers=("Retry-After",))
_R503 = Reply("At capacity, draining, or still starting", headers=("Retry-After",))


def door_routes(doors: list[Door], service: Callable[[web.Request], CallService],
                identity: Callable[[web.Request], Any], schemas: Callable[[web.Request], dict[str, Any]]) -> list[Route]:
    """Each door's routes as the app's ``Route``s (documented like the rest)."""
    routes = []
    for door in doors:
        for r in door.routes:
            replies = {status: Reply(desc, schema, headers=("Location",) if status == 201 else ())
                       for status, (desc, schema) in r.replies.items()}
            replies.setdefault(429, _R429)
            replies.setdefault(503, _R503)
            routes.append(Route(r.method, r.path, _handler(r, service, identity, schemas), r.name, r.summary,
                                auth=r.auth, request=r.request, replies=replies, tag=door.name,
                                links=("getSession", "say", "interrupt", "sessionEvents", "endSession")
                                if 201 in r.replies else ()))
    return routes


def _handler(route: DoorRoute, service: Callable[[web.Request], CallService], identity: Callable[[web.Request], Any],
             schemas: Callable[[web.Request], dict[str, Any]]) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = {}
        if route.request is not None:
            body = await read_json(request, service(request).config.http_body_timeout)
            validate(schemas(request), route.request, body)
        token = _RECORD.set(body["record"] if isinstance(body.get("record"), bool) else None)
        try:
            result = await route.handler(request, body, service(request), identity(request))
        except Refused as exc:
            raise refusal(exc) from exc
        except BadRequest as exc:
            raise ApiError(400, "invalid_" + exc.field, exc.message, exc.field) from exc
        except Conflict as exc:
            raise ApiError(409, exc.code, exc.message) from exc
        except NotFound as exc:
            raise ApiError(404, "not_found", str(exc), "session_id") from exc
        except TimeoutError as exc:
            raise ApiError(504, "timeout", f"{route.path}: not answered in time") from exc
        finally:
            _RECORD.reset(token)
        if isinstance(result, web.StreamResponse):
            return result
        status, data, headers = result
        return json_response(data, status, headers)

    return handle
