"""Webhooks through a durable outbox.

A call's webhook deliveries (call.started, call.ended, turn.completed, dtmf,
transfer) are rows written with its record (through the writer's backlog, so a
database away delays them, never the call). The dispatcher sends what is due:
a JSON body, signed with HMAC-SHA256 over ``<timestamp>.<body>`` (headers
``X-Voxline-Signature: sha256=<hex>``, ``X-Voxline-Timestamp``); a 2xx
delivers it; otherwise it is retried after 2, 4 and 8 s, then kept as a dead
letter (``GET /v1/webhooks/dead``) until retried by hand.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
import orjson

__all__ = ["Dispatcher", "sign", "webhook_row", "BACKOFF", "KINDS"]

log = logging.getLogger(__name__)

BACKOFF = (2.0, 4.0, 8.0)  # s before each retry; past the last, a dead letter
POLL = 0.5  # s between looks at the outbox
SEND_TIMEOUT = 5.0  # s for the receiver to answer
KINDS = ("call.started", "call.ended", "turn.completed", "dtmf", "transfer")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def webhook_row(kind: str, call_id: str, tenant: str, seq: int, at: float, data: dict[str, Any]) -> dict[str, Any]:
    delivery = f"{call_id}-{seq}"
    payload = {"id": delivery, "type": kind, "created_at": at, "call_id": call_id, "data": data}
    return {"id": delivery, "tenant": tenant, "call_id": call_id, "type": kind, "payload": payload,
            "created_at": at, "state": "pending", "attempts": 0, "next_at": at}


class Outbox(Protocol):
    async def due_webhooks(self, now: float, limit: int = 20) -> list[dict[str, Any]]: ...
    async def webhook_done(self, delivery_id: str, *, attempts: int, now: float, next_at: float | None,
                           error: str | None) -> None: ...


class Dispatcher:
    def __init__(self, url: str, secret: str, *, backoff: tuple[float, ...] = BACKOFF, poll: float = POLL,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.secret = secret
        self.backoff = backoff
        self.poll = poll
        self._clock = clock
        self.delivered = 0
        self.failed = 0
        self.dead = 0

    async def run(self, outbox: Callable[[], Outbox]) -> None:
        timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                try:
                    store = outbox()
                    due = await store.due_webhooks(self._clock())
                    for row in due:
                        await self._deliver(http, store, row)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the database away: the rows wait in it
                    log.warning("webhooks: %s: %s", type(exc).__name__, exc)
                    due = []
                if not due:
                    await asyncio.sleep(self.poll)

    async def _deliver(self, http: aiohttp.ClientSession, store: Outbox, row: dict[str, Any]) -> None:
        body = orjson.dumps(row["payload"])
        stamp = str(int(self._clock()))
        headers = {"Content-Type": "application/json", "X-Voxline-Event": row["type"],
                   "X-Voxline-Delivery": row["id"], "X-Voxline-Timestamp": stamp,
                   "X-Voxline-Signature": sign(self.secret, stamp, body)}
        error: str | None = None
        try:
            async with http.post(self.url, data=body, headers=headers) as resp:
                if not 200 <= resp.status < 300:
                    error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        attempts = int(row["attempts"]) + 1
        now = self._clock()
        next_at = None
        if error is None:
            self.delivered += 1
        elif attempts <= len(self.backoff):
            next_at = now + self.backoff[attempts - 1]
            self.failed += 1
        else:
            self.dead += 1
            log.warning("webhooks: %s %s dead after %d attempts: %s", row["type"], row["id"], attempts, error)
        await store.webhook_done(row["id"], attempts=attempts, now=now, next_at=next_at, error=error)
