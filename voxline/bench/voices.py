"""Voicing a script's text with the service's own TTS providers (Piper, and
espeak-ng in any of its voices), loaded in the harness's process, resampled to
the script's 16 kHz. ``--voice piper,espeak,espeak:en-us+f3`` voices turn i with
voice i mod 3, so one run asks in several voices."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from voxline.media.resample import resample_chunk

__all__ = ["load_voice", "load_voices", "parse_voices", "VOICES"]

VOICES = ("piper", "espeak")  # engines; espeak takes a voice after a colon: espeak:en-gb-x-rp, espeak:en-us+f3
RATE = 16000

Voice = Callable[[str], npt.NDArray[np.int16]]


def parse_voices(text: str) -> list[str]:
    """``piper,espeak:en-gb`` → each a known engine, optionally with an espeak voice."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise ValueError("--voice names no voice")
    for name in names:
        engine, _, variant = name.partition(":")
        if engine not in VOICES or (variant and engine != "espeak"):
            raise ValueError(f"voice must be piper, espeak or espeak:<voice>, not {name!r}")
    return names


async def load_voice(name: str, texts: list[str]) -> Voice:
    """Synthesise ``texts`` now with voice ``name``; returns ``text -> 16 kHz int16``
    (texts not given up front are not available: the callers must not wait on a TTS)."""
    engine, _, variant = name.partition(":")
    if engine == "piper" and not variant:
        from voxline.providers.tts.piper import PiperTTS

        tts: object = PiperTTS()
    elif engine == "espeak":
        from voxline.providers.tts.espeak import EspeakConfig, EspeakTTS

        tts = EspeakTTS(EspeakConfig(voice=variant) if variant else None)
    else:
        raise ValueError(f"voice must be piper, espeak or espeak:<voice>, not {name!r}")
    await tts.load()  # type: ignore[attr-defined]
    done: dict[str, npt.NDArray[np.int16]] = {}
    try:
        for text in dict.fromkeys(texts):
            chunks = [c async for c in tts.synthesize(text)]  # type: ignore[attr-defined]
            pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
            done[text] = resample_chunk(pcm, tts.sample_rate, RATE).astype(np.int16)  # type: ignore[attr-defined]
    finally:
        close = getattr(tts, "close", None)
        if close is not None:
            res = close()
            if hasattr(res, "__await__"):
                await res

    def voice(text: str) -> npt.NDArray[np.int16]:
        return done[text]

    return voice


async def load_voices(names: list[str], texts: list[str]) -> list[tuple[str, Voice]]:
    return [(name, await load_voice(name, texts)) for name in names]
