"""A running control app with the echo agent for the stream tests, and what a
stream test needs around it: real-time senders, a collector of what comes back,
a listener for the peer's playout confirmations."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from voxline.config import ServiceConfig, StreamsConfig
from voxline.control.app import SESSIONS, STATE, create_app, mark_listening
from voxline.control.runtime import Runtime
from voxline.control.session import Session, SessionState
from voxline.media.feedback import Played
from voxline.media.frames import Mark

__all__ = ["TOKEN", "FRAME", "App", "make_app", "Collector", "Confirmations", "eventually", "only_session",
           "inject_mark", "config", "send_realtime", "frames"]

TOKEN = "stream-token-0123456789"
FRAME = 0.02


def config(**streams: Any) -> ServiceConfig:
    limits = {"start_timeout": 1.0, "idle_timeout": 3.0, "max_faults": 3, **streams}
    return ServiceConfig(agent="echo", vad="webrtc", api_tokens=(TOKEN,), max_sessions=4, audiosocket_port=-1,
                         sessions_per_minute=6000, session_burst=100, streams=StreamsConfig(**limits))


@dataclasses.dataclass
class App:
    client: TestClient[Any, Any]
    app: web.Application

    def sessions(self) -> list[Session]:
        return self.app[SESSIONS].list()

    async def ws(self, path: str, token: str | None = TOKEN, **kw: Any) -> aiohttp.ClientWebSocketResponse:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kw.pop("headers", {}))
        kw.setdefault("autoping", True)
        return await self.client.ws_connect(path, headers=headers, **kw)


MakeApp = Callable[..., Awaitable[App]]


@pytest.fixture
async def make_app() -> AsyncIterator[MakeApp]:
    """The real control app, the real runtime (echo agent), over real HTTP on loopback."""
    clients: list[TestClient[Any, Any]] = []

    async def make(cfg: ServiceConfig | None = None, factory: Any = Runtime) -> App:
        app = create_app(cfg or config(), factory)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        start = app[STATE].start_task
        assert start is not None
        await start
        mark_listening(app)
        return App(client, app)

    yield make
    for client in clients:
        await client.close()


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait until ``check()`` holds; fail after ``timeout`` (a deadline, not a measurement)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.02)


async def only_session(app: App) -> Session:
    await eventually(lambda: len(app.sessions()) == 1 and app.sessions()[0].state is SessionState.ACTIVE,
                     what="one active session")
    return app.sessions()[0]


async def inject_mark(session: Session, name: str, turn: int = 0) -> None:
    """A mark into playout's inbox, as an agent's reply would end with one."""
    pipeline = session.pipeline
    assert pipeline is not None
    await pipeline._segments[-1].link.put(Mark(name, turn=turn))  # type: ignore[union-attr]


class Confirmations:
    """A feedback listener: the marks the peer confirmed (``Port.played``)."""

    name = "test-confirmations"
    listens = (Played,)

    def __init__(self) -> None:
        self.confirmed: list[str] = []

    def on_feedback(self, event: Played) -> None:
        if event.confirmed:
            self.confirmed.append(event.mark.name)

    @classmethod
    def on(cls, session: Session) -> "Confirmations":
        c = cls()
        assert session.pipeline is not None
        session.pipeline.feedback.add(c)
        return c


class Collector:
    """Reads a client WebSocket until it closes: text as JSON, binary as bytes."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.texts: list[dict[str, Any]] = []
        self.binary: list[bytes] = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.texts.append(orjson.loads(msg.data))
            elif msg.type is aiohttp.WSMsgType.BINARY:
                self.binary.append(msg.data)

    def of(self, key: str, value: str) -> list[dict[str, Any]]:
        return [t for t in self.texts if t.get(key) == value]

    async def closed(self, timeout: float = 5.0) -> int | None:
        await asyncio.wait_for(self.task, timeout)
        return self.ws.close_code


async def send_realtime(send: Callable[[bytes], Awaitable[None]], chunks: list[bytes]) -> None:
    """One chunk per 20 ms on an absolute schedule, as a telephony platform sends."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for k, chunk in enumerate(chunks):
        await asyncio.sleep(max(0.0, t0 + k * FRAME - loop.time()))
        await send(chunk)


def frames(pcm: np.ndarray, samples: int) -> list[np.ndarray]:
    return [pcm[i : i + samples] for i in range(0, len(pcm) - samples + 1, samples)]
