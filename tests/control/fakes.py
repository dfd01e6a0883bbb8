"""A fake runtime honouring voxline.control.runtime.Runtime's interface, for API tests.

``open`` gives each session a recording fake agent and a fake pipeline with
stats; a WebRTC transport it is given answers offers that look like SDP with a
fixed answer (no peer connection is negotiated). It can publish agent events the
way the real runtime does (on ``session.events`` and through the observer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from voxline.agent.assistant import AgentEvent
from voxline.config import ServiceConfig
from voxline.control.session import Session, SessionRegistry, SessionState
from voxline.transports.base import BadRequest, Transport
from voxline.transports.webrtc_call import WebRTCTransport

__all__ = ["FakeAgent", "FakePipeline", "FakeRuntime", "SlowStartRuntime", "ANSWER"]

ANSWER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


class FakeAgent:
    def __init__(self) -> None:
        self.said: list[str] = []
        self.interrupts = 0
        self.state = "listening"

    def say(self, text: str) -> None:
        self.said.append(text)

    def interrupt(self) -> None:
        self.interrupts += 1


class FakePipeline:
    """Stats in the shape of Pipeline.stats(); counts as a real one would."""

    def __init__(self) -> None:
        self.stopped: str | None = None
        self.stages = [
            {"name": "decode", "kind": "transform", "frames": 100, "mean_us": 20.0, "max_us": 90.0, "errors": 0},
            {"name": "vad", "kind": "worker", "frames": 100, "mean_us": 300.0, "max_us": 1500.0, "errors": 1},
        ]
        self.links = [{"name": "vad", "capacity": 50, "dropped": 3, "flushed": 2}]
        self.head_dropped = 1

    async def stop(self, reason: str) -> None:
        self.stopped = reason

    def stats(self) -> dict[str, Any]:
        return {
            "stages": [dict(s) for s in self.stages],
            "links": [dict(link) for link in self.links],
            "head_dropped": self.head_dropped,
            "latency": {"turns": []},
        }


class FakeRuntime:
    agents: tuple[str, ...] = ("assistant", "echo", "transcribe")

    def __init__(
        self,
        config: ServiceConfig,
        registry: SessionRegistry,
        observer: Callable[[Session, AgentEvent], None] | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.observer = observer
        self.started = False
        self.stopped = False
        self.offers: list[tuple[str, str]] = []  # (session id, agent)
        self.hang = False  # open never returns (for cancellation and timeout tests)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def readiness(self) -> dict[str, bool]:
        return {"models": self.started, "vad": self.started}

    async def open(self, session: Session, transport: Transport) -> FakePipeline:
        session.endpoint = transport
        session.set_state(SessionState.CONNECTING)
        if self.hang:
            await asyncio.Event().wait()
        if isinstance(transport, WebRTCTransport):
            transport.accept = _fixed_answer  # type: ignore[method-assign]
        self.offers.append((session.id, session.agent_kind))
        session.agent = FakeAgent()
        pipeline = FakePipeline()
        session.pipeline = pipeline  # type: ignore[assignment]
        session.set_state(SessionState.ACTIVE)
        return pipeline

    def emit(self, session: Session, kind: str, turn: int, **data: Any) -> None:
        """What the real runtime does with each AgentEvent."""
        session.events.publish(kind, turn, **data)
        if self.observer is not None:
            self.observer(session, AgentEvent(kind, turn, data))


async def _fixed_answer(sdp: object, sdp_type: object = "offer") -> str:
    if not isinstance(sdp, str) or not sdp.startswith("v=0") or "bad-offer" in sdp:
        raise BadRequest("sdp", "sdp: not an SDP offer the runtime can answer")
    return ANSWER


class SlowStartRuntime(FakeRuntime):
    """Starts only when ``release`` is set: readiness and 'not ready' refusals."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = asyncio.Event()

    async def start(self) -> None:
        await asyncio.wait_for(self.release.wait(), 30)
        self.started = True
