"""Prometheus metrics for one app: a registry of its own, never the global default.

Two kinds of source:

- pushed as they happen: HTTP requests, per-turn latency (from the runtime's
  observer, one ``latency`` event per closed turn), budget violations, provider
  errors, WebSocket event drops, rate-limited creations;
- read at scrape time by a collector: sessions (active, admitted, refused, ended
  by reason) from the registry, and per-stage processing time and link drops from
  each live pipeline's stats. Stage and link totals of ended sessions are folded
  into retired totals when a session ends, so the counters never go backwards.

Label values come from bounded sets (stage, link and segment names of the
pipeline, route templates, end-reason prefixes) so cardinality stays bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from voxline.agent.assistant import AgentEvent
from voxline.media.budget import MARKS

from .session import Session, SessionRegistry

__all__ = ["Metrics", "CONTENT_TYPE"]

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Turn segments span ~1 ms (a mark to the next in-process) to seconds (an LLM).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
HTTP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0)
SEGMENTS = frozenset(MARKS) | {"voice_to_voice"}
MAX_PROVIDERS = 32  # distinct provider label values before the rest count as "other"


def _stage_rows(stats: dict[str, Any]) -> Iterator[tuple[str, int, float, float, int]]:
    """(name, frames, total seconds, max seconds, errors) per stage of a pipeline's stats."""
    for st in stats.get("stages", ()):
        frames = int(st.get("frames", 0))
        yield (
            str(st.get("name", "?")),
            frames,
            float(st.get("mean_us", 0.0)) * frames / 1e6,
            float(st.get("max_us", 0.0)) / 1e6,
            int(st.get("errors", 0)),
        )


def _link_rows(stats: dict[str, Any]) -> Iterator[tuple[str, int, int]]:
    """(name, dropped, flushed) per link, and the pipeline's head as link "head"."""
    for link in stats.get("links", ()):
        yield str(link.get("name", "?")), int(link.get("dropped", 0)), int(link.get("flushed", 0))
    yield "head", int(stats.get("head_dropped", 0)), 0


def _pipeline_stats(session: Session) -> dict[str, Any]:
    if session.pipeline is None:
        return {}
    try:
        return session.pipeline.stats()
    except Exception:  # a scrape must not fail because one pipeline is mid-teardown
        log.exception("pipeline stats failed", extra={"session_id": session.id})
        return {}


class _Totals:
    """Stage and link totals of sessions that have ended."""

    def __init__(self) -> None:
        self.stage: dict[str, list[float]] = {}  # name -> [frames, seconds, errors]
        self.link: dict[str, list[int]] = {}  # name -> [dropped, flushed]

    def add(self, stats: dict[str, Any]) -> None:
        for name, frames, seconds, _max, errors in _stage_rows(stats):
            row = self.stage.setdefault(name, [0, 0.0, 0])
            row[0] += frames
            row[1] += seconds
            row[2] += errors
        for name, dropped, flushed in _link_rows(stats):
            lrow = self.link.setdefault(name, [0, 0])
            lrow[0] += dropped
            lrow[1] += flushed


BREAKER_VALUE = {"closed": 0.0, "half_open": 0.5, "open": 1.0}


def _provider_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    """Requests, failures, first-result time per provider; breaker state per chain member."""
    req = CounterMetricFamily("voxline_provider_requests", "Requests per provider", labels=["provider", "kind"])
    fail = CounterMetricFamily("voxline_provider_failures", "Failed requests per provider",
                               labels=["provider", "kind"])
    first_s = CounterMetricFamily("voxline_provider_first_result_seconds",
                                  "Time to the first result (token, audio, final transcript), total",
                                  labels=["provider", "kind"])
    first_n = CounterMetricFamily("voxline_provider_first_results", "Requests that produced a first result",
                                  labels=["provider", "kind"])
    breaker = GaugeMetricFamily("voxline_provider_breaker_state",
                                "Circuit breaker per fallback member: 0 closed, 0.5 half-open, 1 open",
                                labels=["chain", "provider"])
    # A chain's own row counts the requests it answered: while a fallback member
    # answers, the chain succeeds though its first member fails every time. Each
    # member's requests, failures and health are exported too, so that shows.
    m_req = CounterMetricFamily("voxline_provider_member_requests", "Requests per fallback-chain member",
                                labels=["chain", "provider"])
    m_fail = CounterMetricFamily("voxline_provider_member_failures",
                                 "Failed requests (timeouts included) per fallback-chain member",
                                 labels=["chain", "provider"])
    m_health = GaugeMetricFamily("voxline_provider_health",
                                 "Health score per fallback-chain member, 0-100 (below 70 it is tried last)",
                                 labels=["chain", "provider"])
    for row in rows[:MAX_PROVIDERS]:
        labels = [str(row["provider"]), str(row["kind"])]
        req.add_metric(labels, row["requests"])
        fail.add_metric(labels, row["failures"])
        first_s.add_metric(labels, row["first_result_seconds"])
        first_n.add_metric(labels, row["first_result_count"])
        for member in list(row.get("members", ()))[:MAX_PROVIDERS]:
            key = [str(row["provider"]), str(member.get("name"))]
            state = member.get("breaker", {})
            state = state.get("state") if isinstance(state, dict) else state
            breaker.add_metric(key, BREAKER_VALUE.get(str(state), 1.0))
            m_req.add_metric(key, float(member.get("requests", 0)))
            m_fail.add_metric(key, float(member.get("failures", 0)))
            health = member.get("health", {})
            score = health.get("score") if isinstance(health, dict) else health
            if isinstance(score, (int, float)):
                m_health.add_metric(key, float(score))
    yield from (req, fail, first_s, first_n, breaker, m_req, m_fail, m_health)


class _ScrapeCollector(Collector):
    def __init__(self, sessions: SessionRegistry, retired: _Totals) -> None:
        self._sessions = sessions
        self._retired = retired
        self.providers: Callable[[], list[dict[str, Any]]] | None = None
        self.admission: Any = None

    def collect(self) -> Iterator[Metric]:
        reg = self._sessions
        yield GaugeMetricFamily("voxline_sessions_active", "Sessions admitted and not yet ended", value=len(reg))
        yield CounterMetricFamily("voxline_sessions_admitted", "Sessions admitted", value=reg.admitted)
        yield CounterMetricFamily(
            "voxline_admission_refusals", "Sessions refused at admission (capacity or draining)", value=reg.refused
        )
        refused: dict[tuple[str, str], int] = dict(self.admission.refused) if self.admission is not None else {}
        by = CounterMetricFamily("voxline_admission_refused", "Calls refused at admission, by reason and transport",
                                 labels=["reason", "transport"])
        for (code, transport), n in sorted(refused.items()):
            by.add_metric([code, transport], n)
        yield by
        yield CounterMetricFamily("voxline_sessions_rate_limited", "Session creations refused by the per-token rate limit",
                                  value=sum(n for (code, _), n in refused.items() if code == "rate_limited"))
        ended = CounterMetricFamily("voxline_sessions_ended", "Sessions ended, by reason", labels=["reason"])
        for reason, n in sorted(reg.ended_by_reason.items()):
            ended.add_metric([reason], n)
        yield ended

        stage = {k: list(v) for k, v in self._retired.stage.items()}
        link = {k: list(v) for k, v in self._retired.link.items()}
        peak: dict[str, float] = {}
        for session in reg.list():
            stats = _pipeline_stats(session)
            for name, frames, seconds, mx, errors in _stage_rows(stats):
                row = stage.setdefault(name, [0, 0.0, 0])
                row[0] += frames
                row[1] += seconds
                row[2] += errors
                peak[name] = max(peak.get(name, 0.0), mx)
            for name, dropped, flushed in _link_rows(stats):
                lrow = link.setdefault(name, [0, 0])
                lrow[0] += dropped
                lrow[1] += flushed
        frames_f = CounterMetricFamily("voxline_stage_frames", "Frames processed per stage", labels=["stage"])
        secs_f = CounterMetricFamily(
            "voxline_stage_processing_seconds", "Processing time per stage", labels=["stage"]
        )
        errs_f = CounterMetricFamily("voxline_stage_errors", "Frames a stage failed on", labels=["stage"])
        max_f = GaugeMetricFamily(
            "voxline_stage_processing_seconds_max",
            "Longest single-frame processing time per stage over live sessions",
            labels=["stage"],
        )
        for name in sorted(stage):
            total_frames, total_seconds, total_errors = stage[name]
            frames_f.add_metric([name], total_frames)
            secs_f.add_metric([name], total_seconds)
            errs_f.add_metric([name], total_errors)
            max_f.add_metric([name], peak.get(name, 0.0))
        yield from (frames_f, secs_f, errs_f, max_f)
        drops = CounterMetricFamily("voxline_link_dropped", "Frames dropped by a full link", labels=["link"])
        flushed_f = CounterMetricFamily("voxline_link_flushed", "Frames flushed by interrupts", labels=["link"])
        for name in sorted(link):
            drops.add_metric([name], link[name][0])
            flushed_f.add_metric([name], link[name][1])
        yield drops
        yield flushed_f
        if self.providers is not None:
            try:
                rows = self.providers()
            except Exception:  # a scrape must not fail on one source
                log.exception("provider stats failed")
                rows = []
            yield from _provider_families(rows)


class Metrics:
    def __init__(self, sessions: SessionRegistry) -> None:
        self.registry = CollectorRegistry()
        self._retired = _Totals()
        r = self.registry
        self.http_requests = Counter(
            "voxline_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.http_duration = Histogram(
            "voxline_http_request_duration_seconds",
            "HTTP request handling time (WebSockets: until upgraded)",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.turn_segment = Histogram(
            "voxline_turn_segment_seconds",
            "Per-turn latency of each segment, from the previous mark to this one",
            ["segment"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.voice_to_voice = Histogram(
            "voxline_turn_voice_to_voice_seconds",
            "End of the caller's speech to the first reply audio played",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.violations = Counter(
            "voxline_budget_violations", "Turn segments over their latency budget", ["segment"], registry=r
        )
        self.provider_errors = Counter(
            "voxline_provider_errors", "Provider failures reported by agents", ["provider"], registry=r
        )
        self.transcripts_rejected = Counter(
            "voxline_transcripts_rejected", "Caller transcripts judged invented and not answered", registry=r
        )
        self.http_malformed = Counter(
            "voxline_http_malformed_requests", "Requests aiohttp could not parse (answered 400, not logged)",
            registry=r,
        )
        self.connections_refused = Counter(
            "voxline_http_connections_refused", "Connections answered 503 at max_connections", registry=r
        )
        self.event_drops = Counter(
            "voxline_event_stream_dropped", "Session events a slow WebSocket client lost", registry=r
        )
        self._providers: set[str] = set()
        self._collector = _ScrapeCollector(sessions, self._retired)
        r.register(self._collector)

    def observe(self, session: Session, event: AgentEvent) -> None:
        """The runtime's observer: every AgentEvent of every session passes here."""
        try:
            if event.kind == "latency":
                self._latency(event.data)
            elif event.kind == "error":
                self.provider_errors.labels(self._provider(event.data.get("provider"))).inc()
            elif event.kind == "rejected":
                self.transcripts_rejected.inc()
        except Exception:  # metrics must never break a call
            log.exception("observing %s failed", event.kind, extra={"session_id": session.id, "turn_id": event.turn})

    def _latency(self, data: dict[str, object]) -> None:
        segments = data.get("segments_ms")
        if isinstance(segments, dict):
            for name, ms in segments.items():
                if isinstance(ms, (int, float)) and not isinstance(ms, bool):
                    self.turn_segment.labels(self._segment(name)).observe(max(0.0, ms) / 1000)
        v2v = data.get("voice_to_voice_ms")
        if isinstance(v2v, (int, float)) and not isinstance(v2v, bool):
            self.voice_to_voice.observe(max(0.0, v2v) / 1000)
        violations = data.get("violations")
        if isinstance(violations, list):
            for name in violations:
                self.violations.labels(self._segment(name)).inc()

    @staticmethod
    def _segment(name: object) -> str:
        return name if isinstance(name, str) and name in SEGMENTS else "other"

    def _provider(self, name: object) -> str:
        label = name if isinstance(name, str) and name else "unknown"
        if label not in self._providers:
            if len(self._providers) >= MAX_PROVIDERS:
                return "other"
            self._providers.add(label)
        return label

    def watch_admission(self, admission: Any) -> None:
        """Refusals by code and transport, read at scrape time from the admission."""
        self._collector.admission = admission

    def watch_providers(self, source: Callable[[], list[dict[str, Any]]]) -> None:
        """Read provider counters and breaker states from ``source`` at scrape time."""
        self._collector.providers = source

    def session_ended(self, session: Session) -> None:
        """The registry's on_end: keep the ended pipeline's totals in the counters."""
        self._retired.add(_pipeline_stats(session))

    def render(self) -> bytes:
        return generate_latest(self.registry)
