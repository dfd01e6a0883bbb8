"""The call records API over real calls (raw stream, echo agent) on SQLite and
on a real PostgreSQL server: list, inspect, delete, tenant isolation,
pagination, retention; and a database that goes away mid-call."""

from __future__ import annotations

import asyncio
import time

import pytest

from voxline.records import Records, RecordsConfig, StoreConfig
from voxline.records.store import engine_url

from ..control.api_fixtures import Keys
from ..transports.streams.helpers import TOKEN, eventually, make_app, only_session
from .helpers import RawCaller, records_config, records_of, settled

__all__ = ["make_app"]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_call_becomes_a_record_with_its_turns_and_events(make_app, database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    keys = Keys()
    app = await make_app(records_config(database_url, str(tmp_path), jwt_public_key=keys.public_pem))
    acme = keys.token(tenant="acme")
    caller = await RawCaller.dial(app, acme)
    session = await only_session(app)
    await caller.speak(1.0)
    await caller.dtmf("4")
    await eventually(lambda: caller.heard_bytes() > 16000, what="the echo")

    # While the call is on: its record is there, not yet ended, and cannot be deleted.
    await settled(app)
    r = await app.client.get(f"/v1/calls/{session.id}", headers=auth(acme))
    assert r.status == 200
    live = await r.json()
    assert live["state"] == "active" and live["ended_at"] is None and live["answered_at"] is not None
    r = await app.client.delete(f"/v1/calls/{session.id}", headers=auth(acme))
    assert r.status == 409

    await caller.hang_up()
    await eventually(lambda: session.ended_at is not None, what="the end")
    await settled(app)
    r = await app.client.get("/v1/calls", headers=auth(acme))
    assert r.status == 200
    page = await r.json()
    assert [c["id"] for c in page["calls"]] == [session.id] and page["next_cursor"] is None
    rec = page["calls"][0]
    assert rec["tenant"] == "acme" and rec["transport"] == "raw" and rec["agent"] == "echo"
    assert rec["peer"] == "127.0.0.1" and rec["state"] == "ended"
    assert rec["started_at"] == pytest.approx(session.created_at)
    assert rec["started_at"] <= rec["answered_at"] <= rec["ended_at"] == pytest.approx(session.ended_at)
    assert rec["end_reason"] == "hangup: client stopped" and rec["dtmf"] == "4"
    assert rec["turn_count"] >= 1

    r = await app.client.get(f"/v1/calls/{session.id}", headers=auth(acme))
    detail = await r.json()
    assert len(detail["turns"]) == rec["turn_count"]
    assert detail["turns"][0]["turn"] == 1 and detail["turns"][0]["started_at"] >= rec["answered_at"]
    kinds = [e["kind"] for e in detail["events"]]
    assert "dtmf" in kinds and kinds[-1] == "session"
    assert detail["events"][-1]["data"] == {"state": "ended", "reason": "hangup: client stopped"}
    assert [e["seq"] for e in detail["events"]] == sorted(e["seq"] for e in detail["events"])

    # Another tenant: it does not exist.
    for method in ("GET", "DELETE"):
        r = await app.client.request(method, f"/v1/calls/{session.id}", headers=auth(TOKEN))
        assert r.status == 404, method
    r = await app.client.get("/v1/calls", headers=auth(TOKEN))
    assert (await r.json())["calls"] == []

    r = await app.client.delete(f"/v1/calls/{session.id}", headers=auth(acme))
    assert r.status == 204
    r = await app.client.get(f"/v1/calls/{session.id}", headers=auth(acme))
    assert r.status == 404
    r = await app.client.get("/v1/calls", headers=auth(TOKEN))
    metrics = await (await app.client.get("/metrics", headers=auth(TOKEN))).text()
    assert "voxline_records_backlog 0.0" in metrics and "voxline_records_database_up 1.0" in metrics


async def test_pages_and_filters_through_the_api(make_app, database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(records_config(database_url, str(tmp_path)))
    ids = []
    for _ in range(5):
        caller = await RawCaller.dial(app)
        session = await only_session(app)
        ids.append(session.id)
        await caller.hang_up()
        await eventually(lambda: not app.sessions(), what="the end")  # noqa: B023
    await settled(app)
    seen: list[str] = []
    url = "/v1/calls?limit=2"
    while True:
        r = await app.client.get(url, headers=auth(TOKEN))
        assert r.status == 200
        page = await r.json()
        assert len(page["calls"]) <= 2
        seen += [c["id"] for c in page["calls"]]
        if page["next_cursor"] is None:
            break
        url = f"/v1/calls?limit=2&cursor={page['next_cursor']}"
    assert seen == ids[::-1]  # newest first, each once

    r = await app.client.get("/v1/calls?agent=assistant", headers=auth(TOKEN))
    assert (await r.json())["calls"] == []
    r = await app.client.get(f"/v1/calls?since={time.time() + 60}", headers=auth(TOKEN))
    assert (await r.json())["calls"] == []
    r = await app.client.get(f"/v1/calls?until={time.time() + 60}&since=0&agent=echo&limit=200",
                             headers=auth(TOKEN))
    assert len((await r.json())["calls"]) == 5
    for bad in ("limit=0", "limit=201", "limit=x", "since=-1", "since=nan", "until=inf", "cursor=bm9wZQ",
                "cursor=not%20a%20cursor", "agent=Bad!"):
        r = await app.client.get(f"/v1/calls?{bad}", headers=auth(TOKEN))
        assert r.status == 400, bad
    r = await app.client.get("/v1/calls")
    assert r.status == 401


async def test_retention_deletes_old_records_on_a_schedule(database_url: str) -> None:
    records = Records(RecordsConfig(StoreConfig(engine_url("", database_url), "n"), retention_days=1.0,
                                    retention_period=0.05))
    purged: list[str] = []
    records.on_purge.append(purged.extend)
    records.start()
    try:
        await asyncio.wait_for(records.opened.wait(), 10)
        now = time.time()
        row = {"transport": "raw", "agent": "echo", "node": "n", "state": "ended", "tenant": "acme"}
        old = {**row, "id": "0" * 16, "started_at": now - 2 * 86400, "ended_at": now - 2 * 86400 + 5,
               "updated_at": now}
        new = {**row, "id": "1" * 16, "started_at": now - 3600, "ended_at": now - 3000, "updated_at": now}
        await records.store.write([old, new], [], [])
        await eventually(lambda: purged == [old["id"]], what="the sweep")
        assert [c["id"] for c in (await records.store.page("acme")).calls] == [new["id"]]
    finally:
        await records.close()


async def test_the_database_going_away_mid_call_loses_neither_the_call_nor_its_record(make_app, pg, tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = pg.create_database("outage")
    app = await make_app(records_config(url, str(tmp_path)))
    caller = await RawCaller.dial(app)
    session = await only_session(app)
    await settled(app)
    pg.stop()
    try:
        before = caller.heard_bytes()
        await caller.speak(1.0)
        await caller.dtmf("9")
        await eventually(lambda: caller.heard_bytes() - before > 16000, what="the echo while the database is down")
        writer = records_of(app).writer
        await eventually(lambda: writer.failures > 0 and writer.backlog > 0, what="a failed write")
        r = await app.client.get(f"/v1/calls/{session.id}", headers=auth(TOKEN))
        assert r.status == 503 and "Retry-After" in r.headers
        metrics = await (await app.client.get("/metrics", headers=auth(TOKEN))).text()
        assert "voxline_records_database_up 0.0" in metrics and "voxline_records_backlog 0.0" not in metrics
        await caller.hang_up()
        await eventually(lambda: session.ended_at is not None, what="the end")
        assert session.end_reason == "hangup: client stopped"  # the call was never failed
    finally:
        pg.start()
    await settled(app, timeout=20)
    r = await app.client.get(f"/v1/calls/{session.id}", headers=auth(TOKEN))
    assert r.status == 200
    rec = await r.json()
    assert rec["state"] == "ended" and rec["end_reason"] == "hangup: client stopped" and rec["dtmf"] == "9"
    assert any(e["kind"] == "dtmf" for e in rec["events"])
    assert records_of(app).writer.dropped == 0
