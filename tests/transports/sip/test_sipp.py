"""sipp against the running service: a real SIP stack calling the SIP door.

``uac_pcap`` (sipp's built-in scenario) places a call, plays sipp's PCMA capture
as RTP, then RFC 4733 DTMF "1", and hangs up with BYE. The echo agent must get
the audio and the digit, and once sipp is done every session and RTP port of the
service must be released. The load run places 300 such calls, 50 at a time, at
10 calls per second, and none may fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.transports.sip.uac import free_port
from voxline.config import ServiceConfig
from voxline.control.app import DOORS, SESSIONS, STATE, create_app
from voxline.control.runtime import Runtime
from voxline.transports.sip_door import SipDoor

SIPP = shutil.which("sipp")
CAPTURES = Path("/usr/share/sip-tester")
pytestmark = pytest.mark.skipif(SIPP is None or not (CAPTURES / "g711a.pcap").exists(),
                                reason="sipp (apt-get install sip-tester) is not installed")


class Watch:
    """Every session the service admits, with the events it published."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sessions: dict[str, Any] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._poll = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            for s in self.app[SESSIONS].list():
                if s.id not in self.sessions:
                    self.sessions[s.id] = s
                    self.events[s.id] = []
                    self._tasks.append(asyncio.get_running_loop().create_task(self._follow(s)))
            await asyncio.sleep(0.01)

    async def _follow(self, session: Any) -> None:
        sub = session.events.subscribe(depth=1000, replay=True)
        try:
            while (ev := await sub.get(120.0)) is not None:
                self.events[session.id].append(ev)
        finally:
            sub.close()

    async def close(self) -> None:
        for t in (self._poll, *self._tasks):
            t.cancel()
        await asyncio.gather(self._poll, *self._tasks, return_exceptions=True)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[Any, SipDoor]]:
    config = ServiceConfig(agent="echo", vad="webrtc", greet=False, api_tokens=("t" * 24,),
                           sip_port=free_port(), rtp_ports="32000-32999", max_sessions=200,
                           sessions_per_minute=100000.0, session_burst=1000)
    app = create_app(config, Runtime)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    if app[STATE].start_task is not None:
        await app[STATE].start_task
    door = next(d.handle for d in app[DOORS] if d.name == "sip")
    assert door.listening, door.error
    try:
        yield app, door
    finally:
        await server.close()


async def sipp(cwd: Path, target: tuple[str, int], *args: str, timeout: float) -> tuple[int, str]:
    (cwd / "pcap").symlink_to(CAPTURES)
    cmd = [SIPP or "sipp", "-sn", "uac_pcap", f"{target[0]}:{target[1]}", "-i", "127.0.0.1",
           "-p", str(free_port()), "-mi", "127.0.0.1", "-mp", str(free_port()), "-s", "echo", "-nostdin",
           "-timeout", f"{int(timeout)}s", "-timeout_error", "-recv_timeout", "20s", *args]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=cwd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT,
                                                env={**os.environ, "TERM": "dumb"})
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode("utf-8", "replace")


async def released(app: Any, door: SipDoor, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while app[SESSIONS].list() or door.ports.in_use or door.core.calls:  # type: ignore[union-attr]
            await asyncio.sleep(0.05)


async def test_sipp_uac_pcap_audio_and_dtmf_reach_the_echo_agent(service: Any, tmp_path: Path) -> None:
    app, door = service
    watch = Watch(app)
    try:
        rc, out = await sipp(tmp_path, door.address, "-m", "1", timeout=60)
        assert rc == 0, out[-2000:]
        await released(app, door)
    finally:
        await watch.close()
    (sid,) = watch.sessions
    session = watch.sessions[sid]
    kinds = [e["kind"] for e in watch.events[sid]]
    digits = [e["data"]["digit"] for e in watch.events[sid] if e["kind"] == "dtmf"]
    assert digits == ["1"], kinds
    stats = session.endpoint.stats()
    # sipp's capture is 236 PCMA packets of 30 ms: (nearly) all of them were played into the pipeline,
    # the agent got audio, and what it echoed went back to sipp as RTP.
    assert stats["codec"] == "PCMA" and stats["ptime"] == 30
    assert stats["jitter_buffer"]["played"] >= 230 and stats["malformed"] == stats["wrong_source"] == 0
    assert stats["dtmf_in"] == 1 and session.agent.frames > 200 and stats["sent"] > 200
    assert session.end_reason == "hangup: BYE"
    assert door.ports.in_use == 0 and not door.core.calls


@pytest.mark.slow
async def test_sipp_load_300_calls_50_at_a_time_none_fails(service: Any, tmp_path: Path) -> None:
    app, door = service
    rc, out = await sipp(tmp_path, door.address, "-m", "300", "-l", "50", "-r", "10", timeout=240)
    assert rc == 0, out[-3000:]
    await released(app, door, timeout=30)
    sessions = app[SESSIONS]
    assert sessions.admitted == 300 and not sessions.list()
    assert door.ports.in_use == 0 and door.stats()["core"].get("no ACK", 0) == 0
