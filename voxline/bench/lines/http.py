"""The control API seen from a line: a session's detail and its event stream."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import orjson

from .base import Listener, Target

__all__ = ["session_info", "EventFeed", "find_session"]


async def session_info(http: aiohttp.ClientSession, target: Target, session_id: str) -> dict[str, Any] | None:
    """GET /v1/sessions/{id}: per-stage stats and per-turn latency with their budgets."""
    try:
        async with http.get(f"{target.url}/v1/sessions/{session_id}", headers=target.headers(),
                            timeout=aiohttp.ClientTimeout(total=5)) as resp:
            if resp.status != 200:
                return None
            body: dict[str, Any] = await resp.json(loads=orjson.loads)
            return body
    except (aiohttp.ClientError, TimeoutError):
        return None


async def find_session(http: aiohttp.ClientSession, target: Target, transport: str,
                       known: set[str], since: float) -> str | None:
    """The newest session of ``transport`` created after ``since`` that no other
    line has claimed (for wires that carry no session id: Twilio, AudioSocket)."""
    try:
        async with http.get(f"{target.url}/v1/sessions", headers=target.headers(),
                            timeout=aiohttp.ClientTimeout(total=5)) as resp:
            if resp.status != 200:
                return None
            body = await resp.json(loads=orjson.loads)
    except (aiohttp.ClientError, TimeoutError):
        return None
    rows = body.get("sessions", body) if isinstance(body, dict) else body
    fresh = [s for s in rows if isinstance(s, dict) and s.get("transport") == transport
             and s.get("id") not in known and (s.get("created_at") or 0) >= since - 1.0]
    fresh.sort(key=lambda s: s.get("created_at") or 0)
    if not fresh:
        return None
    sid = str(fresh[0]["id"])
    known.add(sid)
    return sid


class EventFeed:
    """/v1/sessions/{id}/events into a listener, until closed."""

    def __init__(self, http: aiohttp.ClientSession, target: Target, session_id: str, listener: Listener) -> None:
        self._task = asyncio.ensure_future(self._run(http, target, session_id, listener))

    async def _run(self, http: aiohttp.ClientSession, target: Target, session_id: str, listener: Listener) -> None:
        protocols = ["voxline.v1"] + ([f"bearer.{target.token}"] if target.token else [])
        with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
            async with http.ws_connect(f"{target.ws_url}/v1/sessions/{session_id}/events",
                                       protocols=protocols, headers=target.headers()) as ws:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        event = orjson.loads(msg.data)
                        if isinstance(event, dict):
                            listener.event(event)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
