"""``voxline serve`` killed (SIGKILL) mid-call: the call's record was already
in the store, and the next start on the same data directory ends it as lost;
the call's recording opens and lacks at most the last second."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from ..control.test_serve import EXIT_DEADLINE, free_port, request, start, wait_ready
from ..transports.probe import probe_signal
from ..transports.streams.helpers import frames, send_realtime

RATE = 16000


def _config(tmp_path: Path, data_dir: Path) -> Path:
    path = tmp_path / "voxline.toml"
    path.write_text('vad = "webrtc"\ngreet = false\nlog_format = "json"\naudiosocket_port = -1\nsip_port = 0\n'
                    f'drain_timeout = 1.0\nrecord = true\ndata_dir = "{data_dir}"\n')
    return path


def _poll(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen within {timeout} s")


@pytest.mark.slow
async def test_a_call_cut_by_kill_9_is_recorded_and_ends_as_lost_on_the_next_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = _config(tmp_path, data)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start("voxline", config, port, "--data-dir", str(data))
    try:
        wait_ready(proc, base)
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"ws://127.0.0.1:{port}/v1/streams/raw?rate={RATE}&encoding=pcm16")
            got: list[bytes] = []

            async def read() -> None:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        got.append(msg.data)

            reader = asyncio.ensure_future(read())
            first = time.monotonic()
            sig = probe_signal(RATE, 1.5)
            await send_realtime(ws.send_bytes, [f.astype("<i2").tobytes() for f in frames(sig, RATE // 50)])
            await ws.send_str('{"type": "dtmf", "digit": "3"}')
            await asyncio.sleep(0.5)
            assert sum(map(len, got)) > RATE  # the echo: the call is really on
            status, listed = request(f"{base}/v1/calls")
            assert status == 200 and len(listed["calls"]) == 1, listed
            call = listed["calls"][0]
            assert call["state"] == "active" and call["ended_at"] is None
            call_id = call["id"]
            _poll(lambda: request(f"{base}/v1/calls/{call_id}")[1].get("dtmf") == "3", 5, "the digit recorded")
            await send_realtime(ws.send_bytes, [f.astype("<i2").tobytes() for f in frames(sig, RATE // 50)])
            proc.kill()  # SIGKILL: no drain, no last write
            lasted = time.monotonic() - first
            proc.communicate(timeout=EXIT_DEADLINE)
            reader.cancel()
            await ws.close()
        assert (data / "voxline.db").is_file()
        wav = data / "recordings" / f"{call_id}.wav"
        pcm, rate = sf.read(wav, dtype="int16")  # opens: the header was kept up to date
        assert rate == RATE and pcm.shape[1] == 2
        assert lasted - 1.0 <= len(pcm) / RATE <= lasted, (len(pcm) / RATE, lasted)
        assert np.abs(pcm[:, 0]).max() > 1000 and np.abs(pcm[:, 1]).max() > 1000  # both sides

        proc = start("voxline", config, port, "--data-dir", str(data))
        wait_ready(proc, base)
        record = _poll(lambda: (r := request(f"{base}/v1/calls/{call_id}"))[0] == 200 and r[1], 10, "the record")
        assert record["state"] == "ended" and record["end_reason"] == "lost", record
        assert record["started_at"] <= record["ended_at"] <= time.time()
        assert record["transport"] == "raw" and record["agent"] == "echo" and record["dtmf"] == "3"
        with urllib.request.urlopen(f"{base}/v1/calls/{call_id}/recording", timeout=10) as resp:
            assert resp.status == 200 and resp.read(4) == b"RIFF"
        assert [e["kind"] for e in record["events"]].count("dtmf") == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=EXIT_DEADLINE)
