"""Voicing a script's text with the service's own TTS providers (Piper, espeak-ng),
loaded in the harness's process, resampled to the script's 16 kHz."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from voxline.media.resample import resample_chunk

__all__ = ["load_voice", "VOICES"]

VOICES = ("piper", "espeak")
RATE = 16000


async def load_voice(name: str, texts: list[str]) -> Callable[[str], npt.NDArray[np.int16]]:
    """Synthesise ``texts`` now with voice ``name``; returns ``text -> 16 kHz int16``
    (texts not given up front are not available: the callers must not wait on a TTS)."""
    if name == "piper":
        from voxline.providers.tts.piper import PiperTTS

        tts: object = PiperTTS()
    elif name == "espeak":
        from voxline.providers.tts.espeak import EspeakTTS

        tts = EspeakTTS()
    else:
        raise ValueError(f"voice must be one of {', '.join(VOICES)}, not {name!r}")
    await tts.load()  # type: ignore[attr-defined]
    done: dict[str, npt.NDArray[np.int16]] = {}
    for text in dict.fromkeys(texts):
        chunks = [c async for c in tts.synthesize(text)]  # type: ignore[attr-defined]
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        done[text] = resample_chunk(pcm, tts.sample_rate, RATE).astype(np.int16)  # type: ignore[attr-defined]
    close = getattr(tts, "close", None)
    if close is not None:
        res = close()
        if hasattr(res, "__await__"):
            await res

    def voice(text: str) -> npt.NDArray[np.int16]:
        return done[text]

    return voice
