"""The records' recorder (one writer thread for every call): where each side's
frames land, what a crash leaves, and that it never blocks or grows."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import soundfile as sf

from voxline.media.frames import Audio
from voxline.media.recorder import AGENT, CALLER
from voxline.records.recording import StereoRecording


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
    _wait(lambda: sf.info(str(path)).frames >= 2 * 16000)
    rec.close()
    rec.put(CALLER, Audio(frame, 16000, 150 * 320, 3.0))
    assert rec.dropped == 1
    assert sf.info(str(path)).frames == 150 * 320


def test_a_full_hand_over_drops_and_counts_never_blocks(tmp_path: Path) -> None:
    now = [0.0]
    rec = StereoRecording(tmp_path / "d.wav", lambda: now[0])
    frame = np.zeros(320, np.int16)
    started = time.perf_counter()
    for k in range(5000):  # 100 s handed over at once: more than the bound
        now[0] = k * 0.02
        rec.put(CALLER, Audio(frame, 16000, k * 320, now[0]))
    assert time.perf_counter() - started < 5.0  # (a bound on blocking, not a measurement)
    rec.close()
    assert rec.dropped > 0 and rec.error is None
