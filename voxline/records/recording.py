"""A call's recording on one writer thread for every call: stereo WAV, the caller
left, the agent right, placed on the session clock as ``media.recorder`` places
them (the caller's frames by stream position from where the first arrived, the
agent's at the time playout sent them: what the caller heard).

Why not ``media.recorder.CallRecording`` (a thread and a ``queue.Queue`` per
call): measured with ``benchmarks/recording.py`` (W2, 20 calls, webrtcvad),
its per-frame hand-over (a lock, and a wake of the call's thread, twice per
20 ms per call) doubled the process's CPU (19% -> 41%). Here ``put`` appends to
a bounded deque (no lock, no wake), and one shared thread drains every
recording each ``TICK`` and writes in whole chunks. Crash safety is unchanged:
at most ``HOLD`` held for late frames, the header rewritten every ``SYNC`` of
audio, plus at most one ``TICK`` not yet drained (0.3 + 0.4 + 0.25 s: under one
second). The frames' times are worked out on the thread, and each side's
back-to-back frames are placed (and resampled) as one run per pass: per frame,
Python's overhead would be most of the cost.

Same interface (``put``, ``close``, ``clock``, ``dropped``, ``written``,
``error``), so the media path's ``Tap`` and ``CallPort.pull`` take either.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from voxline.media.frames import Audio
from voxline.media.recorder import CALLER, HOLD, QUEUE_FRAMES, RATE, SNAP

__all__ = ["StereoRecording", "RecordingWriter", "shared_writer", "TICK"]

log = logging.getLogger(__name__)

TICK = 0.25  # s between the writer's passes over the recordings
SYNC = 0.4  # s of audio between header rewrites: HOLD + SYNC + TICK < 1 s lost to a crash
_SFC_UPDATE_HEADER_NOW = 0x1060  # libsndfile sf_command: rewrite the header for the frames written


class RecordingWriter:
    """The thread that writes every recording of the process."""

    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        self._recordings: set[StereoRecording] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, rec: StereoRecording) -> None:
        with self._lock:
            self._recordings.add(rec)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="recordings", daemon=True)
                self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.tick)
            self._wake.clear()
            with self._lock:
                recs = list(self._recordings)
            for rec in recs:
                if rec._drain():
                    with self._lock:
                        self._recordings.discard(rec)
                time.sleep(0)  # hand the GIL back between calls: the event loop's frames are due every 20 ms


_shared: RecordingWriter | None = None


def shared_writer() -> RecordingWriter:
    global _shared
    if _shared is None:
        _shared = RecordingWriter()
    return _shared


class StereoRecording:
    """``rate``: the recording's (the runtime gives a narrowband call's wire rate,
    so neither side is resampled; anything else is resampled to it as it is placed)."""

    def __init__(self, path: str | Path, clock: Callable[[], float], writer: RecordingWriter | None = None,
                 rate: int = RATE) -> None:
        self.path = Path(path)
        self.rate = rate
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock  # the session's (the pipeline's, once it exists)
        self._t0: float | None = None
        self._caller_origin: float | None = None
        self._items: collections.deque[tuple[int, Audio]] = collections.deque()
        self._file = sf.SoundFile(self.path, "w", samplerate=rate, channels=2, subtype="PCM_16", format="WAV")
        self._sync_header()
        self.dropped = 0
        self.written = 0  # frames (sample pairs) on disk
        self.error: str | None = None
        self._closing = False
        self._closed = threading.Event()
        # The writer thread's state.
        self._base = 0  # sample index of _buf[0] on the recording's timeline
        self._buf = np.zeros((rate, 2), np.int16)  # grows by at least a second (amortised)
        self._len = 0  # samples of _buf in use
        self._ends = [0, 0]  # where each side's last frame ended
        self._resamplers: dict[tuple[int, int], Any] = {}
        self._since_sync = 0
        self._writer = writer or shared_writer()
        self._writer.add(self)

    # -- the media path's side (the event loop) ------------------------------------------

    def put(self, side: int, frame: Audio) -> None:
        """Hand a frame over: never blocks, never waits for the thread."""
        if self._closing or len(self._items) >= 2 * QUEUE_FRAMES:
            self.dropped += 1
            return
        if not frame.arrival:  # its time is when it passed, on the session's clock
            frame = Audio(frame.pcm, frame.rate, frame.pts, self.clock(), frame.turn)
        self._items.append((side, frame))  # deque.append: atomic, no lock

    def _start(self, side: int, frame: Audio) -> float:
        """Where ``frame`` goes on the recording's timeline, in seconds (as media.recorder places it)."""
        if self._t0 is None:
            self._t0 = frame.arrival
        arrived = frame.arrival - self._t0
        if side != CALLER:
            return arrived
        position = frame.pts / frame.rate
        if self._caller_origin is None:
            self._caller_origin = arrived - position
        return self._caller_origin + position

    def close(self, timeout: float = 5.0) -> None:
        """Write what is held and close the file (blocks: call from a thread at the end)."""
        self._closing = True
        self._writer.wake()
        if not self._closed.wait(timeout):
            log.warning("recording %s not closed within %.1f s", self.path, timeout)

    # -- the writer thread ---------------------------------------------------------------

    def _drain(self) -> bool:
        """Place and write what has come; True once closed (the writer forgets it)."""
        closing = self._closing  # read before draining: a frame put after it is dropped anyway
        try:
            if self.error is None:
                self._place_runs()
                if closing:
                    for side, rate in list(self._resamplers):
                        self._flush_resampler(side, rate)
                self._write_ready(0 if closing else int(HOLD * self.rate))
        except Exception as exc:  # a full disk ends the recording, never the call
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("recording %s failed: %s", self.path, self.error)
            self._items.clear()
        if not closing:
            return False
        self._resamplers.clear()
        try:
            self._file.close()
        except Exception:
            log.exception("closing recording %s failed", self.path)
        self._closed.set()
        return True

    def _place_runs(self) -> None:
        """Place what has come, each side's back-to-back frames as one run (one
        resampling, one copy: per frame, Python's overhead would be most of the cost)."""
        runs: dict[int, tuple[float, list[Any], int, float]] = {}  # side -> (start, pcms, rate, end)
        items = self._items
        while items:
            side, frame = items.popleft()
            at, pcm, rate = self._start(side, frame), frame.pcm, frame.rate
            run = runs.get(side)
            if run is not None and run[2] == rate and abs(at - run[3]) <= SNAP:
                run[1].append(pcm)
                runs[side] = (run[0], run[1], rate, run[3] + len(pcm) / rate)
                continue
            if run is not None:
                self._place(side, run[0], _joined(run[1]), run[2])
            runs[side] = (at, [pcm], rate, at + len(pcm) / rate)
        for side, (at, pcms, rate, _) in runs.items():
            self._place(side, at, _joined(pcms), rate)

    def _flush_resampler(self, side: int, rate: int) -> None:
        """A side's audio stopped (a gap, or the end): what its resampler still
        holds goes where that audio ended, not in front of the next."""
        rs = self._resamplers.pop((side, rate), None)
        if rs is not None:
            tail = rs.resample_chunk(np.zeros(0, np.int16), last=True)
            if len(tail):
                self._put_pcm(side, self._ends[side], tail)

    def _place(self, side: int, at: float, pcm: Any, rate: int) -> None:
        own = self.rate
        if rate != own:
            if (side, rate) in self._resamplers and int(round(at * own)) - self._ends[side] > SNAP * own:
                self._flush_resampler(side, rate)
            rs = self._resamplers.get((side, rate))
            if rs is None:
                rs = self._resamplers[(side, rate)] = soxr.ResampleStream(rate, own, 1, dtype="int16")
            pcm = rs.resample_chunk(np.asarray(pcm, np.int16))
        start = int(round(at * own))
        if abs(start - self._ends[side]) <= SNAP * own:
            start = self._ends[side]
        self._put_pcm(side, start, pcm)

    def _put_pcm(self, side: int, start: int, pcm: Any) -> None:
        base = self._base
        start = max(start, base)  # older than what is on disk: clipped
        end = start + len(pcm)
        if end <= base:
            return
        need = end - base
        if need > len(self._buf):
            grown = np.zeros((max(need, len(self._buf) + self.rate), 2), np.int16)
            grown[: self._len] = self._buf[: self._len]
            self._buf = grown
        self._buf[start - base : end - base, side] = pcm[len(pcm) - (end - start) :]
        self._len = max(self._len, need)
        self._ends[side] = end

    def _write_ready(self, hold: int) -> None:
        ready = self._len - hold
        if ready <= 0:
            return
        self._file.write(self._buf[:ready])
        self.written += ready
        self._since_sync += ready
        self._base += ready
        rest = self._len - ready
        self._buf[:rest] = self._buf[ready : self._len]
        self._buf[rest : self._len] = 0
        self._len = rest
        if self._since_sync >= SYNC * self.rate:
            self._sync_header()
            self._since_sync = 0

    def _sync_header(self) -> None:
        # libsndfile writes through to the kernel at once (no buffer of its own), so
        # after this the file on disk is whole for a process that dies (kill -9).
        # SoundFile.flush() would fsync (power loss): a disk wait per call several
        # times a second, which is not what a recording needs to survive a crash.
        sf._snd.sf_command(self._file._file, _SFC_UPDATE_HEADER_NOW, sf._ffi.NULL, 0)


def _joined(pcms: list[Any]) -> Any:
    return pcms[0] if len(pcms) == 1 else np.concatenate(pcms)
