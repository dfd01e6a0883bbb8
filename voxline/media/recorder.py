"""A call's recording: stereo WAV, the caller on the left, the agent on the right,
both placed on the session clock at the moment the audio passed their tap (the
caller's as it arrived, the agent's as playout sent it: what the caller heard).

``Tap`` is a transform that hands each audio frame to the recording and passes
it on unchanged; the recording never blocks the media path: frames go into a
bounded queue (full: the frame is dropped and counted) read by a writer thread,
which streams to disk with soundfile. Crash safety: the thread holds at most
``HOLD`` seconds (to place late frames of either side) and rewrites the WAV
header every ``SYNC`` seconds of audio, so after a kill -9 the file opens and
lacks at most ``HOLD + SYNC`` (under one second) at its end.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from .frames import Audio, Frame

__all__ = ["CallRecording", "Tap", "RATE", "CALLER", "AGENT", "HOLD", "SNAP", "sync_header"]

log = logging.getLogger(__name__)

RATE = 16000
CALLER, AGENT = 0, 1
HOLD = 0.3  # s of audio held back so a side's late frame still lands in place
SYNC = 0.5  # s of audio between header rewrites (what a crash can lose, with HOLD)
QUEUE_FRAMES = 500  # 5 s of 20 ms frames per side
SNAP = 0.005  # s: a frame this close to where its side's last one ended continues it (rounding)
_SFC_UPDATE_HEADER_NOW = 0x1060  # libsndfile sf_command: rewrite the header for the frames written


class CallRecording:
    def __init__(self, path: str | Path, clock: Callable[[], float]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock  # the session's (the pipeline's, once it exists)
        self._t0: float | None = None
        self._caller_origin: float | None = None
        self._queue: queue.Queue[tuple[int, float, np.ndarray, int] | None] = queue.Queue(2 * QUEUE_FRAMES)
        self._file = sf.SoundFile(self.path, "w", samplerate=RATE, channels=2, subtype="PCM_16", format="WAV")
        self._sync_header()
        self.dropped = 0
        self.written = 0  # frames (sample pairs) on disk
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"recording:{self.path.stem}", daemon=True)
        self._thread.start()

    # -- the media path's side -------------------------------------------------------

    def put(self, side: int, frame: Audio) -> None:
        """Hand a frame over (never blocks). The agent's frames are placed at the
        time playout sent them (their ``arrival``: the playout clock); the caller's
        by their stream position (``pts``) from where the first one arrived, so the
        jitter of their arrival does not cut up the caller's side."""
        now = self.clock()
        if self._t0 is None:
            self._t0 = now
        arrived = (frame.arrival or now) - self._t0
        if side == CALLER:
            position = frame.pts / frame.rate
            if self._caller_origin is None:
                self._caller_origin = arrived - position
            start = self._caller_origin + position
        else:
            start = arrived
        try:
            self._queue.put_nowait((side, start, frame.pcm, frame.rate))
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        """Write what is held and close the file (blocks: call from a thread at the end)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            self.dropped += 1
        self._thread.join(timeout)

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        base = 0  # sample index of buf[0] on the recording's timeline
        buf = np.zeros((0, 2), np.int16)
        ends = [0, 0]  # where each side's last frame ended
        resamplers: dict[tuple[int, int], Any] = {}
        since_sync = 0
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                side, at, pcm, rate = item
                if rate != RATE:
                    rs = resamplers.get((side, rate))
                    if rs is None:
                        rs = resamplers[(side, rate)] = soxr.ResampleStream(rate, RATE, 1, dtype="int16")
                    pcm = rs.resample_chunk(np.asarray(pcm, np.int16))
                start = int(round(at * RATE))
                if abs(start - ends[side]) <= SNAP * RATE:
                    start = ends[side]
                start = max(start, base)  # older than what is on disk: clipped
                end = start + len(pcm)
                if end <= base:
                    continue
                if end - base > len(buf):
                    buf = np.concatenate([buf, np.zeros((end - base - len(buf), 2), np.int16)])
                buf[start - base:end - base, side] = pcm[len(pcm) - (end - start):]
                ends[side] = end
                ready = len(buf) - int(HOLD * RATE)
                if ready > 0:
                    self._file.write(buf[:ready])
                    self.written += ready
                    since_sync += ready
                    base += ready
                    buf = buf[ready:]
                    if since_sync >= SYNC * RATE:
                        self._sync_header()
                        since_sync = 0
            if len(buf):
                self._file.write(buf)
                self.written += len(buf)
        except Exception as exc:  # a full disk ends the recording, never the call
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("recording %s failed: %s", self.path, self.error)
        finally:
            try:
                self._file.close()
            except Exception:
                log.exception("closing recording %s failed", self.path)

    def _sync_header(self) -> None:
        sync_header(self._file)


def sync_header(file: sf.SoundFile) -> None:
    """Rewrite ``file``'s header for the frames written so far. libsndfile writes
    through to the kernel at once (no buffer of its own), so after this the file
    on disk is whole for a process that dies (kill -9). SoundFile.flush() would
    fsync (power loss): a disk wait per call several times a second, which is not
    what a recording needs to survive a crash."""
    sf._snd.sf_command(file._file, _SFC_UPDATE_HEADER_NOW, sf._ffi.NULL, 0)


class Tap:
    """A transform handing each audio frame to a recording's side, unchanged.
    The tap that ``owns`` the recording closes it when the pipeline stops."""

    latency = 0.0

    def __init__(self, recording: CallRecording, side: int, name: str, owns: bool = False) -> None:
        self.recording = recording
        self.side = side
        self.name = name
        self.owns = owns

    async def close(self) -> None:
        if self.owns:
            await asyncio.to_thread(self.recording.close)

    def process(self, frame: Frame) -> Sequence[Frame]:
        if type(frame) is Audio:
            self.recording.put(self.side, frame)
        return (frame,)
