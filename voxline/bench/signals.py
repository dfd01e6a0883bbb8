"""Caller audio: synthetic utterances and noise, and the energy measures the
harness times them with (speech bounds in what is sent, onsets in what comes back).

Energy is taken over windows of 2.5 ms, so a bound is placed within 2.5 ms of
the sample where it lies, well inside the one-frame (20 ms) resolution asked of
the harness.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["WINDOW", "ONSET", "window_rms", "loud_span", "speech_bounds", "utterance", "cough", "silence"]

WINDOW = 0.0025  # s of audio per energy window
ONSET = 300.0  # int16 RMS of a window: reply audio is there (as benchmarks.v2v)
SPEECH_REL = 0.05  # a window of sent speech is speech at 5% of the utterance's peak RMS
SPEECH_FLOOR = 100.0

PCM = npt.NDArray[np.int16]


def window_rms(pcm: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.float64]:
    """RMS of each whole window of ``pcm`` (a trailing partial window counts as one)."""
    n = max(1, int(rate * WINDOW))
    pad = (-len(pcm)) % n
    x = pcm.astype(np.float64)
    if pad:
        x = np.concatenate((x, np.zeros(pad)))
    return np.asarray(np.sqrt(np.mean(x.reshape(-1, n) ** 2, axis=1)), dtype=np.float64)


def loud_span(pcm: npt.NDArray[np.int16], rate: int, threshold: float = ONSET) -> tuple[int, int] | None:
    """(first sample of the first loud window, sample after the last loud window), or None."""
    rms = window_rms(pcm, rate)
    loud = np.nonzero(rms > threshold)[0]
    if not len(loud):
        return None
    n = max(1, int(rate * WINDOW))
    return int(loud[0]) * n, min(len(pcm), (int(loud[-1]) + 1) * n)


def speech_bounds(pcm: npt.NDArray[np.int16], rate: int) -> tuple[int, int] | None:
    """Where the speech in ``pcm`` starts and ends (samples), relative to its peak
    energy, so a recording's line noise is not counted as speech."""
    rms = window_rms(pcm, rate)
    if not len(rms) or rms.max() <= 0:
        return None
    return loud_span(pcm, rate, max(SPEECH_FLOOR, SPEECH_REL * float(rms.max())))


def _fade(x: npt.NDArray[np.float64], rate: int, seconds: float = 0.01) -> npt.NDArray[np.float64]:
    n = min(len(x) // 2, int(rate * seconds))
    if n:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def utterance(seconds: float, rate: int = 16000, f0: float = 140.0, seed: int = 0) -> PCM:
    """A voiced, speech-like sound: harmonics of a gliding f0 under a syllable
    envelope (4 Hz), loud enough for any VAD, with 10 ms fades at both ends."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    glide = f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, np.pi)))
    phase = 2 * np.pi * np.cumsum(glide) / rate
    x = np.zeros_like(t)
    for h, amp in ((1, 1.0), (2, 0.6), (3, 0.45), (4, 0.3), (5, 0.2), (7, 0.1)):
        x += amp * np.sin(h * phase)
    syllables = 0.65 + 0.35 * np.sin(2 * np.pi * 4 * t) ** 2
    x = _fade(x * syllables, rate)
    return np.asarray(x / np.max(np.abs(x)) * 9000).astype(np.int16)


def cough(seconds: float = 0.08, rate: int = 16000, seed: int = 1) -> PCM:
    """A short burst of noise shaped like a cough: loud, broadband, over in ``seconds``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    x = rng.standard_normal(n) * np.exp(-np.linspace(0, 4, n))
    x = _fade(x, rate, 0.003)
    return np.asarray(x / np.max(np.abs(x)) * 12000).astype(np.int16)


def silence(seconds: float, rate: int = 16000) -> PCM:
    return np.zeros(int(seconds * rate), np.int16)
