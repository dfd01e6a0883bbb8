"""Real calls for the records tests: the running app (echo agent, webrtc VAD,
no greeting) and a raw-stream caller over a real socket."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import orjson

from voxline.config import ServiceConfig
from voxline.control.app import RECORDS
from voxline.records import Records

from ..transports.probe import probe_signal
from ..transports.streams.helpers import App, Collector, config, eventually, frames, send_realtime

__all__ = ["records_config", "records_of", "RawCaller", "settled", "RATE"]

RATE = 16000


def records_config(database_url: str, data_dir: str, **kw: Any) -> ServiceConfig:
    return dataclasses.replace(config(), greet=False, data_dir=data_dir, database_url=database_url, **kw)


def records_of(app: App) -> Records:
    return app.app[RECORDS]


async def settled(app: App, timeout: float = 10.0) -> None:
    """Every row written: the store is open and the writer's backlog empty."""
    records = records_of(app)
    await eventually(lambda: records.opened.is_set() and records.writer.backlog == 0, timeout,
                     what="the records written")


class RawCaller:
    """A raw-stream call: real-time PCM out (16 kHz unless ``rate``), the echo collected."""

    def __init__(self, ws: Any, rate: int = RATE) -> None:
        self.ws = ws
        self.rate = rate
        self.got = Collector(ws)

    @classmethod
    async def dial(cls, app: App, token: str | None = None, rate: int = RATE) -> "RawCaller":
        headers = {"Authorization": f"Bearer {token}"} if token else None
        if headers:
            ws = await app.client.ws_connect(f"/v1/streams/raw?rate={rate}&encoding=pcm16", headers=headers)
        else:
            ws = await app.ws(f"/v1/streams/raw?rate={rate}&encoding=pcm16")
        return cls(ws, rate)

    async def speak(self, seconds: float = 1.0) -> None:
        sig = probe_signal(self.rate, seconds)
        await send_realtime(self.ws.send_bytes, [f.astype("<i2").tobytes() for f in frames(sig, self.rate // 50)])

    async def dtmf(self, digit: str) -> None:
        await self.ws.send_str(orjson.dumps({"type": "dtmf", "digit": digit}).decode())

    def heard_bytes(self) -> int:
        return sum(map(len, self.got.binary))

    async def hang_up(self) -> None:
        await self.ws.send_str('{"type": "stop"}')
        await self.got.closed()


def silence(seconds: float) -> list[bytes]:
    return [np.zeros(RATE // 50, "<i2").tobytes() for _ in range(int(seconds * 50))]
