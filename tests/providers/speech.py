"""Helpers for tests that judge audio by what whisper understands of it."""

from __future__ import annotations

import re

import numpy as np
import soxr

from voxline.providers.stt.whisper import WhisperSTT


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


async def hear(audio: np.ndarray, rate: int) -> str:
    """What whisper understands of ``audio``."""
    pcm = np.clip(np.round(soxr.resample(audio.astype(np.float32), rate, 16000)), -32768, 32767).astype(np.int16)
    rec = await WhisperSTT().open()
    try:
        await rec.send(pcm)
        await rec.finalize()
        result = await anext(aiter(rec.results()))
    finally:
        await rec.aclose()
    return result.text
