"""WebRTC, as a browser calls: an aiortc peer offers (host candidates on
loopback or ``ice_hosts``), POSTs the offer to ``/v1/webrtc/offer``, sends
Opus at 48 kHz and plays what comes back. The session id comes with the
answer, so the events stream and the session's detail are the service's own."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from typing import Any

import aiohttp
import av
import numpy as np
import numpy.typing as npt
import orjson
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voxline.transports.webrtc import gather_candidates

from .base import LineError, Listener, Target
from .http import EventFeed, session_info

__all__ = ["WebRTCLine", "CallerTrack"]

RATE = 48000
QUEUE = 50  # frames (1 s) between the caller's schedule and aiortc's sender


class CallerTrack(MediaStreamTrack):
    """The caller's microphone: frames handed in on the caller's schedule go out
    as soon as aiortc's sender asks (it asks again as soon as one is sent)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[npt.NDArray[np.int16]] = asyncio.Queue(QUEUE)
        self._pts = 0
        self.dropped = 0

    def put(self, pcm: npt.NDArray[np.int16]) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(pcm)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pcm = await self._queue.get()
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += len(pcm)
        return frame


class WebRTCLine:
    name = "webrtc"
    rate = RATE
    can_impair = False  # aiortc owns the RTP; what is sent cannot be impaired from here

    def __init__(self, target: Target, agent: str | None, listener: Listener) -> None:
        self.target = target
        self.agent = agent
        self.listener = listener
        self.session_id: str | None = None
        self._pc: RTCPeerConnection | None = None
        self._track = CallerTrack()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._feed: EventFeed | None = None
        self._connected = asyncio.Event()

    async def open(self) -> None:
        pc = self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(self._track)
        pc.on("track", lambda track: self._tasks.append(asyncio.ensure_future(self._listen(track))))

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState == "connected":
                self._connected.set()
            elif pc.connectionState in ("failed", "closed"):
                self.listener.closed(f"webrtc {pc.connectionState}")
                self._connected.set()

        offer = await pc.createOffer()
        host = self.target.url.split("://", 1)[-1].split(":", 1)[0].strip("[]") or "127.0.0.1"
        await gather_candidates(pc, (host,) if host[0].isdigit() else ("127.0.0.1",), scan_interfaces=False)
        await pc.setLocalDescription(offer)
        self._http = aiohttp.ClientSession()
        body = {"sdp": pc.localDescription.sdp, "type": "offer", **({"agent": self.agent} if self.agent else {})}
        try:
            async with self._http.post(f"{self.target.url}/v1/webrtc/offer", json=body,
                                       headers=self.target.headers()) as resp:
                answer = await resp.json(loads=orjson.loads)
                if resp.status != 201:
                    raise LineError(f"offer refused: {resp.status} {answer}")
        except aiohttp.ClientError as exc:
            raise LineError(f"offer: {exc}") from exc
        self.session_id = str(answer["session_id"])
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        self._feed = EventFeed(self._http, self.target, self.session_id, self.listener)
        try:
            await asyncio.wait_for(self._connected.wait(), 20)
        except TimeoutError:
            raise LineError("webrtc did not connect within 20 s") from None
        if pc.connectionState != "connected":
            raise LineError(f"webrtc {pc.connectionState}")

    async def _listen(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                assert isinstance(frame, av.AudioFrame)
                channels = len(frame.layout.channels)
                pcm = frame.to_ndarray().reshape(-1, channels)[:, 0].astype(np.int16)
                self.listener.heard(pcm, frame.sample_rate, now)

    async def send(self, pcm: npt.NDArray[np.int16]) -> None:
        if self._pc is None or self._pc.connectionState in ("failed", "closed"):
            raise LineError("the peer connection is closed")
        self._track.put(pcm)

    async def info(self) -> dict[str, Any] | None:
        if self._http is None or self.session_id is None:
            return None
        return await session_info(self._http, self.target, self.session_id)

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.close()
        if self._http is not None and self.session_id is not None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self._http.delete(f"{self.target.url}/v1/sessions/{self.session_id}",
                                        headers=self.target.headers(), timeout=aiohttp.ClientTimeout(total=3))
        if self._pc is not None:
            await self._pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
