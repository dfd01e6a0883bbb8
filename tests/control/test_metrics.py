"""Metrics content after sessions, latency events, errors and HTTP traffic."""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from voxline.config import ServiceConfig
from voxline.control.app import RUNTIME, SESSIONS, create_app
from voxline.control.metrics import Metrics
from voxline.control.session import SessionRegistry

from .api_fixtures import STATIC_TOKEN, bearer, keys, make_client, offer  # noqa: F401  (fixtures)
from .fakes import FakeRuntime

AUTH = bearer(STATIC_TOKEN)


async def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics", headers=AUTH)
    assert resp.status == 200 and resp.content_type == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def get(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


LATENCY = {
    "marks": {"speech_end": 10.0, "transcript": 10.2, "first_token": 10.5, "first_played": 10.9},
    "segments_ms": {"transcript": 200.0, "first_token": 300.0, "first_played": 400.0, "bogus": 1.0},
    "voice_to_voice_ms": 900.0,
    "violations": ["first_token", "voice_to_voice", "made-up"],
}


async def test_sessions_stages_links_and_turn_latency(make_client) -> None:
    client = await make_client(ServiceConfig(api_tokens=(STATIC_TOKEN,), max_sessions=2))
    runtime = client.app[RUNTIME]
    ids = [(await offer(client))[1]["session_id"] for _ in range(2)]
    assert (await offer(client))[0] == 503  # refused: at capacity
    first = client.app[SESSIONS].get(ids[0])
    runtime.emit(first, "latency", 1, **LATENCY)
    runtime.emit(first, "error", 1, provider="stt", error="timeout")
    runtime.emit(first, "transcript", 1, text="hi", final=True, who="caller")  # not a metric

    before = await scrape(client)
    assert get(before, "voxline_sessions_active") == 2
    assert get(before, "voxline_stage_frames_total", stage="decode") == 200
    await client.delete(f"/v1/sessions/{ids[0]}", headers=AUTH)
    m = await scrape(client)

    assert get(m, "voxline_sessions_active") == 1
    assert get(m, "voxline_sessions_admitted_total") == 2
    assert get(m, "voxline_admission_refusals_total") == 1
    assert get(m, "voxline_sessions_ended_total", reason="deleted") == 1
    # An ended session's stage and link counts stay in the totals: counters never go back.
    assert get(m, "voxline_stage_frames_total", stage="decode") == 200
    assert get(m, "voxline_stage_processing_seconds_total", stage="vad") == 2 * 100 * 300e-6
    assert get(m, "voxline_stage_processing_seconds_max", stage="vad") == 1500e-6
    assert get(m, "voxline_stage_errors_total", stage="vad") == 2
    assert get(m, "voxline_link_dropped_total", link="vad") == 6
    assert get(m, "voxline_link_dropped_total", link="head") == 2
    assert get(m, "voxline_link_flushed_total", link="vad") == 4

    assert get(m, "voxline_turn_segment_seconds_count", segment="first_token") == 1
    assert get(m, "voxline_turn_segment_seconds_sum", segment="first_token") == 0.3
    assert get(m, "voxline_turn_segment_seconds_bucket", segment="transcript", le="0.2") == 1
    assert get(m, "voxline_turn_segment_seconds_bucket", segment="transcript", le="0.15") == 0
    assert get(m, "voxline_turn_segment_seconds_count", segment="other") == 1  # "bogus": bounded labels
    assert get(m, "voxline_turn_voice_to_voice_seconds_count") == 1
    assert get(m, "voxline_turn_voice_to_voice_seconds_sum") == 0.9
    assert get(m, "voxline_budget_violations_total", segment="first_token") == 1
    assert get(m, "voxline_budget_violations_total", segment="voice_to_voice") == 1
    assert get(m, "voxline_budget_violations_total", segment="other") == 1
    assert get(m, "voxline_provider_errors_total", provider="stt") == 1


async def test_http_requests_by_route_method_and_status(make_client) -> None:
    client = await make_client()
    await offer(client)
    await client.get("/v1/sessions")  # 401
    await client.get("/v1/sessions/0123456789abcdef", headers=AUTH)  # 404
    await client.get("/no/such/route")
    m = await scrape(client)
    assert get(m, "voxline_http_requests_total", route="/v1/webrtc/offer", method="POST", status="201") == 1
    assert get(m, "voxline_http_requests_total", route="/v1/sessions", method="GET", status="401") == 1
    assert get(m, "voxline_http_requests_total", route="/v1/sessions/{session_id}", method="GET", status="404") == 1
    assert get(m, "voxline_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert get(m, "voxline_http_request_duration_seconds_count", route="/v1/webrtc/offer", method="POST") == 1


async def test_rate_limited_creations_are_counted(make_client, keys) -> None:
    config = ServiceConfig(api_tokens=(STATIC_TOKEN,), sessions_per_minute=1, session_burst=1)
    client = await make_client(config)
    assert [(await offer(client))[0] for _ in range(3)] == [201, 429, 429]
    assert get(await scrape(client), "voxline_sessions_rate_limited_total") == 2


def test_each_app_has_its_own_registry() -> None:
    a = create_app(ServiceConfig(), FakeRuntime)
    b = create_app(ServiceConfig(), FakeRuntime)  # a shared registry would raise "Duplicated timeseries"
    assert a is not b
    assert "voxline_http_requests_total" not in {s.name for f in REGISTRY.collect() for s in f.samples}


def test_observer_failures_never_raise() -> None:
    from voxline.agent.assistant import AgentEvent

    reg = SessionRegistry(2)
    metrics = Metrics(reg)
    session = reg.admit("t", "webrtc", "echo")
    metrics.observe(session, AgentEvent("latency", 1, {"segments_ms": "nonsense", "violations": None}))
    metrics.observe(session, AgentEvent("latency", 1, {"segments_ms": {"transcript": True}}))
    assert b"voxline_turn_segment_seconds_count" not in metrics.render()
