"""The records' recorder (one writer process for every call): where each side's
frames land, what a crash leaves, and that it never blocks or grows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from voxline.media.frames import Audio
from voxline.media.recorder import AGENT, CALLER
from voxline.media.recording_worker import CLOSE, FRAME, HEADER, OPEN, Worker
from voxline.records.recording import RecordingWriter, StereoRecording


def _wait(pred: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.01)


def test_both_sides_land_where_they_were_heard(tmp_path: Path) -> None:
    now = [100.0]
    rec = StereoRecording(tmp_path / "a.wav", lambda: now[0])
    caller = np.arange(320, dtype=np.int16) + 1  # 20 ms at 16 kHz
    for k in range(100):  # 2 s of caller; the agent speaks from 1 s to 1.5 s, at 8 kHz
        now[0] = 100.0 + k * 0.02
        rec.put(CALLER, Audio(caller, 16000, k * 320, now[0]))
        if 50 <= k < 75:
            rec.put(AGENT, Audio(np.full(160, 2000, np.int16), 8000, 0, now[0]))
    rec.close()
    pcm, rate = sf.read(str(tmp_path / "a.wav"), dtype="int16")
    assert rate == 16000 and pcm.shape == (32000, 2)
    assert np.array_equal(pcm[:320, 0], caller) and np.array_equal(pcm[31680:, 0], caller)
    loud = np.flatnonzero(np.abs(pcm[:, 1].astype(np.int32)) > 1000)
    assert abs(loud[0] - 16000) < 160 and abs(loud[-1] - 24000) < 160  # 1.0 s to 1.5 s
    assert rec.dropped == 0 and rec.error is None


def test_a_late_frame_within_the_hold_lands_in_place(tmp_path: Path) -> None:
    now = [0.0]
    rec = StereoRecording(tmp_path / "b.wav", lambda: now[0])
    ones = np.ones(320, np.int16)
    for k in range(50):
        now[0] = k * 0.02
        if k != 10:
            rec.put(CALLER, Audio(ones * (k + 1), 16000, k * 320, now[0]))
        if k == 14:  # 80 ms late
            rec.put(CALLER, Audio(ones * 11, 16000, 10 * 320, now[0]))
    rec.close()
    pcm, _ = sf.read(str(tmp_path / "b.wav"), dtype="int16")
    assert (pcm[3200:3520, 0] == 11).all() and (pcm[3520:3840, 0] == 12).all()


def test_the_file_opens_during_the_call_and_nothing_after_close_is_taken(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "c.wav"
    rec = StereoRecording(path, lambda: now[0])
    frame = np.full(320, 100, np.int16)
    for k in range(150):  # 3 s, faster than real time
        now[0] = k * 0.02
        rec.put(CALLER, Audio(frame, 16000, k * 320, now[0]))
    # What a kill -9 would find: a valid file holding all but the last second.
    _wait(lambda: path.exists() and sf.info(str(path)).frames >= 2 * 16000)  # the worker opens it
    rec.close()
    rec.put(CALLER, Audio(frame, 16000, 150 * 320, 3.0))
    assert rec.dropped == 1
    assert sf.info(str(path)).frames == 150 * 320


def test_a_stalled_worker_fills_the_bound_then_frames_are_dropped_and_counted(tmp_path: Path) -> None:
    writer = RecordingWriter(max_pending=256 << 10)
    now = [0.0]
    rec = StereoRecording(tmp_path / "d.wav", lambda: now[0], writer=writer)
    pid = writer.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # the worker stops reading: the pipe fills, then the buffer
    try:
        frame = np.ones(320, np.int16)
        for k in range(5000):  # 100 s handed over at once: more than pipe and bound hold
            now[0] = k * 0.02
            rec.put(CALLER, Audio(frame * (k % 100 + 1), 16000, k * 320, now[0]))
        assert rec.dropped > 0
        assert len(writer.buf) <= 256 << 10  # the bound held
    finally:
        os.kill(pid, signal.SIGCONT)
    rec.close()
    kept = 5000 - rec.dropped
    pcm, _ = sf.read(str(tmp_path / "d.wav"), dtype="int16")
    assert rec.error is None and len(pcm) == kept * 320  # what was taken is whole, from the start
    assert (pcm[::320, 0] == (np.arange(kept) % 100 + 1)).all()
    writer.shutdown()


def test_a_worker_that_dies_ends_its_recordings_and_the_next_starts_a_new_one(tmp_path: Path) -> None:
    writer = RecordingWriter()
    now = [0.0]
    rec = StereoRecording(tmp_path / "e.wav", lambda: now[0], writer=writer)
    for k in range(100):
        now[0] = k * 0.02
        rec.put(CALLER, Audio(np.full(320, 7, np.int16), 16000, k * 320, now[0]))
    _wait(lambda: rec.written > 0)
    first = writer.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    _wait(lambda: rec.error is not None)
    assert "exited" in (rec.error or "")
    rec.put(CALLER, Audio(np.full(320, 7, np.int16), 16000, 100 * 320, 2.0))  # harmless
    rec.close(timeout=1.0)
    assert sf.info(str(tmp_path / "e.wav")).frames > 0  # whole up to its last header
    again = StereoRecording(tmp_path / "f.wav", lambda: now[0], writer=writer)
    again.put(CALLER, Audio(np.full(320, 9, np.int16), 16000, 0, 0.0))
    again.close()
    assert writer.pid not in (None, first) and again.error is None
    assert sf.info(str(tmp_path / "f.wav")).frames == 320
    writer.shutdown()


_KILLED = """
import os, signal, sys, time
import numpy as np
from voxline.media.frames import Audio
from voxline.media.recording_worker import CLOSE, FRAME, HEADER, OPEN, Worker
from voxline.records.recording import RecordingWriter, StereoRecording
rec = StereoRecording(sys.argv[1], time.monotonic)
for k in range(150):  # 3 s, in real time
    rec.put(0, Audio(np.full(320, 5, np.int16), 16000, k * 320, time.monotonic()))
    time.sleep(0.02)
time.sleep(0.3)  # more than a tick: everything was handed over
print(rec._writer.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_after_kill_9_of_the_service_the_worker_writes_all_it_was_sent_and_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "g.wav"
    res = subprocess.run([sys.executable, "-c", _KILLED, str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == -signal.SIGKILL, res.stderr
    worker = int(res.stdout.split()[0])
    _wait(lambda: not Path(f"/proc/{worker}").exists(), 10)  # stdin ended: it finished and exited
    pcm, rate = sf.read(str(path), dtype="int16")
    assert rate == 16000 and len(pcm) == 150 * 320 and (pcm[:, 0] == 5).all()


def test_the_worker_reads_records_cut_anywhere(tmp_path: Path) -> None:
    """Sans-I/O: the same records fed whole or in random cuts give the same file."""
    rng = np.random.default_rng(3)
    records = bytearray()
    for rid in (1, 2):
        path = str(tmp_path / f"w{rid}.wav").encode()
        records += HEADER.pack(OPEN, rid, 0, 8000, 0, 0.0, len(path)) + path
    for k in range(100):
        pcm = rng.integers(-9000, 9000, 160, dtype=np.int16)
        for rid in (1, 2):
            records += HEADER.pack(FRAME, rid, k % 2, 8000, k * 160, k * 0.02, pcm.nbytes) + pcm.tobytes()
    records += HEADER.pack(99, 1, 0, 0, 0, 0.0, 0)  # an unknown kind: counted, skipped
    for rid in (1, 2):
        records += HEADER.pack(CLOSE, rid, 0, 0, 0, 0.0, 0)
    worker = Worker()
    cuts = sorted(rng.choice(len(records), 40, replace=False))
    for a, b in zip([0, *cuts], [*cuts, len(records)]):
        worker.feed(bytes(records[a:b]))
    report = worker.step().decode().split("\n")
    assert worker.bad == 1 and not worker.tracks
    assert sorted(line.split()[0] for line in report if line) == ["c", "c"]
    one, _ = sf.read(str(tmp_path / "w1.wav"), dtype="int16")
    two, _ = sf.read(str(tmp_path / "w2.wav"), dtype="int16")
    assert one.shape == (100 * 160, 2) and np.array_equal(one, two)
