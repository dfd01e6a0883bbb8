import asyncio

import pytest

from voxline.control.events import EventBus
from voxline.control.session import Refused, SessionRegistry, SessionState
from voxline.media.pipeline import Pipeline
from voxline.media.stage import PassThrough


async def test_admission_is_bounded_and_refusal_says_when_to_retry() -> None:
    reg = SessionRegistry(2, retry_after=7)
    a = reg.admit("t1", "webrtc", "echo")
    reg.admit("t1", "webrtc", "echo")
    with pytest.raises(Refused) as err:
        reg.admit("t2", "sip", "assistant")
    assert err.value.retry_after == 7 and "capacity" in err.value.reason
    assert (reg.admitted, reg.refused) == (2, 1)
    await a.end("hangup")
    assert len(reg) == 1
    reg.admit("t2", "sip", "assistant")  # room again


async def test_tenants_do_not_see_each_others_sessions() -> None:
    reg = SessionRegistry(5)
    mine = reg.admit("alice", "webrtc", "echo")
    reg.admit("bob", "webrtc", "echo")
    assert reg.get(mine.id, "alice") is mine
    assert reg.get(mine.id, "bob") is None
    assert [s.id for s in reg.list("alice")] == [mine.id]


async def test_end_stops_pipeline_closes_endpoint_and_reports_states() -> None:
    class Endpoint:
        closed = 0

        async def close(self) -> None:
            self.closed += 1

    ended = []
    reg = SessionRegistry(3, on_end=ended.append)
    s = reg.admit("t", "webrtc", "echo")
    sub = s.events.subscribe()
    s.pipeline = Pipeline([PassThrough("p")], on_end=s.pipeline_ended)
    await s.pipeline.start()
    s.endpoint = ep = Endpoint()
    s.set_state(SessionState.ACTIVE)
    await s.end("hangup")
    await s.end("again")
    assert s.state is SessionState.ENDED and s.end_reason == "hangup"
    assert ep.closed == 1 and s.pipeline.end_reason == "hangup"
    assert ended == [s] and reg.ended_by_reason == {"hangup": 1}
    states = [e["data"]["state"] async for e in sub]
    assert states == ["active", "ending", "ended"]


async def test_a_failing_pipeline_ends_its_session_with_the_reason() -> None:
    class Boom:
        name = "boom"
        latency = 0.0

        def process(self, frame):  # type: ignore[no-untyped-def]
            raise RuntimeError("bad")

    reg = SessionRegistry(3)
    s = reg.admit("t", "webrtc", "echo")
    s.pipeline = Pipeline([Boom()], on_end=s.pipeline_ended)
    await s.pipeline.start()
    s.pipeline.push(object())  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)
    assert s.state is SessionState.ENDED
    assert s.end_reason is not None and "stage 'boom' failed" in s.end_reason
    assert len(reg) == 0


async def test_draining_refuses_new_sessions_and_ends_the_rest() -> None:
    reg = SessionRegistry(3)
    s = reg.admit("t", "webrtc", "echo")
    await reg.drain(timeout=0.05)
    assert s.state is SessionState.ENDED and s.end_reason == "shutdown"
    with pytest.raises(Refused, match="shutting down"):
        reg.admit("t", "webrtc", "echo")


async def test_slow_subscriber_loses_oldest_events_only() -> None:
    bus = EventBus("s")
    slow = bus.subscribe(depth=3)
    fast = bus.subscribe(depth=100)
    for i in range(10):
        bus.publish("tick", i=i)
    assert slow.dropped == 7
    assert [(await slow.get())["data"]["i"] for _ in range(3)] == [7, 8, 9]  # type: ignore[index]
    assert fast.dropped == 0
    late = bus.subscribe()
    assert (await late.get())["data"]["i"] == 0  # type: ignore[index]  # history replayed
    bus.close()
    assert await slow.get() is None
    with pytest.raises(OverflowError):
        small = EventBus("x", max_subscribers=1)
        small.subscribe()
        small.subscribe()


def test_event_data_may_carry_any_key_even_turn() -> None:
    bus = EventBus("s")
    sub = bus.subscribe()
    bus.publish("latency", 3, turn=3, kind="x")  # a turn record's own fields
    event = sub._queue[0]
    assert (event["kind"], event["turn"], event["data"]) == ("latency", 3, {"turn": 3, "kind": "x"})


async def test_a_session_may_connect_later_than_pending_timeout_when_its_door_says_so() -> None:
    from voxline.control.session import Caps

    reg = SessionRegistry(5, caps=Caps(pending_timeout=0.05))
    loop = asyncio.get_running_loop()
    ringing = reg.admit("t", "sip", "echo")
    ringing.connect_by = loop.time() + 0.3  # a call out rings first
    plain = reg.admit("t", "sip", "echo")
    await asyncio.sleep(0.15)
    assert plain.end_reason == "connect timeout" and ringing.state is SessionState.CREATED
    await asyncio.sleep(0.3)
    assert ringing.end_reason == "connect timeout" and ringing.state is SessionState.ENDED
