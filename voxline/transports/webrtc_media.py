"""The media half of the WebRTC transport: aiortc frames to voxline Audio and back.

``InboundReader`` drains aiortc's unbounded queue into a bounded buffer (oldest
dropped, counted) and hands 20 ms mono frames at the inbound rate to a callback;
``OutboundTrack`` is the outgoing audio track: aiortc sends whatever its
``recv()`` returns at once, so ``recv()`` asks a *source* for the next frame and
the source answers in the frame's slot — in a call, playout's ``pull()``, the one
pacer of the path. A frame is heard when aiortc takes it. Until a source is
attached the track sends silence on its own 20 ms schedule (a track must keep
sending). See ``voxline.transports.webrtc`` for how they fit.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import fractions
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..media.clock import Clock, LoopClock
from ..media.frames import Audio
from ..media.resample import StreamResampler

__all__ = ["AudioCallback", "InboundReader", "OutboundTrack", "Source", "WebRTCStats"]

log = logging.getLogger(__name__)

AudioCallback = Callable[[Audio], Awaitable[None] | None]
_IDLE_LOG = 5.0  # seconds without inbound audio before a debug line (mute is legal)
_LATE_RESET = 0.1  # recv() further behind schedule than this re-anchors rather than bursting
_EMPTY = np.zeros(0, dtype=np.int16)

@dataclass(slots=True)
class WebRTCStats:
    """An endpoint's counters, shared by its reader and track; ``stats()`` gives a copy."""

    frames_in: int = 0  # Audio frames handed to on_audio
    dropped_in: int = 0  # dropped at the inbound buffer, or lost to a slow/failing on_audio
    malformed_in: int = 0  # decoded frames that could not be converted
    gaps_in: int = 0  # forward jumps in the remote timestamps (loss, DTX)
    frames_out: int = 0  # frames of real audio given to aiortc
    silent_out: int = 0  # frames of filler silence given to aiortc
    malformed_out: int = 0  # frames from the source that were not one frame of int16 at the track's rate
    underruns: int = 0  # times the source ran dry while audio was flowing

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class _Reframer:
    """Mono int16 at any rate in, whole frames at ``rate`` out; the remainder waits."""

    __slots__ = ("rate", "n", "carry", "_resampler")

    def __init__(self, rate: int, n: int) -> None:
        self.rate, self.n, self.carry = rate, n, _EMPTY
        self._resampler: StreamResampler | None = None

    def push(self, pcm: np.ndarray, src_rate: int) -> list[np.ndarray]:
        if src_rate != self.rate:
            if self._resampler is None or self._resampler.src != src_rate:
                self._resampler = StreamResampler(src_rate, self.rate, "hq")
            pcm = self._resampler.process(pcm)
        if len(self.carry):
            pcm = np.concatenate((self.carry, pcm))
        n, whole = self.n, len(pcm) // self.n
        self.carry = pcm[whole * n :].copy()
        return [pcm[i * n : (i + 1) * n].copy() for i in range(whole)]

    def reset(self) -> None:
        self.carry = _EMPTY
        if self._resampler is not None:
            self._resampler.reset()


class InboundReader:
    """Reads a remote audio track promptly; hands 20 ms mono Audio to ``on_audio``."""

    def __init__(self, track: MediaStreamTrack, on_audio: AudioCallback | None, *, rate: int = 16000,
                 frame_ms: int = 20, capacity: int = 10, deliver_timeout: float = 1.0, clock: Clock | None = None,
                 stats: WebRTCStats | None = None, name: str = "webrtc") -> None:
        self.track, self.on_audio, self.rate, self.name = track, on_audio, rate, name
        self.frame_samples = rate * frame_ms // 1000
        self.capacity, self.deliver_timeout = capacity, deliver_timeout
        self.stats = stats if stats is not None else WebRTCStats()
        self._clock: Clock = clock or LoopClock()
        self._buffer: collections.deque[Audio] = collections.deque()
        self._ready, self._ended = asyncio.Event(), asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._framer = _Reframer(rate, self.frame_samples)
        self._pts, self._src_rate = 0, 0
        self._next_src_pts: int | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read(), name=f"voxline:{self.name}:webrtc-read"),
                       loop.create_task(self._deliver(), name=f"voxline:{self.name}:webrtc-deliver")]

    async def wait_ended(self, timeout: float) -> None:
        """Wait until the remote track ended and every buffered frame was handed on."""
        await asyncio.wait_for(self._ended.wait(), timeout)

    async def stop(self, timeout: float = 5.0) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            if pending:
                log.error("%s: %d inbound tasks did not stop within %.1fs", self.name, len(pending), timeout)
        self._ended.set()

    async def _read(self) -> None:
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: no task per frame and no yield
                    # while aiortc's queue holds frames. The deadline only feeds the log.
                    async with asyncio.timeout(_IDLE_LOG):
                        frame = await self.track.recv()
                except TimeoutError:
                    log.debug("%s: no inbound audio for %.0fs", self.name, _IDLE_LOG)
                    continue
                for audio in self.convert(frame, self._clock.now()):
                    if len(self._buffer) >= self.capacity:
                        self._buffer.popleft()
                        self.stats.dropped_in += 1
                        log.debug("x %s: inbound frame dropped (consumer behind)", self.name)
                    self._buffer.append(audio)
                    self._ready.set()
        except MediaStreamError:
            log.debug("%s: remote track ended", self.name)
        finally:
            self._ready.set()  # let the deliverer drain and finish

    async def _deliver(self) -> None:
        reader, stats = self._tasks[0], self.stats
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._buffer:
                audio = self._buffer.popleft()
                if self.on_audio is None:
                    continue
                try:
                    result = self.on_audio(audio)
                    if inspect.isawaitable(result):
                        async with asyncio.timeout(self.deliver_timeout):  # TimeoutError past it
                            await result
                    stats.frames_in += 1
                except Exception:
                    stats.dropped_in += 1
                    log.exception("%s: on_audio failed or overran %.1fs; frame dropped", self.name,
                                  self.deliver_timeout)
            if reader.done():
                self._ended.set()
                return

    def convert(self, frame: object, arrival: float) -> list[Audio]:
        """Turn one decoded aiortc frame into whole 20 ms frames (none if malformed)."""
        try:
            pcm, src_rate, src_pts = _mono_s16(frame)
        except (ValueError, TypeError, AttributeError) as exc:
            self.stats.malformed_in += 1
            log.warning("x %s: inbound frame refused: %s", self.name, exc)
            return []
        if src_rate != self._src_rate:
            self._src_rate, self._next_src_pts = src_rate, None
        n = self.frame_samples
        if src_pts is not None and self._next_src_pts is not None and src_pts > self._next_src_pts:
            # Lost packets or DTX: keep pts on media time, skipping whole frames.
            self.stats.gaps_in += 1
            self._pts += (src_pts - self._next_src_pts) * self.rate // src_rate // n * n
        if src_pts is not None:
            self._next_src_pts = src_pts + len(pcm)
        chunks = self._framer.push(pcm, src_rate)
        frames = [Audio(chunk, self.rate, self._pts + i * n, arrival) for i, chunk in enumerate(chunks)]
        self._pts += len(frames) * n
        return frames


def _mono_s16(frame: object) -> tuple[np.ndarray, int, int | None]:
    """Downmix a decoded s16 frame to mono: (pcm, rate, pts in samples or None)."""
    if not isinstance(frame, av.AudioFrame):
        raise TypeError(f"expected an audio frame, got {type(frame).__name__}")
    if frame.format.name not in ("s16", "s16p"):
        raise ValueError(f"sample format {frame.format.name} is not s16")
    rate, channels = int(frame.sample_rate), len(frame.layout.channels)
    if rate <= 0:
        raise ValueError(f"sample rate {rate} is not positive")
    data = frame.to_ndarray()
    if channels == 1:
        pcm = data.reshape(-1)
    else:
        wide = data.astype(np.int32)
        wide = wide.reshape(channels, -1) if frame.format.is_planar else wide.reshape(-1, channels).T
        pcm = (wide.sum(axis=0) // channels).astype(np.int16)  # the mean: no clipping
    if frame.pts is None or frame.time_base is None:
        return pcm, rate, None
    return pcm, rate, int(frame.pts * frame.time_base * rate)


Source = Callable[[], Awaitable[Audio | None]]


class OutboundTrack(MediaStreamTrack):
    """An audio track whose ``recv()`` returns what ``source()`` gives, in its slot."""

    kind = "audio"

    def __init__(self, *, rate: int = 48000, frame_ms: int = 20, source: Source | None = None,
                 clock: Clock | None = None, stats: WebRTCStats | None = None) -> None:
        super().__init__()
        self.rate = rate
        self.frame_samples = rate * frame_ms // 1000
        self.frame_time = self.frame_samples / rate
        self.source = source
        self.stats = stats if stats is not None else WebRTCStats()
        self._clock: Clock = clock or LoopClock()
        self._start: float | None = None
        self._k = self._timestamp = 0
        self._flowing = False
        self._time_base = fractions.Fraction(1, rate)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        source = self.source
        audio = None
        if source is not None:
            audio = await source()
        else:
            await self._idle()
        if self.readyState != "live":
            raise MediaStreamError
        out = av.AudioFrame.from_ndarray(self._pcm(audio).reshape(1, -1), format="s16", layout="mono")
        out.sample_rate, out.pts, out.time_base = self.rate, self._timestamp, self._time_base
        self._timestamp += self.frame_samples
        return out

    async def _idle(self) -> None:
        """No source yet: silence, one frame per slot on the track's own clock."""
        now = self._clock.now()
        if self._start is None or now > self._start + (self._k + 1) * self.frame_time + _LATE_RESET:
            self._start, self._k = now, 0
        else:
            self._k += 1
            await self._clock.sleep_until(self._start + self._k * self.frame_time)
        return None

    def _pcm(self, audio: Audio | None) -> np.ndarray:
        stats, n = self.stats, self.frame_samples
        if audio is not None:
            pcm = audio.pcm
            if audio.rate == self.rate and isinstance(pcm, np.ndarray) and pcm.dtype == np.int16 and pcm.shape == (n,):
                self._flowing = True
                stats.frames_out += 1
                return pcm
            stats.malformed_out += 1
            log.warning("x outbound frame refused: need %d int16 samples at %d Hz", n, self.rate)
        if self._flowing:
            self._flowing = False
            stats.underruns += 1
        stats.silent_out += 1
        return np.zeros(n, dtype=np.int16)
