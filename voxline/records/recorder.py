"""A call's record, built from its session's events.

``CallRecorder`` subscribes to one session's event bus (the same events the
events WebSocket carries) and turns them into rows for the writer: the call
(transport, peer, agent, tenant, start, answer and end times, end reason,
counts), each turn (both sides' text, what the caller heard, barge-in, the
latency marks), and the events themselves (DTMF, barge-ins, transfers, provider
failures...; interim transcripts are left out, they are superseded by the
final one). It never touches the media path: it reads the bus from its own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from .webhooks import webhook_row

__all__ = ["CallRecorder", "SessionLike", "RowSink", "EVENT_DEPTH"]

log = logging.getLogger(__name__)

EVENT_DEPTH = 4096  # events buffered between the session and its recorder (drops are counted)
TURN_KINDS = frozenset({"transcript", "reply", "heard", "latency", "state", "dtmf", "error"})


class SessionLike(Protocol):
    id: str
    tenant: str
    transport: str
    agent_kind: str
    created_at: float
    ended_at: float | None
    end_reason: str | None
    extra: dict[str, Any]
    events: Any


class RowSink(Protocol):
    def call(self, row: dict[str, Any]) -> None: ...
    def turn(self, row: dict[str, Any]) -> None: ...
    def event(self, row: dict[str, Any]) -> None: ...
    def webhook(self, row: dict[str, Any]) -> None: ...


class CallRecorder:
    def __init__(self, session: SessionLike, sink: RowSink, node: str,
                 clock: Callable[[], float] = time.time, webhooks: bool = False) -> None:
        self.session = session
        self.webhooks = webhooks
        self.sink = sink
        self.node = node
        self._clock = clock
        self._turns: dict[int, dict[str, Any]] = {}
        self.call: dict[str, Any] = {
            "id": session.id, "tenant": session.tenant, "transport": session.transport,
            "peer": _peer(session), "agent": session.agent_kind, "node": node, "state": "created",
            "started_at": session.created_at, "answered_at": None, "ended_at": None, "end_reason": None,
            "turn_count": 0, "dtmf": "", "barge_ins": 0, "transfers": 0, "failures": 0, "updated_at": self._clock(),
        }
        self._sub = session.events.subscribe(depth=EVENT_DEPTH, replay=True)
        self.sink.call(dict(self.call))

    async def run(self) -> None:
        try:
            async for event in self._sub:
                try:
                    self.on_event(event)
                except Exception:  # a record must never take a call down, nor stop recording it
                    log.exception("recording event %s failed", event.get("kind"),
                                  extra={"session_id": self.session.id})
        finally:
            self._sub.close()
            self._finish()

    def on_event(self, event: dict[str, Any]) -> None:
        kind, turn, data, at = event["kind"], int(event.get("turn") or 0), event.get("data") or {}, event["time"]
        call = self.call
        if kind == "transcript" and not data.get("final"):
            return  # superseded by the final one
        self.sink.event({"call_id": call["id"], "seq": int(event["seq"]), "time": at, "kind": kind,
                         "turn": turn, "data": _jsonable(data)})
        changed = False
        if kind == "session":
            state = data.get("state")
            if state == "active" and call["answered_at"] is None:
                call["answered_at"] = at
            if state == "ended":
                call["ended_at"] = self.session.ended_at or at
                call["end_reason"] = self.session.end_reason or data.get("reason")
            if isinstance(state, str):
                call["state"] = state
            changed = True
        elif kind == "dtmf":
            call["dtmf"] = (call["dtmf"] + str(data.get("digit", "")))[-256:]
            changed = True
        elif kind == "error":
            call["failures"] += 1
            changed = True
        elif kind == "transfer":
            if data.get("state") == "referring":  # one transfer; its progress follows as more events
                call["transfers"] += 1
            changed = True
        elif kind == "reply" and data.get("paused"):
            call["barge_ins"] += 1
            changed = True
        if turn > 0 and kind in TURN_KINDS:
            self._turn(turn, kind, data, at)
            changed = True
        if changed:
            call["peer"] = call["peer"] or _peer(self.session)
            call["updated_at"] = self._clock()
            self.sink.call(dict(call))
        if self.webhooks:
            self._webhook(kind, turn, data, int(event["seq"]), at)

    def _webhook(self, kind: str, turn: int, data: dict[str, Any], seq: int, at: float) -> None:
        hook: str | None = None
        body: dict[str, Any] = {}
        if kind == "session" and data.get("state") == "active":
            hook, body = "call.started", _summary(self.call)
        elif kind == "session" and data.get("state") == "ended":
            hook, body = "call.ended", _summary(self.call)
        elif kind == "dtmf":
            hook, body = "dtmf", {"digit": data.get("digit"), "turn": turn}
        elif kind == "transfer":
            hook, body = "transfer", _jsonable(data)
        elif kind == "heard" and turn in self._turns:
            hook, body = "turn.completed", {k: v for k, v in self._turns[turn].items() if k != "call_id"}
        if hook is not None:
            self.sink.webhook(webhook_row(hook, self.call["id"], self.call["tenant"], seq, at, body))

    def _turn(self, turn: int, kind: str, data: dict[str, Any], at: float) -> None:
        row = self._turns.get(turn)
        if row is None:
            row = self._turns[turn] = {"call_id": self.call["id"], "turn": turn, "started_at": at, "ended_at": None,
                                       "caller_text": None, "agent_text": None, "heard_text": None,
                                       "heard_complete": None, "barged_in": False, "latency": None}
            self.call["turn_count"] += 1
            if len(self._turns) > 64:  # only recent turns change: forget the oldest's state
                del self._turns[next(iter(self._turns))]
        if kind == "transcript":
            row["caller_text" if data.get("who") == "caller" else "agent_text"] = data.get("text")
        elif kind == "heard":
            row["heard_text"] = data.get("text")
            row["heard_complete"] = bool(data.get("complete"))
            row["ended_at"] = at
        elif kind == "reply" and data.get("paused"):
            row["barged_in"] = True
        elif kind == "latency":
            row["latency"] = _jsonable(data)
            row["ended_at"] = row["ended_at"] or at
        elif kind == "state" and data.get("caller") == "silent":
            row["ended_at"] = at
        self.sink.turn(dict(row))

    def _finish(self) -> None:
        """The bus closed (the session ended): the call's final state, whatever events were lost."""
        s, call = self.session, self.call
        if s.ended_at is not None:
            call.update(state="ended", ended_at=s.ended_at, end_reason=s.end_reason or call["end_reason"])
        if self._sub.dropped:
            log.warning("recording lost %d events", self._sub.dropped, extra={"session_id": s.id})
        call["peer"] = call["peer"] or _peer(s)
        call["updated_at"] = self._clock()
        self.sink.call(dict(call))


def _summary(call: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in call.items() if k not in ("node", "updated_at", "tenant")}


def _peer(session: SessionLike) -> str | None:
    peer = session.extra.get("peer")
    return str(peer)[:256] if peer else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class Recorders:
    """The recorders of live sessions: one task each, awaited (or cancelled) at shutdown."""

    def __init__(self, sink: RowSink, node: str, webhooks: bool = False) -> None:
        self.sink = sink
        self.node = node
        self.webhooks = webhooks
        self._tasks: set[asyncio.Task[None]] = set()

    def watch(self, session: SessionLike) -> CallRecorder:
        recorder = CallRecorder(session, self.sink, self.node, webhooks=self.webhooks)
        task = asyncio.get_running_loop().create_task(recorder.run(), name=f"record:{session.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return recorder

    async def close(self, timeout: float = 2.0) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
