"""Webhooks from a real call (raw stream, echo agent) to a receiver on loopback:
signed with HMAC-SHA256, retried after 2, 4 and 8 s, then a dead letter that
the API lists and puts back; the outbox is in the database (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import time
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from voxline.records.webhooks import BACKOFF, sign

from ..transports.streams.helpers import TOKEN, eventually, make_app, only_session
from .helpers import RawCaller, records_config, settled

__all__ = ["make_app"]

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "whsec-test"


@dataclasses.dataclass
class Receiver:
    refuse: set[str]  # event types answered 500
    fail_once: set[str]
    got: list[tuple[float, str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    bad_signatures: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers["X-Voxline-Timestamp"]
        want = "sha256=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, request.headers["X-Voxline-Signature"]):
            self.bad_signatures += 1
            return web.Response(status=401)
        payload = orjson.loads(body)
        kind = request.headers["X-Voxline-Event"]
        assert kind == payload["type"] and request.headers["X-Voxline-Delivery"] == payload["id"]
        self.got.append((time.monotonic(), kind, payload))
        if kind in self.refuse:
            return web.Response(status=500)
        if kind in self.fail_once:
            self.fail_once.discard(kind)
            return web.Response(status=503)
        return web.Response(status=204)

    def of(self, kind: str) -> list[tuple[float, str, dict[str, Any]]]:
        return [g for g in self.got if g[1] == kind]


def test_the_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    assert sign("k", "1700000000", b"{}") == "sha256=" + hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert BACKOFF == (2.0, 4.0, 8.0)


@pytest.mark.slow
async def test_webhooks_are_signed_retried_then_dead_letters_put_back(make_app, database_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver(refuse={"dtmf"}, fail_once={"call.started"})
    hook_app = web.Application()
    hook_app.router.add_post("/hook", receiver.handle)
    server = TestServer(hook_app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/hook"))
        app = await make_app(records_config(database_url, str(tmp_path), webhook_url=url, webhook_secret=SECRET))
        caller = await RawCaller.dial(app)
        session = await only_session(app)
        await caller.dtmf("8")
        await eventually(lambda: len(receiver.of("call.started")) == 2, timeout=10, what="call.started retried")
        first, second = receiver.of("call.started")
        assert 2.0 <= second[0] - first[0] < 3.5  # the first retry after 2 s
        started = second[2]
        assert started["call_id"] == session.id and started["data"]["transport"] == "raw"
        assert started["data"]["answered_at"] is not None and started["id"] == first[2]["id"]
        await caller.hang_up()
        await eventually(lambda: bool(receiver.of("call.ended")), timeout=10, what="call.ended")
        ended = receiver.of("call.ended")[0][2]
        assert ended["data"]["end_reason"] == "hangup: client stopped" and ended["data"]["dtmf"] == "8"

        # dtmf is refused every time: tried at 0, +2, +4, +8 s, then a dead letter.
        await eventually(lambda: len(receiver.of("dtmf")) == 4, timeout=20, what="every dtmf attempt")
        times = [g[0] for g in receiver.of("dtmf")]
        gaps = [b - a for a, b in zip(times, times[1:])]
        for gap, want in zip(gaps, BACKOFF):
            assert want <= gap < want + 1.5, gaps
        assert receiver.of("dtmf")[0][2]["data"] == {"digit": "8", "turn": 0}

        async def dead() -> list[dict[str, Any]]:
            r = await app.client.get("/v1/webhooks/dead", headers=AUTH)
            assert r.status == 200
            return list((await r.json())["dead"])

        for _ in range(50):  # the attempt's outcome is written just after the answer
            letters = await dead()
            if letters:
                break
            await asyncio.sleep(0.05)
        assert [(d["type"], d["attempts"], d["state"]) for d in letters] == [("dtmf", 4, "dead")]
        assert letters[0]["last_error"] == "HTTP 500"
        assert receiver.bad_signatures == 0

        r = await app.client.post(f"/v1/webhooks/dead/{letters[0]['id']}/retry", headers=AUTH)
        assert r.status == 202
        r = await app.client.post(f"/v1/webhooks/dead/{letters[0]['id']}/retry", headers=AUTH)
        assert r.status == 404  # no longer dead
        receiver.refuse.clear()
        await eventually(lambda: len(receiver.of("dtmf")) == 5, timeout=5, what="the retried delivery")
        await settled(app)
        assert await dead() == []
        r = await app.client.get("/v1/webhooks/dead", headers={"Authorization": "Bearer nope"})
        assert r.status == 401
    finally:
        await server.close()
