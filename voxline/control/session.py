"""Sessions and their registry.

A session owns its pipeline, its transport endpoint and its agent, and moves
through created -> connecting -> active -> ending -> ended (with a reason).
The registry admits sessions atomically up to a limit (admission is synchronous:
on one event loop, check-and-insert cannot interleave) and, when full or draining,
refuses with ``Refused`` so each transport can say so in its own terms (HTTP 503
with Retry-After, SIP 486/503, WebSocket close 1013) instead of degrading every
call.

No one caller may hold every slot: ``Caps`` bound the sessions one key (a token,
a SIP source) and one tenant hold at once, and separately the *pending* ones
(admitted, media not yet connected: an offer whose ICE never completes costs a
slot and a peer connection until it times out). A pending session that has not
connected within ``pending_timeout`` is ended ("connect timeout"), whatever its
transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from voxline.media.pipeline import Pipeline
from voxline.transports.base import Refused

from .events import EventBus
from .logs import bind_session

__all__ = ["SessionState", "Session", "SessionRegistry", "Refused", "Endpoint", "AgentLike", "Caps"]

log = logging.getLogger(__name__)

END_TIMEOUT = 5.0


class SessionState(enum.Enum):
    CREATED = "created"
    CONNECTING = "connecting"
    ACTIVE = "active"
    ENDING = "ending"
    ENDED = "ended"


PENDING = frozenset({SessionState.CREATED, SessionState.CONNECTING})


@dataclass(frozen=True, slots=True)
class Caps:
    """Concurrent-session caps below the registry's own limit; 0 means no cap."""

    per_key: int = 0
    per_tenant: int = 0
    pending_per_key: int = 0
    pending_timeout: float = 0.0  # s; 0: pending sessions are not timed out here


class Endpoint(Protocol):
    """What a session needs of its transport (``voxline.transports.base.Transport``)."""

    async def close(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class AgentLike(Protocol):
    """What the control API needs of a session's agent."""

    @property
    def state(self) -> Any: ...


class Session:
    def __init__(self, registry: "SessionRegistry", tenant: str, transport: str, agent: str,
                 key: str | None = None) -> None:
        self.id = secrets.token_hex(8)
        self.tenant = tenant
        self.key = key  # whose slot this is (a token id, a peer address), for the caps
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
        # A door whose media connects later than ``pending_timeout`` allows (a call
        # out rings first) sets this, on the loop's clock; the registry waits for it.
        self.connect_by: float | None = None
        self._ending: asyncio.Task[None] | None = None
        self._weak_end = False  # the pending end came from a callback (end_soon): an explicit end's reason wins
        self._log = logging.LoggerAdapter(log, {"session_id": self.id})

    def set_state(self, state: SessionState) -> None:
        if self.state is state or self.state is SessionState.ENDED:
            return
        was = self.state
        self.state = state
        if was in PENDING and state not in PENDING:
            self.registry._settled(self)
        self.events.publish("session", state=state.value, reason=self.end_reason)
        self._log.info("session %s", state.value)

    def pipeline_ended(self, reason: str) -> None:
        """``Pipeline(on_end=...)``: the media path ended (a stage failed, or it drained)."""
        if self.state not in (SessionState.ENDING, SessionState.ENDED):
            self.end_soon(f"pipeline: {reason}")

    def end_soon(self, reason: str) -> None:
        """End from a callback that cannot await (a transport's close, a failure)."""
        if self._ending is None and self.state is not SessionState.ENDED:
            self._weak_end = True
            self._ending = asyncio.get_running_loop().create_task(self.end(reason), name=f"end:{self.id}")
            self._ending.add_done_callback(_retrieve)

    async def end(self, reason: str, timeout: float = END_TIMEOUT) -> None:
        """End the session (idempotent). The first reason is kept, except that an
        explicit ``end`` overrules one a callback started (``end_soon``): the door
        that refuses an offer knows why the session ended better than the transport
        whose close that refusal caused."""
        if self.state is SessionState.ENDED:
            return
        bind_session(self.id)  # what the transport's libraries log while closing names the call
        ending = self._ending
        if ending is not None and not ending.done() and ending is not asyncio.current_task():
            if self._weak_end:
                self._weak_end = False
                self.end_reason = reason
            await asyncio.wait_for(asyncio.shield(ending), timeout)
            return
        if ending is None or ending.done():
            self._ending = asyncio.current_task()
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
        caps: Caps = Caps(),
        on_admit: Callable[[Session], object] | None = None,
    ) -> None:
        self.max_sessions = max_sessions
        self.retry_after = retry_after
        self.caps = caps
        self._per_key: Counter[str] = Counter()
        self._per_tenant: Counter[str] = Counter()
        self._pending: Counter[str] = Counter()
        self._sessions: dict[str, Session] = {}
        self._on_end = on_end
        self.on_admit = on_admit  # e.g. the call's recorder subscribing to its events
        self.draining = False
        self.admitted = 0
        self.refused = 0
        self.ended_by_reason: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def admit(self, tenant: str, transport: str, agent: str, key: str | None = None) -> Session:
        try:
            self._check(tenant, key)
        except Refused:
            self.refused += 1
            raise
        session = Session(self, tenant, transport, agent, key)
        self._sessions[session.id] = session
        self._per_tenant[tenant] += 1
        if key is not None:
            self._per_key[key] += 1
            self._pending[key] += 1
        if self.caps.pending_timeout > 0:
            asyncio.get_running_loop().call_later(self.caps.pending_timeout, self._connect_deadline, session)
        self.admitted += 1
        if self.on_admit is not None:
            try:
                self.on_admit(session)
            except Exception:  # an observer (the call's record) never refuses a call
                log.exception("on_admit failed", extra={"session_id": session.id})
        return session

    def _check(self, tenant: str, key: str | None) -> None:
        caps, retry = self.caps, self.retry_after
        if self.draining:
            raise Refused("draining", "shutting down", retry)
        if len(self._sessions) >= self.max_sessions:
            raise Refused("capacity", f"at capacity ({self.max_sessions} sessions)", retry)
        if caps.per_tenant and self._per_tenant[tenant] >= caps.per_tenant:
            raise Refused("tenant_limit", f"this tenant holds its {caps.per_tenant} concurrent sessions", retry)
        if key is not None and caps.per_key and self._per_key[key] >= caps.per_key:
            raise Refused("token_limit", f"this caller holds its {caps.per_key} concurrent sessions", retry)
        if key is not None and caps.pending_per_key and self._pending[key] >= caps.pending_per_key:
            raise Refused("pending_limit", f"this caller has {caps.pending_per_key} sessions still connecting",
                          max(1, math.ceil(caps.pending_timeout)) if caps.pending_timeout else retry)

    def _connect_deadline(self, session: Session) -> None:
        if session.state in PENDING and self._sessions.get(session.id) is session:
            loop = asyncio.get_running_loop()
            later = (session.connect_by or 0.0) - loop.time()
            if later > 0:
                loop.call_later(later, self._connect_deadline, session)
                return
            session.end_soon("connect timeout")

    def _settled(self, session: Session) -> None:
        """``session`` left the pending states (connected, or ending first)."""
        if session.key is not None and self._sessions.get(session.id) is session:
            _decrement(self._pending, session.key)

    def pending(self, key: str) -> int:
        return self._pending[key]

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
        _decrement(self._per_tenant, session.tenant)
        if session.key is not None:
            _decrement(self._per_key, session.key)
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




def _decrement(counter: Counter[str], key: str) -> None:
    n = counter[key] - 1
    if n > 0:
        counter[key] = n
    else:
        del counter[key]  # a counter of every key ever seen would grow without bound


def _retrieve(task: asyncio.Task[None]) -> None:
    """A done callback: an ending that failed is logged, never left unretrieved."""
    if not task.cancelled() and task.exception() is not None:
        log.error("ending a session failed", exc_info=task.exception())
