"""Test signals and measures shared by the codec tests (no codec knowledge here)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from av.audio.resampler import AudioResampler

__all__ = [
    "SPEECH_PATH",
    "aligned",
    "chirp",
    "corr",
    "envelope_corr",
    "load_speech",
    "measure_delay",
    "peak_hz",
    "rms",
    "snr_db",
    "tone",
]

# pocketsphinx's test recording: "go forward ten meters", 16 kHz s16le mono raw.
SPEECH_PATH = Path("/usr/share/pocketsphinx/test/data/goforward.raw")
SPEECH_RATE = 16_000
AMPLITUDE = 8000  # about -12 dBFS: loud, but clear of clipping after coding

Pcm = npt.NDArray[np.int16]


def tone(rate: int, seconds: float = 1.0, hz: float = 1000.0) -> Pcm:
    t = np.arange(int(rate * seconds)) / rate
    return (AMPLITUDE * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def chirp(rate: int, seconds: float = 2.0, f0: float = 100.0, f1: float = 3500.0) -> Pcm:
    """A linear sweep: broadband yet deterministic, so its cross-correlation has
    one sharp peak (a tone's repeats every period and cannot measure delay)."""
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds))
    return (AMPLITUDE * np.sin(phase)).astype(np.int16)


def load_speech(rate: int = SPEECH_RATE) -> Pcm:
    if not SPEECH_PATH.exists():
        pytest.skip(f"real speech sample {SPEECH_PATH} is absent (pocketsphinx test data)")
    speech = np.fromfile(SPEECH_PATH, dtype="<i2").astype(np.int16)
    if rate == SPEECH_RATE:
        return speech
    resampler = AudioResampler(format="s16", layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(speech.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SPEECH_RATE
    frames = resampler.resample(frame) + resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)


def measure_delay(reference: Pcm, output: Pcm, max_lag: int) -> int:
    """The lag (in samples) at which ``output`` best matches ``reference``."""
    n = min(len(reference), len(output) - max_lag)
    shifted = np.lib.stride_tricks.sliding_window_view(output.astype(float), n)[: max_lag + 1]
    return int(np.argmax(shifted @ reference[:n].astype(float)))


def aligned(reference: Pcm, output: Pcm, delay: int, skip: int) -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64]
]:
    """Both signals as floats, output shifted back by ``delay``, the first
    ``skip`` samples (codec warm-up) dropped."""
    n = min(len(reference), len(output) - delay)
    return reference[skip:n].astype(float), output[delay + skip : delay + n].astype(float)


def snr_db(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    return float(10 * np.log10(np.sum(a * a) / np.sum((a - b) ** 2)))


def corr(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def envelope_corr(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], window: int) -> float:
    """Correlation of short-time log energies: what a perceptual codec preserves
    even when it does not preserve the waveform."""
    n = (len(a) // window) * window
    ea = 10 * np.log10(np.mean(a[:n].reshape(-1, window) ** 2, axis=1) + 1)
    eb = 10 * np.log10(np.mean(b[:n].reshape(-1, window) ** 2, axis=1) + 1)
    return float(np.corrcoef(ea, eb)[0, 1])


def rms(x: npt.NDArray[np.generic]) -> float:
    return float(np.sqrt(np.mean(x.astype(float) ** 2)))


def peak_hz(x: Pcm, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(float) * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))
