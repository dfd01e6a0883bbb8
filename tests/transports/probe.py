"""Probe signals, audio measures, scripted tracks and a loopback-only network for the WebRTC tests."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import fcntl
import fractions
import os
import socket
import struct
import wave
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = [
    "Pcm",
    "ScriptedTrack",
    "SignalTrack",
    "best_match",
    "decoded",
    "echo_delays",
    "latency",
    "loopback_only_network",
    "probe_signal",
    "windowed_match",
    "write_wav",
]

Pcm = npt.NDArray[np.int16]


def probe_signal(rate: int, seconds: float = 2.0) -> Pcm:
    """A chirp then tone bursts of different pitches: no two lags look alike."""
    t = np.arange(int(rate * seconds)) / rate
    x = np.zeros_like(t)
    chirp = t < 0.6
    x[chirp] = np.sin(2 * np.pi * (300 * t[chirp] + (3400 - 300) / (2 * 0.6) * t[chirp] ** 2))
    for i, (start, hz) in enumerate([(0.8, 440), (1.05, 1250), (1.3, 700), (1.55, 2100), (1.75, 950)]):
        burst = (t >= start) & (t < start + 0.12 + 0.02 * i)
        x[burst] = np.sin(2 * np.pi * hz * t[burst]) * np.hanning(burst.sum())
    return (x * 12000).astype(np.int16)


def best_match(sig: Pcm, ref: Pcm, lags: range) -> tuple[int, float]:
    """The lag d in ``lags`` where ``sig`` best matches ``ref[d : d + len(sig)]``
    (normalised cross-correlation), and that correlation."""
    s = sig.astype(np.float64)
    r = ref.astype(np.float64)
    n = len(s)
    assert lags.start >= 0 and lags.stop - 1 + n <= len(r), "reference too short for these lags"
    size = 1 << int(np.ceil(np.log2(len(r) + n)))
    dots = np.fft.irfft(np.fft.rfft(r, size) * np.conj(np.fft.rfft(s, size)), size)
    energy = np.concatenate(([0.0], np.cumsum(r * r)))
    d = np.arange(lags.start, lags.stop)
    norms = np.sqrt(np.maximum(energy[d + n] - energy[d], 0.0) * np.dot(s, s))
    c = np.where(norms > 0, dots[d] / np.where(norms > 0, norms, 1.0), 0.0)
    i = int(np.argmax(c))
    return int(d[i]), float(c[i])


def windowed_match(sig: Pcm, ref: Pcm, rate: int, window: float = 0.25) -> float:
    """Median correlation of ``sig``'s windows, each at its own best lag in ``ref``
    (one period of a looped signal). Chromium's fake microphone slips a few
    samples each time it loops the file, so one long window under-reads."""
    n = int(rate * window)
    looped = np.tile(ref, 2)
    scores = []
    for start in range(0, len(sig) - n + 1, n):
        part = sig[start : start + n]
        if np.sqrt(np.mean(part.astype(np.float64) ** 2)) < 100:
            continue  # a pause in the probe signal: nothing to match
        scores.append(best_match(part, looped, range(0, len(ref)))[1])
    assert scores, "no audio at all in the signal"
    return float(np.median(scores))


def echo_delays(mic: Pcm, heard: Pcm, rate: int, window: float = 0.25) -> list[tuple[float, float]]:
    """(delay in s, correlation) of each window of ``heard`` against ``mic`` up to
    1 s earlier. Window by window, because the browser's jitter buffer
    time-stretches while it adapts, so the delay drifts within a recording."""
    n = int(rate * window)
    out = []
    for start in range(rate, len(heard) - n + 1, n):
        part = heard[start : start + n]
        if np.sqrt(np.mean(part.astype(np.float64) ** 2)) < 100:
            continue
        lag, corr = best_match(part, mic, range(start - rate, start + 1))
        out.append(((start - lag) / rate, corr))
    return out


def latency(arrival: float, start: float, lag: int, period: int, rate: int) -> float:
    """Seconds between sending and receiving the sample found at ``lag`` (mod the
    signal's period), for a sender that plays sample k at ``start + k / rate``."""
    sent_by_now = round((arrival - start) * rate)
    return ((sent_by_now - lag) % period) / rate


class SignalTrack(MediaStreamTrack):
    """Plays a 48 kHz signal in 20 ms frames, on the loop's clock, looping."""

    kind = "audio"

    def __init__(self, pcm: Pcm, rate: int = 48000) -> None:
        super().__init__()
        self.pcm, self.rate, self.n = pcm, rate, rate // 50
        self.start: float | None = None
        self.k = 0

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        due = self.start + self.k * self.n / self.rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        i = (self.k * self.n) % len(self.pcm)
        chunk = np.resize(np.roll(self.pcm, -i), self.n)
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = self.rate, self.k * self.n, fractions.Fraction(1, self.rate)
        self.k += 1
        return frame


class ScriptedTrack(MediaStreamTrack):
    """Returns the given frames at once (as a backlog in aiortc's queue would), then ends."""

    kind = "audio"

    def __init__(self, frames: list[object]) -> None:
        super().__init__()
        self.frames = collections.deque(frames)
        self.exhausted = asyncio.Event()

    async def recv(self) -> Any:  # malformed objects too, on purpose
        if not self.frames:
            self.exhausted.set()
            raise MediaStreamError
        return self.frames.popleft()


def decoded(k: int, pts: int | None = None, rate: int = 48000) -> av.AudioFrame:
    """What aiortc's Opus decoder yields: 20 ms of 48 kHz stereo s16, value k in both channels."""
    n = rate // 50
    frame = av.AudioFrame.from_ndarray(np.full((1, 2 * n), 1000 + k, dtype=np.int16), format="s16", layout="stereo")
    frame.sample_rate, frame.time_base = rate, fractions.Fraction(1, rate)
    frame.pts = k * n if pts is None else pts
    return frame


def write_wav(path: Path, pcm: Pcm, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


@contextlib.contextmanager
def loopback_only_network() -> Iterator[None]:
    """Move this thread (the event loop's) into a new network namespace with only ``lo``, up.

    A network namespace belongs to a thread, and children inherit it: sockets the
    loop opens and the processes it spawns (Playwright's driver, Chromium) see
    only loopback. The thread goes back to its namespace on exit.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            pytest.fail(f"cannot create a network namespace ({os.strerror(err)}): this test runs as root")
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                ifreq = struct.pack("16sH22x", b"lo", 0)
                flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
                fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
            yield
        finally:
            if libc.setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "could not return to the original network namespace")
    finally:
        os.close(original)
