import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import soundfile

LIBRIVOX = "librivox/sense_and_sensibility_01_austen_64kb-0880.wav"  # "he was not an ill disposed young man"


@pytest.mark.parametrize("codec,vad", [("pcmu", "silero"), ("g722", "webrtc"), ("opus", "silero")])
def test_process_carries_real_speech_through_a_call_path(
    speech_dir: Path, tmp_path: Path, codec: str, vad: str
) -> None:
    src = speech_dir / LIBRIVOX
    out = tmp_path / "out.wav"
    res = subprocess.run(
        [sys.executable, "-m", "voxline", "process", str(src), str(out), "--codec", codec, "--vad", vad],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    report = orjson.loads(res.stdout)
    info = soundfile.info(str(src))
    assert report["seconds"] == pytest.approx(info.duration, abs=0.02)
    speech = report["speech"]
    assert speech, "no speech found in a recording of speech"
    assert speech[0]["start_s"] < 0.8 and speech[-1]["end_s"] > info.duration - 1.0
    written = soundfile.info(str(out))
    assert written.samplerate == 16000
    assert abs(written.duration - info.duration) < 0.1
    assert {s["name"] for s in report["stages"]} >= {f"encode_{codec}", f"decode_{codec}", "vad"}


def test_process_reports_bad_input_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"RIFF nonsense")
    res = subprocess.run([sys.executable, "-m", "voxline", "process", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "cannot read" in res.stderr
    res = subprocess.run([sys.executable, "-m", "voxline", "process", str(bad), "--codec", "gsm"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "unknown codec 'gsm'" in res.stderr
