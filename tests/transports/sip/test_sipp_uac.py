"""sipp as the callee of voxline's calls out: a real SIP stack answering POST /v1/calls.

``scenarios/uas_digest.xml`` challenges the INVITE with 401 and checks the
credentials of the second with sipp's own digest code before it answers (403
otherwise), so a 200 proves the digest is right to a peer that computes it
independently. ``scenarios/uas_refer.xml`` answers, accepts a REFER with 202 and
reports the transfer in NOTIFYs (100 then 200, RFC 3515): the session must end
"transferred" with a BYE.
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

from tests.transports.sip.test_calls_out import delete, event, post, released
from tests.transports.sip.test_door import config, sip_door, until
from tests.transports.sip.uac import free_port
from voxline.control.app import SESSIONS, STATE, create_app
from voxline.control.runtime import Runtime

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).with_name("scenarios")
CAPTURES = Path("/usr/share/sip-tester")  # sipp's own pcap files
pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (apt-get install sip-tester) is not installed")


@pytest.fixture
async def service(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, TestServer]]:
    cfg = config(**{"rtp_ports": "31400-31499", "sip_trunk_user": "alice", "sip_trunk_password": "s3cret",
                    "sip_trunk_domain": "127.0.0.1", **getattr(request, "param", {})})
    app = create_app(cfg, Runtime)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    if app[STATE].start_task is not None:
        await app[STATE].start_task
    assert sip_door(app).listening, sip_door(app).error
    try:
        yield app, server
    finally:
        await server.close()


def _bound(port: int, table: str = "udp") -> bool:
    """Whether a UDP socket is bound (or a TCP one listens) on ``port`` on this
    machine (from /proc/net/udp, /proc/net/tcp: 0A is LISTEN)."""
    want = f":{port:04X} "
    for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
        fields = line.split()
        if want in line[:40] and (table == "udp" or fields[3] == "0A"):
            return True
    return False


class Sipp:
    """sipp running a UAS scenario for one call, on loopback ports of its own."""

    def __init__(self, scenario: str, cwd: Path, transport: str = "u1") -> None:
        self.scenario = SCENARIOS / scenario
        self.cwd = cwd
        self.transport = transport  # sipp's -t: u1 (UDP), t1 (TCP)
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Sipp:
        cmd = [SIPP or "sipp", "-sf", str(self.scenario), "-t", self.transport, "-i", "127.0.0.1", "-p", str(self.port),
               "-mi", "127.0.0.1", "-mp", str(free_port()), "-m", "1", "-nostdin", "-rtp_echo",
               "-timeout", "30s", "-timeout_error", "-trace_err", "-error_file", str(self.cwd / "errors.log")]
        self.proc = await asyncio.create_subprocess_exec(*cmd, cwd=self.cwd, stdout=asyncio.subprocess.PIPE,
                                                         stderr=asyncio.subprocess.STDOUT,
                                                         env={**os.environ, "TERM": "dumb"})
        async with asyncio.timeout(5.0):  # until its port is bound: an INVITE before that is lost
            while not _bound(self.port, "tcp" if self.transport.startswith("t") else "udp"):
                await asyncio.sleep(0.02)
        return self

    async def result(self, timeout: float = 40.0) -> tuple[int, str]:
        assert self.proc is not None
        try:
            out, _ = await asyncio.wait_for(self.proc.communicate(), timeout)
        except TimeoutError:
            self.proc.kill()
            out, _ = await self.proc.communicate()
        errors = self.cwd / "errors.log"
        text = out.decode("utf-8", "replace") + (errors.read_text(errors="replace") if errors.exists() else "")
        return self.proc.returncode or 0, text

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def test_sipp_challenges_with_401_and_accepts_our_digest(service: Any, tmp_path: Path) -> None:
    app, server = service
    async with Sipp("uas_digest.xml", tmp_path) as sipp:
        status, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{sipp.port}", "agent": "echo"})
        assert status == 201, body
        session = app[SESSIONS].get(body["session_id"])
        await until(lambda: session.state.value == "active", 15.0)
        assert session.info(detail=True)["transport_stats"]["codec"] == "PCMU"
        assert await delete(server, session.id) == 204
        rc, out = await sipp.result()
    assert rc == 0, out[-3000:]
    await released(app)
    door = sip_door(app)
    assert door.ua.uac.counts.get("challenged") == 1 and session.end_reason == "deleted"  # type: ignore[union-attr]


async def test_a_call_out_over_tcp_answered_and_hung_up_by_sipp(service: Any, tmp_path: Path) -> None:
    """``;transport=tcp``: the INVITE, ACK and the callee's BYE (and our 200 to it)
    all go over the one connection voxline opened; RTP flows both ways."""
    app, server = service
    (tmp_path / "pcap").symlink_to(CAPTURES)
    async with Sipp("uas_hangup.xml", tmp_path, transport="t1") as sipp:
        status, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{sipp.port};transport=tcp",
                                                        "agent": "echo"})
        assert status == 201, body
        session = app[SESSIONS].get(body["session_id"])
        await until(lambda: session.state.value == "active", 15.0)
        door = sip_door(app)
        assert door.net.counts["connected"] == 1 and ("127.0.0.1", sipp.port) in door.net.connections
        await released(app)
        rc, out = await sipp.result()
    assert rc == 0, out[-3000:]
    assert session.end_reason == "hangup: BYE"
    stats = session.info(detail=True)["transport_stats"]
    assert stats["codec"] == "PCMA" and stats["received"] > 0 and stats["sent"] > 0, stats  # echoed back


async def test_a_call_out_over_tcp_ended_by_us_sends_bye_over_tcp(service: Any, tmp_path: Path) -> None:
    app, server = service
    async with Sipp("uas_refer.xml", tmp_path, transport="t1") as sipp:  # answers, takes a REFER, then our BYE
        _, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{sipp.port};transport=tcp",
                                                   "agent": "echo"})
        session = app[SESSIONS].get(body["session_id"])
        await until(lambda: session.state.value == "active", 15.0)
        status, _ = await post(server, f"/v1/sessions/{session.id}/transfer", {"to": "sip:operator@127.0.0.1:5999"})
        assert status == 202
        await event(session, "transfer", lambda d: d["state"] == "transferred")
        rc, out = await sipp.result()
    assert rc == 0, out[-3000:]
    await released(app)
    assert session.end_reason == "transferred"


async def test_a_tcp_target_that_refuses_the_connection_is_a_400_before_admission(service: Any) -> None:
    app, server = service
    port = free_port()  # nothing listens on it
    status, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{port};transport=tcp"})
    assert status == 400 and body["error"]["field"] == "to", body
    assert app[SESSIONS].admitted == 0 and sip_door(app).ports.in_use == 0


@pytest.mark.parametrize("service", [{"sip_trunk_password": "wrong"}], indirect=True)
async def test_sipp_refuses_a_wrong_password(service: Any, tmp_path: Path) -> None:
    app, server = service
    async with Sipp("uas_digest.xml", tmp_path) as sipp:
        _, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{sipp.port}"})
        session = app[SESSIONS].get(body["session_id"])
        await released(app)
        assert session.end_reason == "rejected: 403 Forbidden"
        rc, _ = await sipp.result()
    assert rc != 0  # the scenario fails its call when the credentials are wrong


async def test_sipp_accepts_a_refer_and_the_session_ends_transferred(service: Any, tmp_path: Path) -> None:
    app, server = service
    async with Sipp("uas_refer.xml", tmp_path) as sipp:
        _, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{sipp.port}", "agent": "echo"})
        session = app[SESSIONS].get(body["session_id"])
        await until(lambda: session.state.value == "active", 15.0)
        status, reply = await post(server, f"/v1/sessions/{session.id}/transfer",
                                   {"to": "sip:operator@127.0.0.1:5999"})
        assert status == 202 and reply == {"session_id": session.id, "to": "sip:operator@127.0.0.1:5999",
                                           "state": "referring"}
        states = []
        for want in ("accepted", "progress", "transferred"):
            ev = await event(session, "transfer", lambda d, w=want: d["state"] == w)
            states.append((ev["data"]["state"], ev["data"]["status"]))
        assert states == [("accepted", 202), ("progress", 100), ("transferred", 200)]
        rc, out = await sipp.result()
    assert rc == 0, out[-3000:]
    await released(app)
    assert session.end_reason == "transferred"


async def test_sipp_registrar_challenges_grants_and_takes_the_removal(tmp_path: Path) -> None:
    async with Sipp("registrar_digest.xml", tmp_path) as sipp:
        cfg = config(rtp_ports="31500-31509", sip_trunk_user="alice", sip_trunk_password="s3cret",
                     sip_trunk_domain="127.0.0.1", sip_register=f"sip:127.0.0.1:{sipp.port}")
        app = create_app(cfg, Runtime)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        try:
            door = sip_door(app)
            reg = door.ua.registration  # type: ignore[union-attr]
            assert reg is not None
            await until(lambda: reg.state.value == "registered", 10.0)
            assert reg.granted == 120 and reg.deadlines.next() is not None
            assert door.stats()["registration"] == {"state": "registered", "expires": 120, "error": None}
            assert str(reg.request.from_.uri) == "sip:alice@127.0.0.1"  # type: ignore[union-attr]
        finally:
            await server.close()  # the binding is removed (Expires: 0, challenged and answered)
        assert reg.state.value == "idle"
        rc, out = await sipp.result()
    assert rc == 0, out[-3000:]


async def test_sipp_registrar_granting_2_s_gets_a_refresh_before_it_lapses(tmp_path: Path) -> None:
    async with Sipp("registrar_refresh.xml", tmp_path) as sipp:
        cfg = config(rtp_ports="31510-31519", sip_trunk_user="alice", sip_register=f"sip:127.0.0.1:{sipp.port}")
        app = create_app(cfg, Runtime)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        try:
            reg = sip_door(app).ua.registration  # type: ignore[union-attr]
            assert reg is not None
            await until(lambda: reg.granted == 2, 5.0)
            await until(lambda: reg.granted == 120, 5.0)  # refreshed at 1.6 s
            assert reg.cseq == 2 and reg.state.value == "registered"
        finally:
            await server.close()
        rc, out = await sipp.result()
    assert rc == 0, out[-3000:]
