"""Sessions and their registry.

A session owns its pipeline, its transport endpoint and its agent, and moves
through created -> connecting -> active -> ending -> ended (with a reason).
The registry admits sessions atomically up to a limit (admission is synchronous:
on one event loop, check-and-insert cannot interleave) and, when full or draining,
refuses with ``Refused`` so each transport can say so in its own terms (HTTP 503
with Retry-After, SIP 486/503, WebSocket close 1013) instead of degrading every
call.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from voxline.media.pipeline import Pipeline
from voxline.transports.base import Refused

from .events import EventBus

__all__ = ["SessionState", "Session", "SessionRegistry", "Refused", "Endpoint", "AgentLike"]

log = logging.getLogger(__name__)

END_TIMEOUT = 5.0


class SessionState(enum.Enum):
    CREATED = "created"
    CONNECTING = "connecting"
    ACTIVE = "active"
    ENDING = "ending"
    ENDED = "ended"


class Endpoint(Protocol):
    """What a session needs of its transport (``voxline.transports.base.Transport``)."""

    async def close(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class AgentLike(Protocol):
    """What the control API needs of a session's agent."""

    @property
    def state(self) -> Any: ...


class Session:
    def __init__(self, registry: "SessionRegistry", tenant: str, transport: str, agent: str) -> None:
        self.id = secrets.token_hex(8)
        self.tenant = tenant
        self.transport = transport
        self.agent_kind = agent
        self.registry = registry
        self.state = SessionState.CREATED
        self.end_reason: str | None = None
        self.created_at = time.time()
        self.ended_at: float | None = None
        self.pipeline: Pipeline | None = None
        self.agent: AgentLike | None = None
        self.endpoint: Endpoint | None = None
        self.events = EventBus(self.id)
        self.extra: dict[str, Any] = {}
        self._ending: asyncio.Task[None] | None = None
        self._log = logging.LoggerAdapter(log, {"session_id": self.id})

    def set_state(self, state: SessionState) -> None:
        if self.state is state or self.state is SessionState.ENDED:
            return
        self.state = state
        self.events.publish("session", state=state.value, reason=self.end_reason)
        self._log.info("session %s", state.value)

    def pipeline_ended(self, reason: str) -> None:
        """``Pipeline(on_end=...)``: the media path ended (a stage failed, or it drained)."""
        if self.state not in (SessionState.ENDING, SessionState.ENDED):
            self.end_soon(f"pipeline: {reason}")

    def end_soon(self, reason: str) -> None:
        """End from a callback that cannot await (a transport's close, a failure)."""
        if self._ending is None and self.state is not SessionState.ENDED:
            self._ending = asyncio.get_running_loop().create_task(self.end(reason))

    async def end(self, reason: str, timeout: float = END_TIMEOUT) -> None:
        if self.state is SessionState.ENDED:
            return
        if self.state is SessionState.ENDING and self._ending is not None and self._ending is not asyncio.current_task():
            await asyncio.wait_for(asyncio.shield(self._ending), timeout)
            return
        if self.end_reason is None:
            self.end_reason = reason
        self.set_state(SessionState.ENDING)
        if self.pipeline is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pipeline.stop(self.end_reason), timeout)
        if self.endpoint is not None:
            try:
                await asyncio.wait_for(self.endpoint.close(), timeout)
            except Exception:
                self._log.exception("closing the endpoint failed")
        self.ended_at = time.time()
        self.set_state(SessionState.ENDED)
        self.events.close()
        self.registry._release(self)

    def info(self, detail: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state.value,
            "transport": self.transport,
            "agent": self.agent_kind,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "end_reason": self.end_reason,
        }
        if detail:
            stats = self.pipeline.stats() if self.pipeline is not None else {}
            out["stats"] = {
                "stages": stats.get("stages", []),
                "links": stats.get("links", []),
                "head_dropped": stats.get("head_dropped", 0),
            }
            out["latency"] = stats.get("latency", {})
            state = self.agent.state if self.agent is not None else None
            out["agent_state"] = state.value if isinstance(state, enum.Enum) else state
            if self.endpoint is not None:
                out["transport_stats"] = self.endpoint.stats()
        return out


class SessionRegistry:
    def __init__(
        self,
        max_sessions: int,
        on_end: Callable[[Session], None] | None = None,
        retry_after: int = 5,
    ) -> None:
        self.max_sessions = max_sessions
        self.retry_after = retry_after
        self._sessions: dict[str, Session] = {}
        self._on_end = on_end
        self.draining = False
        self.admitted = 0
        self.refused = 0
        self.ended_by_reason: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def admit(self, tenant: str, transport: str, agent: str) -> Session:
        if self.draining:
            self.refused += 1
            raise Refused("draining", "shutting down", self.retry_after)
        if len(self._sessions) >= self.max_sessions:
            self.refused += 1
            raise Refused("capacity", f"at capacity ({self.max_sessions} sessions)", self.retry_after)
        session = Session(self, tenant, transport, agent)
        self._sessions[session.id] = session
        self.admitted += 1
        return session

    def get(self, session_id: str, tenant: str | None = None) -> Session | None:
        s = self._sessions.get(session_id)
        if s is None or (tenant is not None and s.tenant != tenant):
            return None  # another tenant's session does not exist, as far as they know
        return s

    def list(self, tenant: str | None = None) -> list[Session]:
        return [s for s in self._sessions.values() if tenant is None or s.tenant == tenant]

    def _release(self, session: Session) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        reason = (session.end_reason or "unknown").split(":")[0]
        self.ended_by_reason[reason] = self.ended_by_reason.get(reason, 0) + 1
        if self._on_end is not None:
            self._on_end(session)

    async def drain(self, timeout: float) -> None:
        """Stop admitting; let calls finish up to ``timeout``; then end the rest."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._sessions and loop.time() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.gather(
            *(s.end("shutdown") for s in list(self._sessions.values())), return_exceptions=True
        )


