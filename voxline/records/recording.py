"""A call's recording, written by one process for every call of the service
(``media.recording_worker``: stereo WAV, the caller left, the agent right, each
placed on the session clock; its docstring has the format and the placement).

The media path's side costs one list append per frame: ``put`` adds the frame
to its side's run (a lock that is never contended on the loop, no wake, no
hand-over of the GIL). Every ``TICK`` a small thread that otherwise sleeps puts
each run on one buffer shared by every recording (a header and the PCM: one
record a side a tick, not one a frame), and the buffer goes to the worker's
stdin in whole writes. The pipe is non-blocking:
a worker that falls behind fills the buffer up to ``max_pending`` bytes, and
then frames are dropped and counted (``dropped``), never waited for.

Measured with ``benchmarks/recording.py`` (W2, 100 calls, webrtcvad): on a
writer thread, the GIL's hand-overs between it and the event loop (a write,
a header rewrite, a yield between calls) cost the loop more than the writing
did; in a process of its own the writing costs about what it is.

Crash safety: the worker keeps each file whole on disk (the header rewritten
every ``SYNC`` of audio); a service killed with ``kill -9`` closes the pipe,
and the worker writes what it was sent and closes every file. What is lost is
what the service had not yet handed over: at most one ``TICK``. A worker that
dies ends the recordings it held (``error``), each file whole up to its last
header; the next recording starts a new worker.

Same interface as ``media.recorder.CallRecording`` (``put``, ``close``,
``clock``, ``dropped``, ``written``, ``error``), so the media path's ``Tap`` and
``CallPort.pull`` take either.
"""

from __future__ import annotations

import atexit
import fcntl
import itertools
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import voxline
from voxline.media.frames import Audio
from voxline.media.recorder import AGENT, CALLER, RATE, SNAP
from voxline.media.recording_worker import CLOSE, FRAME, HEADER, OPEN

__all__ = ["StereoRecording", "RecordingWriter", "shared_writer", "TICK"]

log = logging.getLogger(__name__)

MAX_PENDING = 16 << 20  # bytes held for a worker that falls behind (~5 s of 300 calls at 8 kHz)
TICK = 0.25  # s between hand-overs to the worker: what a kill -9 of the service loses at most
RUN_MAX = 1.0  # s of one side gathered into one record at most
PIPE_SIZE = 1 << 20  # the pipe's capacity asked of the kernel (Linux's default limit)
_F_SETPIPE_SZ = 1031
_PACK, _SIZE = HEADER.pack, HEADER.size
_I16 = np.dtype(np.int16)
_SRC = str(Path(voxline.__file__).resolve().parent.parent)


class RecordingWriter:
    """The service's side of the recording worker: its buffer, its pipe, its reports."""

    def __init__(self, tick: float = TICK, max_pending: int = MAX_PENDING) -> None:
        self.tick = tick
        self.max_pending = max_pending
        self.lock = threading.Lock()  # the buffer's: held for appends only, never across a write
        self._send_lock = threading.Lock()
        self.buf = bytearray()
        self._ids = itertools.count(1)
        self._recordings: dict[int, StereoRecording] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """The worker's process id (its CPU is the recordings' cost)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def add(self, rec: StereoRecording) -> int:
        with self.lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            rid = next(self._ids)
            self._recordings[rid] = rec
            path = str(rec.path).encode()
            self.buf += _PACK(OPEN, rid, 0, rec.rate, 0, 0.0, len(path))
            self.buf += path  # sent at the next tick, before the recording's first frames
        return rid

    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = _SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.Popen([sys.executable, "-m", "voxline.media.recording_worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env, close_fds=True)
        assert proc.stdin is not None and proc.stdout is not None
        fd = proc.stdin.fileno()
        try:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # a lower limit (fs.pipe-max-size): the buffer holds the rest
            pass
        os.set_blocking(fd, False)
        self._proc, self._fd = proc, fd
        self.buf.clear()
        threading.Thread(target=self._read, args=(proc,), name="recordings-reports", daemon=True).start()
        threading.Thread(target=self._pump, args=(proc,), name="recordings-pipe", daemon=True).start()
        log.info("recording worker started (pid %d)", proc.pid)

    def _send(self) -> bool:
        """Write what is buffered, as much as the pipe takes now (never blocks);
        True if some is left for when it drains. The buffer is swapped out under
        the lock and written outside it, so a ``put`` never waits on the pipe."""
        with self._send_lock:  # one sender at a time: the records stay in order
            with self.lock:
                data, self.buf = self.buf, bytearray()
                fd = self._fd
            if not data or fd < 0:
                return False
            try:
                n = os.write(fd, data)
            except BlockingIOError:
                n = 0
            except OSError:  # the worker is gone: its reader ends its recordings
                return False
            if n < len(data):
                with self.lock:
                    self.buf[:0] = memoryview(data)[n:]  # before anything put since
                return True
            return False

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        """Every tick, each recording's runs onto the buffer and the buffer out;
        while the pipe is full, as soon as it drains."""
        fd, full = self._fd, False
        while proc.poll() is None and not self._stopping:
            select.select([], [fd] if full else [], [], self.tick)
            with self.lock:
                if self._proc is not proc:
                    return
                for rec in self._recordings.values():
                    rec._emit_all()
            full = self._send()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        """The worker's reports: bytes written, errors, closes."""
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.decode(errors="replace").rstrip("\n").split(" ", 3)
            try:
                rec = self._recordings.get(int(parts[1]))
            except (IndexError, ValueError):
                continue
            if rec is None:
                continue
            if parts[0] == "w":
                rec.written = int(parts[2])
            elif parts[0] == "e":
                rec.error = " ".join(parts[2:])
                log.error("recording %s failed: %s", rec.path, rec.error)
            elif parts[0] == "c":
                rec.written = int(parts[2])
                if parts[3] != "-":
                    rec.error = parts[3]
                with self.lock:
                    self._recordings.pop(int(parts[1]), None)
                rec._closed.set()
        proc.wait()
        with self.lock:
            if self._proc is proc:
                self._proc, self._fd = None, -1
                self.buf.clear()
            gone, self._recordings = self._recordings, {}
        for rec in gone.values():
            if rec.error is None:
                rec.error = f"recording worker exited ({proc.returncode})"
            rec._closed.set()
        if gone:
            log.error("recording worker exited (%s) with %d recordings open", proc.returncode, len(gone))

    def shutdown(self, timeout: float = 5.0) -> None:
        """Send what is held, end the worker's input, wait for it to close the files."""
        with self.lock:
            proc, fd, self._stopping = self._proc, self._fd, True
            for rec in self._recordings.values():
                rec._emit_all()
        if proc is None:
            return
        deadline = time.monotonic() + timeout
        try:
            while self._send() and time.monotonic() < deadline:
                select.select([], [fd], [], 0.05)
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(max(0.1, deadline - time.monotonic()))
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("recording worker did not end cleanly: %s", exc)
            proc.kill()
        finally:
            self._stopping = False


_shared: RecordingWriter | None = None


def shared_writer() -> RecordingWriter:
    global _shared
    if _shared is None:
        _shared = RecordingWriter()
        atexit.register(_shared.shutdown)
    return _shared


class _Run:
    """One side's back-to-back frames: where the first goes, and where the next must start."""

    __slots__ = ("rate", "pts", "arrival", "next", "pcms", "samples")

    def __init__(self, rate: int, pts: int, arrival: float, next_at: float, pcm: Any) -> None:
        self.rate, self.pts, self.arrival = rate, pts, arrival
        self.next = next_at  # the caller's: a stream position; the agent's: a time
        self.pcms = [pcm]
        self.samples = len(pcm)


class StereoRecording:
    """``rate``: the recording's (the runtime gives a narrowband call's wire rate,
    so neither side is resampled; anything else is resampled to it as it is placed).

    Each side's back-to-back frames are handed over as one run (the caller's by
    stream position, the agent's by arrival, as the worker would place them):
    one record a side a tick, not one a frame."""

    def __init__(self, path: str | Path, clock: Callable[[], float], writer: RecordingWriter | None = None,
                 rate: int = RATE) -> None:
        self.path = Path(path)
        self.rate = rate
        self.clock = clock  # the session's (the pipeline's, once it exists)
        self.dropped = 0
        self.written = 0  # sample pairs on disk, as the worker last reported
        self.error: str | None = None
        self._closing = False
        self._closed = threading.Event()
        self._runs: list[_Run | None] = [None, None]  # per side, the run being gathered
        self._writer = writer or shared_writer()
        self._id = self._writer.add(self)

    def put(self, side: int, frame: Audio) -> None:
        """Hand a frame over: never blocks, never waits for the worker."""
        if self._closing:
            self.dropped += 1
            return
        pcm = frame.pcm
        if pcm.dtype != _I16:
            pcm = pcm.astype(np.int16)
        n, rate, pts = len(pcm), frame.rate, frame.pts
        arrival = frame.arrival or self.clock()
        with self._writer.lock:
            run = self._runs[side]
            if run is not None and run.rate == rate and run.samples < rate * RUN_MAX and \
                    (pts == run.next if side == CALLER else abs(arrival - run.next) <= SNAP):
                run.next += n if side == CALLER else n / rate
                run.pcms.append(pcm)
                run.samples += n
                return
            if run is not None:
                self._emit(side)
            self._runs[side] = _Run(rate, pts, arrival, pts + n if side == CALLER else arrival + n / rate, pcm)

    def _emit(self, side: int) -> None:
        """The side's run onto the writer's buffer (the lock is held); dropped whole past its bound."""
        run = self._runs[side]
        if run is None:
            return
        self._runs[side] = None
        w = self._writer
        if len(w.buf) + _SIZE + 2 * run.samples > w.max_pending:
            self.dropped += len(run.pcms)
            return
        buf = w.buf
        buf += _PACK(FRAME, self._id, side, run.rate, run.pts, run.arrival, 2 * run.samples)
        for pcm in run.pcms:
            try:
                buf += pcm.data
            except TypeError:  # not contiguous
                buf += pcm.tobytes()

    def _emit_all(self) -> None:
        self._emit(CALLER)
        self._emit(AGENT)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is held and close the file (blocks: call from a thread at the end)."""
        if not self._closing:
            self._closing = True
            w = self._writer
            with w.lock:
                self._emit_all()
                w.buf += _PACK(CLOSE, self._id, 0, 0, 0, 0.0, 0)
            w._send()  # the pump sends the rest if the pipe is full
        if not self._closed.wait(timeout):
            log.warning("recording %s not closed within %.1f s", self.path, timeout)
