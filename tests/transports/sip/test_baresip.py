"""baresip, a real softphone, on both ends of a call with voxline's echo agent.

baresip runs headless (PEERS.md): a WAV of speech is its microphone, and its
sndfile module writes what it sent (``dump-*-enc.wav``) and what it heard
(``dump-*-dec.wav``). voxline calls it through ``POST /v1/calls`` (baresip
auto-answers), and baresip dials voxline's SIP door; either way what baresip
heard must be what it said, come back through voxline's pipeline (the echo),
and every session and RTP port must be released when baresip hangs up at the
end of its WAV. A baresip that called in is transferred (REFER) to a second one.
"""

from __future__ import annotations

import asyncio
import shutil
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from tests.transports.probe import windowed_match
from tests.transports.sip.test_calls_out import post, released
from tests.transports.sip.test_door import config, sip_door, until
from tests.transports.sip.uac import free_port, speech_8k
from voxline.control.app import SESSIONS, STATE, create_app
from voxline.control.runtime import Runtime

BARESIP = shutil.which("baresip")
MODULES = Path("/usr/lib/baresip/modules")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(BARESIP is None or not (MODULES / "sndfile.so").exists(),
                                 reason="baresip (apt-get install baresip-core) is not installed")]


@pytest.fixture
async def service() -> AsyncIterator[tuple[Any, TestServer]]:
    app = create_app(config(rtp_ports="31600-31699"), Runtime)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    if app[STATE].start_task is not None:
        await app[STATE].start_task
    assert sip_door(app).listening, sip_door(app).error
    try:
        yield app, server
    finally:
        await server.close()


class Baresip:
    """One headless baresip: a speech WAV as its microphone, recordings in ``rec``."""

    def __init__(self, root: Path, *, auto_answer: bool) -> None:
        self.root = root
        self.port = free_port()
        self.rec = root / "rec"
        self.rec.mkdir()
        conf = root / "conf"
        conf.mkdir()
        mic = root / "mic.wav"
        speech = speech_8k()
        pcm = np.concatenate([speech, np.zeros(4000, np.int16), speech])  # ~6 s, then baresip hangs up
        with wave.open(str(mic), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(pcm.tobytes())
        modules = "".join(f"module\t\t\t{m}.so\n" for m in ("g711", "alsa", "aufile", "sndfile", "account", "menu"))
        (conf / "config").write_text(
            f"sip_listen\t\t127.0.0.1:{self.port}\nnet_interface\t\t127.0.0.1\n"
            f"audio_source\t\taufile,{mic}\naudio_player\t\talsa,null\naudio_alert\t\talsa,null\n"
            f"module_path\t\t{MODULES}\n{modules}snd_path\t\t{self.rec}\n")
        answer = ";answermode=auto" if auto_answer else ""
        (conf / "accounts").write_text(f"<sip:baresip@127.0.0.1:{self.port}>;regint=0;audio_codecs=PCMU{answer}\n")
        self.conf = conf
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, *commands: str, seconds: int = 20) -> None:
        args = [BARESIP or "baresip", "-f", str(self.conf), "-t", str(seconds)]
        for c in commands:
            args += ["-e", c]
        self.proc = await asyncio.create_subprocess_exec(*args, cwd=self.root, stdin=asyncio.subprocess.DEVNULL,
                                                         stdout=asyncio.subprocess.PIPE,
                                                         stderr=asyncio.subprocess.STDOUT)
        await asyncio.sleep(0.5)  # listening

    async def stop(self) -> str:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.terminate()
        try:
            out, _ = await asyncio.wait_for(self.proc.communicate(), 10)
        except TimeoutError:
            self.proc.kill()
            out, _ = await self.proc.communicate()
        return out.decode("utf-8", "replace")

    def recordings(self) -> tuple[np.ndarray, np.ndarray]:
        """(what baresip sent, what it heard), 8 kHz int16."""
        def read(pattern: str) -> np.ndarray:
            (path,) = self.rec.glob(pattern)
            with wave.open(str(path)) as w:
                assert w.getframerate() == 8000 and w.getnchannels() == 1
                return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16)
        return read("dump-*-enc.wav"), read("dump-*-dec.wav")


def assert_echoed(sent: np.ndarray, heard: np.ndarray) -> None:
    assert len(sent) >= 8000 * 4, len(sent)
    loud = np.abs(heard.astype(np.int32))
    assert loud.mean() > 50, "baresip heard silence"
    # Each quarter second of speech baresip heard is a quarter second of what it sent.
    corr = windowed_match(heard, sent, 8000)
    assert corr > 0.6, f"what baresip heard is not what it said ({corr:.2f})"


@pytest.mark.parametrize("transport", ["", ";transport=tcp"], ids=["udp", "tcp"])
async def test_voxline_calls_baresip_and_its_speech_comes_back(service: Any, tmp_path: Path, transport: str) -> None:
    app, server = service
    phone = Baresip(tmp_path, auto_answer=True)
    await phone.start()
    try:
        status, body = await post(server, "/v1/calls", {"to": f"sip:baresip@127.0.0.1:{phone.port}{transport}",
                                                        "agent": "echo"})
        assert status == 201, body
        session = app[SESSIONS].get(body["session_id"])
        await until(lambda: session.state.value == "active", 10.0)
        assert session.info(detail=True)["transport_stats"]["codec"] == "PCMU"
        await until(lambda: session.state.value == "ended", 20.0)  # baresip hangs up when its WAV ends
        assert session.end_reason == "hangup: BYE"
        await released(app)
        assert sip_door(app).net.counts["connected"] == (1 if transport else 0)
    finally:
        log = await phone.stop()
    sent, heard = phone.recordings()
    assert_echoed(sent, heard), log[-2000:]


async def test_baresip_calls_voxline_and_its_speech_comes_back(service: Any, tmp_path: Path) -> None:
    app, _ = service
    door = sip_door(app)
    phone = Baresip(tmp_path, auto_answer=False)
    await phone.start(f"/dial sip:echo@127.0.0.1:{door.address[1]}")
    try:
        await until(lambda: len(app[SESSIONS].list()) == 1, 10.0)
        (session,) = app[SESSIONS].list()
        assert session.agent_kind == "echo"
        await until(lambda: session.state.value == "ended", 20.0)
        assert session.end_reason == "hangup: BYE"
        await released(app)
    finally:
        log = await phone.stop()
    sent, heard = phone.recordings()
    assert_echoed(sent, heard), log[-2000:]


async def test_baresip_calling_in_is_transferred_to_another_baresip(service: Any, tmp_path: Path) -> None:
    # baresip takes the REFER (202), calls the target itself and reports that call in NOTIFYs;
    # once the target answers, voxline hangs up (BYE) and the session ends "transferred".
    app, server = service
    door = sip_door(app)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    target = Baresip(tmp_path / "b", auto_answer=True)
    caller = Baresip(tmp_path / "a", auto_answer=False)
    await target.start()
    await caller.start(f"/dial sip:echo@127.0.0.1:{door.address[1]}")
    try:
        await until(lambda: any(s.state.value == "active" for s in app[SESSIONS].list()), 10.0)
        (session,) = app[SESSIONS].list()
        status, _ = await post(server, f"/v1/sessions/{session.id}/transfer",
                               {"to": f"sip:baresip@127.0.0.1:{target.port}"})
        assert status == 202
        await until(lambda: session.state.value == "ended", 15.0)
        assert session.end_reason == "transferred"
        await released(app)
    finally:
        log_a, log_b = await caller.stop(), await target.stop()
    assert "transferring call" in log_a and "Call established" in log_b, (log_a[-1500:], log_b[-1500:])
