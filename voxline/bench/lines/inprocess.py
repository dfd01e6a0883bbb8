"""A caller inside the service's own process, through its loopback door: the
same admission and pipeline as any call, no socket (``--transport inprocess``,
only when the harness started the service itself)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from voxline.codecs import l16
from voxline.control.app import DOORS, SESSIONS
from voxline.media.frames import Frame, Interrupt, Payload
from voxline.transports.loopback import LoopbackDialer, LoopbackTransport

from .base import LineError, Listener, Target

__all__ = ["InProcessLine"]

RATE = 16000


class _Wire(LoopbackTransport):
    """The loopback transport, telling the caller of each frame as it is sent."""

    def __init__(self, listener: Listener) -> None:
        super().__init__(l16(RATE, little_endian=True))
        self.listener = listener
        self._decode = self.traits.media.codec.decoder().decode

    def send(self, frame: Frame) -> None:
        t = type(frame)
        if t is Payload:
            self.listener.heard(self._decode(frame.data), RATE, time.monotonic())  # type: ignore[union-attr]
        elif t is Interrupt:
            self.listener.cleared(time.monotonic())
        super().send(frame)


class InProcessLine:
    name = "inprocess"
    rate = RATE
    can_impair = True

    def __init__(self, target: Target, agent: str | None, listener: Listener) -> None:
        if target.app is None:
            raise LineError("the inprocess transport needs the service in this process (no --url)")
        self.target = target
        self.agent = agent
        self.listener = listener
        self.session_id: str | None = None
        self._wire: _Wire | None = None
        self._events: asyncio.Task[None] | None = None
        self._session: Any = None

    async def open(self) -> None:
        app = self.target.app
        dialer = next((d.handle for d in app[DOORS] if isinstance(d.handle, LoopbackDialer)), None)
        if dialer is None or dialer.service is None:
            raise LineError("the service has no loopback door")
        service = dialer.service
        try:
            call = service.admit("loopback", self.agent, tenant="default", key="bench")
        except Exception as exc:
            raise LineError(f"refused: {exc}") from exc
        self._wire = _Wire(self.listener)
        await service.open(call, self._wire)
        self._wire.connect()
        session = next((s for s in app[SESSIONS].list() if s.endpoint is self._wire), None)
        if session is not None:
            self._session = session
            self.session_id = session.id
            sub = session.events.subscribe()

            async def relay() -> None:
                async for event in sub:
                    self.listener.event(event)

            self._events = asyncio.ensure_future(relay())

    async def send(self, pcm: npt.NDArray[np.int16]) -> None:
        if self._wire is None or self._wire.port is None:
            raise LineError("the call is not open")
        self._wire.peer.say(pcm, time.monotonic())

    async def info(self) -> dict[str, Any] | None:
        return self._session.info(detail=True) if self._session is not None else None

    async def close(self) -> None:
        if self._wire is not None:
            self._wire.hang_up()
        if self._events is not None:
            self._events.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._events
