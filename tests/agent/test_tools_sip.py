"""The assistant's ``transfer`` over SIP with a real peer that accepts the REFER.

voxline calls sipp (``uas_refer.xml``: answers, takes the REFER with 202 and
reports the new call in NOTIFYs); the caller's turn is pushed into the call's
pipeline (the recogniser is scripted), the LLM is a scripted OpenAI-compatible
server that asks for ``transfer``. The agent says it is transferring, the REFER
goes out once that is played, the session ends "transferred" with a BYE, and
the call record holds the action and the transfer's events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from tests.transports.sip.test_calls_out import event, post, released
from tests.transports.sip.test_door import config, sip_door, until
from tests.transports.sip.test_sipp_uac import SIPP, Sipp
from voxline.control.app import SESSIONS, STATE, create_app
from voxline.control.calls import RECORDS
from voxline.control.runtime import Runtime
from voxline.media.clock import LoopClock
from voxline.media.frames import Audio, SpeechEnded, SpeechStarted
from voxline.providers.factory import Providers
from voxline.providers.llm.openai_compat import OpenAICompatLLM

from .fakes import FakeSTT, FakeTTS
from .scripted import ScriptedChat, Step

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (apt-get install sip-tester) is not installed")
TARGET = "sip:operator@127.0.0.1:5999"


@pytest.fixture
async def chat() -> AsyncIterator[ScriptedChat]:
    c = ScriptedChat([Step("Transferring you to the operator now.", [("transfer", {"target": TARGET})])])
    await c.start()
    yield c
    await c.close()


async def test_the_agent_transfers_a_sip_call_and_the_record_says_so(chat: ScriptedChat, tmp_path: Path) -> None:
    class ToolRuntime(Runtime):
        def __init__(self, cfg: Any, registry: Any, observer: Any = None) -> None:
            clock = LoopClock()
            providers = Providers(FakeSTT(clock, ("put me through to the operator",), delay=0.01),  # type: ignore[arg-type]
                                  OpenAICompatLLM(chat.base_url, None, "scripted"),
                                  FakeTTS(clock), FakeTTS(clock, "offline"))  # type: ignore[arg-type]
            super().__init__(cfg, registry, observer, providers=providers)

    cfg = config(agent="assistant", tools=("transfer",), rtp_ports="31600-31699", data_dir=str(tmp_path))
    app = create_app(cfg, ToolRuntime)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        if app[STATE].start_task is not None:
            await app[STATE].start_task
        assert sip_door(app).listening
        async with Sipp("uas_refer.xml", tmp_path) as sipp:
            status, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{sipp.port}"})
            assert status == 201, body
            session = app[SESSIONS].get(body["session_id"])
            await until(lambda: session.state.value == "active", 15.0)
            # The caller's turn, as the VAD would report it (non-audio frames pass the codec and VAD stages).
            pipe, now = session.pipeline, asyncio.get_running_loop().time
            pipe.push(SpeechStarted(0, 16000, now(), 1))
            for i in range(75):  # 1.5 s: long enough to have said the scripted words (the guard checks)
                pipe.push(Audio(np.full(160, 300, np.int16), 8000, i * 160, now(), 1))
                await asyncio.sleep(0.02)
            pipe.push(SpeechEnded(75 * 320, 16000, 0.0, now(), 1))
            states = []
            for want in ("referring", "accepted", "transferred"):
                ev = await event(session, "transfer", lambda d, w=want: d["state"] == w, 20.0)
                states.append(ev["data"]["state"])
            assert states == ["referring", "accepted", "transferred"]
            rc, out = await sipp.result()
        assert rc == 0, out[-3000:]  # sipp saw the REFER to the target, then our BYE
        await released(app)
        assert session.end_reason == "transferred"
        assert chat.requests[0]["tools"][0]["function"]["name"] == "transfer"
        # The record: the action (asked, accepted, carried out) and the transfer's progress.
        records = app[RECORDS]
        record: dict[str, Any] | None = None
        async with asyncio.timeout(10.0):
            while True:
                record = await records.store.get(session.id, "default")
                kinds = [e["kind"] for e in (record or {}).get("events", [])]
                if record and record["ended_at"] and "transfer" in kinds:
                    break
                await asyncio.sleep(0.1)
        assert record is not None
        actions = [e["data"] for e in record["events"] if e["kind"] == "action"]
        assert [a["state"] for a in actions] == ["started", "done", "transferring"]
        assert actions[2]["target"] == TARGET
        assert record["transfers"] == 1
        assert record["peer"] == f"sip:bob@127.0.0.1:{sipp.port}"  # whom the call went to
    finally:
        await server.close()
