"""The call store on SQLite and on a real PostgreSQL server: migrations from an
empty database, idempotent writes, tenant-scoped pages, retention, lost calls."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from voxline.records.store import BadCursor, CallStore, StoreConfig, engine_url, open_store

NODE = "test-node"


def call(i: int, tenant: str = "acme", **kw: object) -> dict[str, object]:
    row: dict[str, object] = {"id": f"{i:016x}", "tenant": tenant, "transport": "raw", "agent": "echo", "node": NODE,
                              "state": "ended", "started_at": 1000.0 + i, "ended_at": 1010.0 + i,
                              "end_reason": "hangup", "updated_at": 1010.0 + i}
    row.update(kw)
    return row


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[CallStore]:
    s = await open_store(StoreConfig(engine_url("", database_url), NODE))
    yield s
    await s.close()


async def test_migrations_from_empty_create_every_table_at_head(database_url: str) -> None:
    s = await open_store(StoreConfig(engine_url("", database_url), NODE))
    try:
        async with s.engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
            version = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert {"calls", "turns", "call_events", "webhook_outbox", "alembic_version"} <= names
        assert version == "0002"
    finally:
        await s.close()
    again = await open_store(StoreConfig(engine_url("", database_url), NODE))  # applied: nothing to do
    await again.close()


async def test_sqlite_is_in_wal_mode_in_the_data_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = await open_store(StoreConfig(engine_url(str(tmp_path / "data"), ""), NODE))
    try:
        async with s.engine.connect() as conn:
            assert (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar_one() == "wal"
        assert (tmp_path / "data" / "voxline.db").is_file()
    finally:
        await s.close()


async def test_writes_are_idempotent_upserts(store: CallStore) -> None:
    c = call(1, state="active", ended_at=None, end_reason=None)
    turn = {"call_id": c["id"], "turn": 1, "started_at": 1001.0, "caller_text": "hello"}
    ev = {"call_id": c["id"], "seq": 1, "time": 1001.0, "kind": "dtmf", "turn": 0, "data": {"digit": "5"}}
    await store.write([c], [turn], [ev])
    await store.write([c], [turn], [ev])  # a replayed batch
    await store.write([{**c, "state": "ended", "ended_at": 1005.0, "end_reason": "hangup"}],
                      [{**turn, "agent_text": "hi there"}], [])
    got = await store.get(str(c["id"]), "acme")
    assert got is not None
    assert got["state"] == "ended" and got["ended_at"] == 1005.0 and got["end_reason"] == "hangup"
    assert [(t["turn"], t["caller_text"], t["agent_text"]) for t in got["turns"]] == [(1, "hello", "hi there")]
    assert got["events"] == [{"seq": 1, "time": 1001.0, "kind": "dtmf", "turn": 0, "data": {"digit": "5"}}]
    assert "node" not in got


async def test_pages_are_newest_first_without_gaps_or_repeats(store: CallStore) -> None:
    rows = [call(i) for i in range(7)] + [call(100 + i, tenant="other") for i in range(3)]
    rows.append(call(50, started_at=1003.0))  # the same start as call 3: the id breaks the tie
    await store.write(rows, [], [])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.page("acme", limit=3, cursor=cursor)
        seen += [c["id"] for c in page.calls]
        pages += 1
        cursor = page.cursor
        if cursor is None:
            break
    assert pages == 3
    expected = sorted((r for r in rows if r["tenant"] == "acme"), key=lambda r: (r["started_at"], r["id"]),
                      reverse=True)
    assert seen == [r["id"] for r in expected]
    assert all(c["tenant"] == "acme" for c in (await store.page("acme", limit=200)).calls)


async def test_filters_by_time_and_agent(store: CallStore) -> None:
    await store.write([call(i, agent="echo" if i % 2 else "assistant") for i in range(10)], [], [])
    page = await store.page("acme", since=1002.0, until=1006.0)
    assert sorted(c["started_at"] for c in page.calls) == [1002.0, 1003.0, 1004.0, 1005.0]
    page = await store.page("acme", agent="assistant")
    assert {c["agent"] for c in page.calls} == {"assistant"} and len(page.calls) == 5
    with pytest.raises(BadCursor):
        await store.page("acme", cursor="bm90IGEgY3Vyc29y")


async def test_another_tenant_cannot_see_or_delete_a_call(store: CallStore) -> None:
    c = call(1)
    await store.write([c], [{"call_id": c["id"], "turn": 1, "started_at": 1.0}],
                      [{"call_id": c["id"], "seq": 1, "time": 1.0, "kind": "x", "turn": 0, "data": {}}])
    assert await store.get(str(c["id"]), "other") is None
    assert (await store.page("other")).calls == []
    assert await store.delete(str(c["id"]), "other") is False
    assert await store.delete(str(c["id"]), "acme") is True
    assert await store.get(str(c["id"]), "acme") is None
    async with store.engine.connect() as conn:
        for table in ("turns", "call_events"):
            assert (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one() == 0


async def test_retention_deletes_only_old_ended_calls(store: CallStore) -> None:
    old = [call(i) for i in range(3)]
    live_old = call(9, ended_at=None, state="active", end_reason=None)
    new = call(20, started_at=5000.0)
    await store.write([*old, live_old, new], [{"call_id": old[0]["id"], "turn": 1, "started_at": 1.0}],
                      [{"call_id": old[0]["id"], "seq": 1, "time": 1.0, "kind": "x", "turn": 0, "data": {}}])
    gone = await store.purge(before=2000.0, batch=2)
    assert sorted(gone) == sorted(str(c["id"]) for c in old)
    left = [c["id"] for c in (await store.page("acme")).calls]
    assert left == [new["id"], live_old["id"]]


async def test_calls_left_open_by_this_node_end_as_lost(store: CallStore) -> None:
    mine = call(1, state="active", ended_at=None, end_reason=None, updated_at=1234.0)
    theirs = call(2, state="active", ended_at=None, end_reason=None, node="another-node")
    await store.write([mine, theirs, call(3)], [], [])
    assert await store.end_lost(now=9999.0) == 1
    got = await store.get(str(mine["id"]), "acme")
    assert got is not None and got["end_reason"] == "lost" and got["state"] == "ended" and got["ended_at"] == 1234.0
    other = await store.get(str(theirs["id"]), "acme")
    assert other is not None and other["ended_at"] is None
