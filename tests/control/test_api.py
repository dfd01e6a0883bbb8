"""The control API over real HTTP: every route, limits, errors, the events WebSocket."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from voxline.config import ServiceConfig
from voxline.control import app as app_module
from voxline.control.app import RUNTIME, SESSIONS, STATE
from voxline.control.session import SessionState
from voxline.media.silero import BatcherFull
from voxline.transports import webrtc_call

from .api_fixtures import (  # noqa: F401  (fixtures)
    OFFER_SDP,
    STATIC_TOKEN,
    FakeClock,
    Keys,
    bearer,
    keys,
    make_client,
    offer,
)
from .fakes import ANSWER, FakeRuntime, SlowStartRuntime

AUTH = bearer(STATIC_TOKEN)


def err(body: dict[str, Any]) -> tuple[str, str | None]:
    return body["error"]["code"], body["error"]["field"]


def failing_open(exc: Exception) -> type[FakeRuntime]:
    """A runtime whose ``open`` raises ``exc``, as a build failure would."""

    class Failing(FakeRuntime):
        async def open(self, session, transport):  # type: ignore[override]
            raise exc

    return Failing


async def test_offer_creates_a_session_and_returns_the_answer(make_client) -> None:
    client = await make_client()
    status, body, headers = await offer(client, agent="echo")
    assert status == 201
    assert body["sdp"] == ANSWER and body["type"] == "answer"
    sid = body["session_id"]
    assert headers["Location"] == f"/v1/sessions/{sid}"
    runtime = client.app[RUNTIME]
    assert runtime.offers == [(sid, "echo")]
    status, body, _ = await offer(client)  # no agent: the configured default
    assert runtime.offers[-1][1] == "assistant"


async def test_list_get_and_delete(make_client) -> None:
    client = await make_client()
    _, created, _ = await offer(client)
    sid = created["session_id"]
    resp = await client.get("/v1/sessions", headers=AUTH)
    assert resp.status == 200
    listed = (await resp.json())["sessions"]
    assert [(s["id"], s["state"], s["transport"]) for s in listed] == [(sid, "active", "webrtc")]

    resp = await client.get(f"/v1/sessions/{sid}", headers=AUTH)
    detail = await resp.json()
    assert resp.status == 200
    assert [s["name"] for s in detail["stats"]["stages"]] == ["decode", "vad"]
    assert detail["stats"]["links"][0]["dropped"] == 3 and detail["agent_state"] == "listening"

    session = client.app[SESSIONS].get(sid)
    resp = await client.delete(f"/v1/sessions/{sid}", headers=AUTH)
    assert resp.status == 204
    assert session.state is SessionState.ENDED and session.end_reason == "deleted"
    assert session.pipeline.stopped == "deleted"
    resp = await client.get(f"/v1/sessions/{sid}", headers=AUTH)
    assert resp.status == 404 and err(await resp.json()) == ("not_found", "session_id")
    resp = await client.delete(f"/v1/sessions/{sid}", headers=AUTH)
    assert resp.status == 404


async def test_say_and_interrupt_reach_the_agent(make_client) -> None:
    client = await make_client()
    _, created, _ = await offer(client)
    sid = created["session_id"]
    agent = client.app[SESSIONS].get(sid).agent
    resp = await client.post(f"/v1/sessions/{sid}/say", json={"text": "hello there"}, headers=AUTH)
    assert resp.status == 202 and await resp.json() == {"session_id": sid, "accepted": True}
    resp = await client.post(f"/v1/sessions/{sid}/interrupt", headers=AUTH)
    assert resp.status == 202
    assert agent.said == ["hello there"] and agent.interrupts == 1

    resp = await client.post(f"/v1/sessions/{sid}/say", json={"text": ""}, headers=AUTH)
    assert resp.status == 400 and err(await resp.json()) == ("too_short", "text")
    resp = await client.post(f"/v1/sessions/{sid}/say", json={"txt": "x"}, headers=AUTH)
    assert resp.status == 400 and err(await resp.json()) == ("missing_field", "text")


async def test_say_on_a_session_that_is_not_active_is_a_conflict(make_client) -> None:
    client = await make_client()
    _, created, _ = await offer(client)
    session = client.app[SESSIONS].get(created["session_id"])
    session.state = SessionState.CONNECTING
    resp = await client.post(f"/v1/sessions/{session.id}/say", json={"text": "hi"}, headers=AUTH)
    assert resp.status == 409 and err(await resp.json())[0] == "not_active"
    session.state = SessionState.ACTIVE
    session.agent = object()  # an agent that cannot be interrupted
    resp = await client.post(f"/v1/sessions/{session.id}/interrupt", headers=AUTH)
    assert resp.status == 409 and err(await resp.json())[0] == "unsupported"


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"type": "offer"}, "missing_field", "sdp"),
        ({"sdp": OFFER_SDP}, "missing_field", "type"),
        ({"sdp": OFFER_SDP, "type": "answer"}, "invalid_value", "type"),
        ({"sdp": 42, "type": "offer"}, "invalid_type", "sdp"),
        ({"sdp": OFFER_SDP, "type": "offer", "agent": "parrot"}, "invalid_value", "agent"),
        ({"sdp": OFFER_SDP, "type": "offer", "trickle": True}, "unknown_field", "trickle"),
        ({"sdp": "hello", "type": "offer"}, "invalid_value", "sdp"),
        ({"sdp": "v=0\r\nbad-offer", "type": "offer"}, "invalid_sdp", "sdp"),
        ({"sdp": "v" * (64 * 1024 + 1), "type": "offer"}, "too_long", "sdp"),
    ],
)
async def test_bad_offers_get_400_naming_the_field(make_client, body, code, field) -> None:
    client = await make_client()
    resp = await client.post("/v1/webrtc/offer", json=body, headers=AUTH)
    assert resp.status == 400
    assert err(await resp.json()) == (code, field)
    assert len(client.app[SESSIONS]) == 0  # a refused offer leaves no session behind


async def test_bodies_that_are_not_json_objects(make_client) -> None:
    client = await make_client()
    url = "/v1/webrtc/offer"
    resp = await client.post(url, data=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 400 and err(await resp.json()) == ("invalid_json", None)
    resp = await client.post(url, data=b"[1, 2]", headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 400 and err(await resp.json()) == ("invalid_json", None)
    resp = await client.post(url, data=b"sdp=v", headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 415


async def test_a_body_over_the_limit_is_413(make_client) -> None:
    client = await make_client()
    big = orjson.dumps({"sdp": "v=0" + "a" * 200_000, "type": "offer"})
    resp = await client.post("/v1/webrtc/offer", data=big, headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 413
    assert err(await resp.json())[0] == "body_too_large"


async def test_session_creation_is_rate_limited_per_token(make_client, keys: Keys) -> None:
    clock = FakeClock()
    config = ServiceConfig(
        api_tokens=(STATIC_TOKEN,), jwt_public_key=keys.public_pem, sessions_per_minute=6, session_burst=2
    )
    client = await make_client(config, clock=clock)
    assert (await offer(client))[0] == 201
    assert (await offer(client))[0] == 201
    status, body, headers = await offer(client)
    assert status == 429 and err(body)[0] == "rate_limited"
    assert headers["Retry-After"] == "10"  # one token every 10 s at 6 a minute
    other = keys.token(tenant="acme", jti="other")
    assert (await offer(client, token=other))[0] == 201  # another identity has its own bucket
    clock.now += 10
    assert (await offer(client))[0] == 201


async def test_admission_refusal_is_503_with_retry_after(make_client, keys: Keys) -> None:
    config = ServiceConfig(api_tokens=(STATIC_TOKEN,), max_sessions=1)
    client = await make_client(config)
    assert (await offer(client))[0] == 201
    status, body, headers = await offer(client)
    assert status == 503 and err(body)[0] == "refused" and "capacity" in body["error"]["message"]
    assert int(headers["Retry-After"]) > 0
    client.app[SESSIONS].draining = True
    for s in client.app[SESSIONS].list():
        await s.end("test")
    status, body, headers = await offer(client)
    assert status == 503 and "shutting down" in body["error"]["message"]


async def test_not_ready_refuses_offers_and_readyz_says_why(make_client) -> None:
    client = await make_client(factory=SlowStartRuntime, wait_started=False)
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503 and body["ready"] is False and body["checks"]["runtime"] is False
    status, body, headers = await offer(client)
    assert status == 503 and err(body)[0] == "not_ready" and headers["Retry-After"]
    client.app[RUNTIME].release.set()
    await client.app[STATE].start_task
    resp = await client.get("/readyz")
    assert resp.status == 200 and (await resp.json())["ready"] is True


async def test_readyz_needs_the_port_bound_and_health_needs_nothing(make_client) -> None:
    client = await make_client(listening=False)
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 503 and (await resp.json())["checks"]["listening"] is False
    app_module.mark_listening(client.app)
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["checks"] == {
        "listening": True, "runtime": True, "admitting": True, "models": True, "vad": True,
    }
    client.app[SESSIONS].draining = True
    assert (await client.get("/readyz")).status == 503


async def test_a_runtime_that_fails_on_an_offer_ends_the_session(make_client) -> None:
    client = await make_client(factory=failing_open(RuntimeError("boom")))
    status, body, _ = await offer(client)
    assert status == 500 and err(body)[0] == "internal" and "boom" not in body["error"]["message"]
    await asyncio.sleep(0)  # end_soon's task
    for _ in range(10):
        if not len(client.app[SESSIONS]):
            break
        await asyncio.sleep(0.01)
    assert len(client.app[SESSIONS]) == 0


async def test_a_shared_resource_at_its_limit_is_capacity_not_a_fault(make_client) -> None:
    client = await make_client(factory=failing_open(BatcherFull("the Silero batcher holds its maximum of sessions")))
    status, body, headers = await offer(client)
    assert status == 503 and err(body)[0] == "refused" and headers["Retry-After"]
    resp = await client.get("/metrics", headers=AUTH)
    assert 'voxline_admission_refused_total{reason="capacity",transport="webrtc"} 1.0' in await resp.text()


async def test_a_value_error_inside_the_runtime_is_a_fault_not_a_bad_offer(make_client) -> None:
    client = await make_client(factory=failing_open(ValueError("unsupported rate 44100")))
    status, body, _ = await offer(client)
    assert status == 500 and err(body)[0] == "internal"


async def test_a_bad_offer_names_its_field(make_client) -> None:
    client = await make_client()
    resp = await client.post("/v1/webrtc/offer", json={"sdp": "v=0 bad-offer", "type": "offer"}, headers=AUTH)
    body = await resp.json()
    assert resp.status == 400 and err(body) == ("invalid_sdp", "sdp")
    assert len(client.app[SESSIONS]) == 0


async def test_an_offer_the_runtime_never_answers_times_out(make_client, monkeypatch) -> None:
    monkeypatch.setattr(webrtc_call, "OFFER_TIMEOUT", 0.05)
    client = await make_client()
    client.app[RUNTIME].hang = True
    status, body, _ = await offer(client)
    assert status == 504 and err(body)[0] == "timeout"
    assert len(client.app[SESSIONS]) == 0


async def test_unknown_routes_and_methods_are_json(make_client) -> None:
    client = await make_client()
    resp = await client.get("/v1/nothing", headers=AUTH)
    assert resp.status == 404 and resp.content_type == "application/json"
    resp = await client.put("/v1/sessions", headers=AUTH)
    assert resp.status == 405 and err(await resp.json())[0] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


async def test_demo_page_assets_and_openapi_need_no_token(make_client) -> None:
    client = await make_client()
    resp = await client.get("/")
    page = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/html"
    for element in ('id="start"', 'id="stop"', 'id="interrupt"', 'id="agent"', 'id="transcript"',
                    'id="turns"', 'id="level"', 'id="agent-state"', 'id="token"'):
        assert element in page
    assert "Content-Security-Policy" in resp.headers
    for name, ctype in (("app.js", "text/javascript"), ("style.css", "text/css")):
        resp = await client.get(f"/static/{name}")
        assert resp.status == 200 and resp.content_type == ctype
    resp = await client.get("/static/../app.py")
    assert resp.status == 404
    resp = await client.get("/static/secret.py")
    assert resp.status == 404 and err(await resp.json()) == ("not_found", "name")
    resp = await client.get("/openapi.json")
    assert resp.status == 200 and (await resp.json())["openapi"].startswith("3.1")


async def test_metrics_need_a_token_when_tokens_are_configured(make_client) -> None:
    client = await make_client()
    assert (await client.get("/metrics")).status == 401
    resp = await client.get("/metrics", headers=AUTH)
    assert resp.status == 200 and "voxline_sessions_active" in await resp.text()
    open_client = await make_client(ServiceConfig())
    assert (await open_client.get("/metrics")).status == 200
    assert (await open_client.get("/v1/sessions")).status == 200  # no tokens: auth is off


# -- the events WebSocket --------------------------------------------------------------


def ws_protocols(token: str = STATIC_TOKEN) -> tuple[str, ...]:
    return ("voxline.v1", f"bearer.{token}")


async def test_events_replay_stream_and_end_with_the_session(make_client) -> None:
    client = await make_client()
    _, created, _ = await offer(client)
    sid = created["session_id"]
    session = client.app[SESSIONS].get(sid)
    runtime = client.app[RUNTIME]
    async with client.ws_connect(f"/v1/sessions/{sid}/events", protocols=ws_protocols()) as ws:
        assert ws.protocol == "voxline.v1"
        replayed = [orjson.loads((await ws.receive(timeout=5)).data) for _ in range(2)]
        assert [e["data"]["state"] for e in replayed] == ["connecting", "active"]
        runtime.emit(session, "transcript", 1, text="hello", final=True, who="caller")
        event = orjson.loads((await ws.receive(timeout=5)).data)
        assert (event["kind"], event["turn"], event["data"]["text"]) == ("transcript", 1, "hello")
        assert event["session_id"] == sid
        await client.delete(f"/v1/sessions/{sid}", headers=AUTH)
        tail = []
        while (msg := await ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
            tail.append(orjson.loads(msg.data)["data"]["state"])
        assert tail == ["ending", "ended"]
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert session.events.subscribers == 0


async def test_a_slow_events_client_loses_the_oldest_events_not_memory(make_client) -> None:
    client = await make_client()
    _, created, _ = await offer(client)
    session = client.app[SESSIONS].get(created["session_id"])
    async with client.ws_connect(f"/v1/sessions/{session.id}/events", protocols=ws_protocols()) as ws:
        for _ in range(2):
            await ws.receive(timeout=5)  # the replayed history
        # Published with no await in between: the server cannot send any of them yet.
        for i in range(1000):
            session.events.publish("transcript", i, text=str(i), final=False, who="caller")
        first = orjson.loads((await ws.receive(timeout=5)).data)
        assert first["kind"] == "gap" and first["data"]["dropped"] == 1000 - app_module.EVENT_DEPTH
        rest = [orjson.loads((await ws.receive(timeout=5)).data) for _ in range(app_module.EVENT_DEPTH)]
        assert [e["turn"] for e in rest] == list(range(1000 - app_module.EVENT_DEPTH, 1000))
    resp = await client.get("/metrics", headers=AUTH)
    assert f"voxline_event_stream_dropped_total {float(1000 - app_module.EVENT_DEPTH)}" in await resp.text()


async def test_events_refuse_plain_http_missing_tokens_and_unknown_sessions(make_client) -> None:
    client = await make_client()
    _, created, _ = await offer(client)
    url = f"/v1/sessions/{created['session_id']}/events"
    resp = await client.get(url, headers=AUTH)
    assert resp.status == 426 and err(await resp.json())[0] == "upgrade_required"
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await client.ws_connect(url, protocols=("voxline.v1",))
    assert exc.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await client.ws_connect(url, protocols=ws_protocols("wrong"))
    assert exc.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await client.ws_connect("/v1/sessions/0123456789abcdef/events", protocols=ws_protocols())
    assert exc.value.status == 404
    async with client.ws_connect(url, headers=AUTH) as ws:  # a header works too (non-browser clients)
        assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT


async def test_shutdown_closes_open_event_streams(make_client) -> None:
    client = await make_client()
    _, created, _ = await offer(client)
    ws = await client.ws_connect(f"/v1/sessions/{created['session_id']}/events", protocols=ws_protocols())
    await client.close()  # the app shuts down with a client still attached
    while (msg := await ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
        pass
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert client.app[RUNTIME].stopped
