"""The process that writes every call's recording: stereo WAV, the caller left,
the agent right, placed on the session clock as ``media.recorder`` places them
(the caller's frames by stream position from where the first arrived, the
agent's at the time playout sent them: what the caller heard).

It runs as ``python -m voxline.media.recording_worker``, started by
``records.recording.RecordingWriter``, and reads records from its stdin:

    header  = <B kind> <I id> <B side> <I rate> <q pts> <d arrival> <I nbytes>
    payload = nbytes: the PCM (int16, native order) of a FRAME, the UTF-8 path of an OPEN

``OPEN`` starts a recording at ``rate`` (the header's), ``FRAME`` hands it one
side's frame, ``CLOSE`` writes what it holds and closes it. Each ``PASS`` the
worker places what came (each side's back-to-back frames as one run: one
resampling, one copy), writes all but the last ``HOLD`` (so a late frame still
lands in place) and, every ``SYNC`` of audio, rewrites the header, so the file
on disk is whole for a reader at any time. On stdout it reports, one line each,
in one write per pass: ``w <id> <written>`` (sample pairs on disk), ``c <id>
<written> <error or ->`` (closed), ``e <id> <error>`` (failed: a full disk ends
the recording, never the call).

Why a process: on a thread, every hand-over of the GIL between the writer and
the event loop (a file write, a header rewrite, a yield between calls) cost
the loop more than the writing did (``benchmarks/recording.py``). Here the
loop only appends to a buffer; the process has a GIL of its own.

When the service dies (``kill -9``), stdin ends: the worker places and writes
everything it was sent and closes every file, so a recording lacks only what
the service had not yet handed over (at most its tick, 0.25 s). It ignores SIGINT
and SIGTERM, which a terminal or a service manager sends to the whole group:
the service's own shutdown closes the recordings, and then stdin.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import struct
import sys
import time
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from voxline.media.recorder import CALLER, HOLD, SNAP, sync_header

__all__ = ["HEADER", "OPEN", "FRAME", "CLOSE", "PASS", "SYNC", "Worker", "main"]

HEADER = struct.Struct("=BIBIqdI")
OPEN, FRAME, CLOSE = 1, 2, 3
PASS = 0.5  # s between passes (the header is rewritten at each: SYNC < PASS)
SYNC = 0.4  # s of audio between header rewrites: a worker killed loses under HOLD + PASS + SYNC
READ = 1 << 20

# (side, rate, pts, arrival, pcm)
Item = tuple[int, int, int, float, Any]


class Track:
    """One recording: where its frames go, and its file."""

    def __init__(self, path: str, rate: int) -> None:
        self.rate = rate
        self.error: str | None = None
        self.items: collections.deque[Item] = collections.deque()
        self.closing = False
        self.written = 0  # sample pairs on disk
        self.reported = -1  # the last ``written`` reported
        self.error_reported = False
        self._t0: float | None = None
        self._caller_origin: float | None = None
        self._base = 0  # sample index of _buf[0] on the recording's timeline
        self._buf = np.zeros((rate, 2), np.int16)  # grows by at least a second (amortised)
        self._len = 0  # samples of _buf in use
        self._ends = [0, 0]  # where each side's last frame ended
        self._resamplers: dict[tuple[int, int], Any] = {}
        self._since_sync = 0
        self._file: Any = None
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self._file = sf.SoundFile(path, "w", samplerate=rate, channels=2, subtype="PCM_16", format="WAV")
            self._sync_header()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def step(self) -> None:
        """Place and write what has come (all of it once closing)."""
        if self.error is None:
            try:
                self._place_runs()
                if self.closing:
                    for side, rate in list(self._resamplers):
                        self._flush_resampler(side, rate)
                self._write_ready(0 if self.closing else int(HOLD * self.rate))
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
        if self.error is not None:
            self.items.clear()

    def close(self) -> None:
        self._resamplers.clear()
        if self._file is not None:
            try:
                self._file.close()
            except Exception as exc:
                self.error = self.error or f"{type(exc).__name__}: {exc}"
            self._file = None

    def _start(self, side: int, rate: int, pts: int, arrival: float) -> float:
        """Where a frame goes on the recording's timeline, in seconds."""
        if self._t0 is None:
            self._t0 = arrival
        arrived = arrival - self._t0
        if side != CALLER:
            return arrived
        position = pts / rate
        if self._caller_origin is None:
            self._caller_origin = arrived - position
        return self._caller_origin + position

    def _place_runs(self) -> None:
        runs: dict[int, tuple[float, list[Any], int, float]] = {}  # side -> (start, pcms, rate, end)
        items = self.items
        while items:
            side, rate, pts, arrival, pcm = items.popleft()
            at = self._start(side, rate, pts, arrival)
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
        if self._since_sync >= SYNC * self.rate or self.closing:
            self._sync_header()
            self._since_sync = 0

    def _sync_header(self) -> None:
        sync_header(self._file)


def _joined(pcms: list[Any]) -> Any:
    return pcms[0] if len(pcms) == 1 else np.concatenate(pcms)


class Worker:
    """The records read from the service, and the tracks they feed (sans-I/O:
    ``feed(data)``, ``step()``, ``finish()``; ``main`` does the reading)."""

    def __init__(self) -> None:
        self.tracks: dict[int, Track] = {}
        self._pending = bytearray()
        self.closing = False  # a CLOSE came: the next pass is due at once
        self.bad = 0

    def feed(self, data: bytes) -> None:
        buf = self._pending
        buf += data
        size = HEADER.size
        at = 0
        end = len(buf)
        tracks = self.tracks
        while end - at >= size:
            kind, rid, side, rate, pts, arrival, nbytes = HEADER.unpack_from(buf, at)
            if end - at - size < nbytes:
                break
            body = at + size
            at = body + nbytes
            if kind == FRAME:
                track = tracks.get(rid)
                if track is not None and track.error is None and not track.closing:
                    pcm = np.frombuffer(buf, np.int16, nbytes // 2, body).copy()
                    track.items.append((side, rate, pts, arrival, pcm))
            elif kind == OPEN:
                tracks[rid] = Track(bytes(buf[body:at]).decode(), rate)
            elif kind == CLOSE:
                track = tracks.get(rid)
                if track is not None and not track.closing:
                    track.closing = self.closing = True
            else:
                self.bad += 1
        del buf[:at]

    def step(self) -> bytes:
        """One pass over every track; the status lines to report."""
        lines: list[str] = []
        for rid, track in list(self.tracks.items()):
            track.step()
            if track.closing:
                track.close()
                del self.tracks[rid]
                lines.append(f"c {rid} {track.written} {track.error or '-'}")
            elif track.error is not None and not track.error_reported:
                track.error_reported = True
                lines.append(f"e {rid} {track.error}")
            elif track.written != track.reported and track.error is None:
                track.reported = track.written
                lines.append(f"w {rid} {track.written}")
        self.closing = False
        return ("\n".join(lines) + "\n").encode() if lines else b""

    def finish(self) -> bytes:
        """stdin ended: everything sent is written, every file closed."""
        for track in self.tracks.values():
            track.closing = True
        return self.step()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    worker = Worker()
    due = time.monotonic() + PASS

    def report(lines: bytes) -> None:
        view = memoryview(lines)
        while view:
            try:
                view = view[os.write(fd_out, view):]
            except BrokenPipeError:
                return  # the service is gone: the files still get written and closed

    while True:
        wait = max(0.0, due - time.monotonic())
        ready, _, _ = select.select([fd_in], [], [], wait)
        if ready:
            data = os.read(fd_in, READ)
            if not data:
                report(worker.finish())
                return
            worker.feed(data)
        if worker.closing or time.monotonic() >= due:  # a close is answered at once, not at the tick
            report(worker.step())
            due = time.monotonic() + PASS


if __name__ == "__main__":
    main()
