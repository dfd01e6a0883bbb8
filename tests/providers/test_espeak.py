"""EspeakTTS (libespeak-ng in-process), checked by ear: whisper transcribes it back."""

from __future__ import annotations

import asyncio
import ctypes.util
import subprocess
import sys

import numpy as np
import pytest

from voxline.providers.base import ProviderError, TextToSpeech
from voxline.providers.tts.espeak import EspeakConfig, EspeakTTS, find_espeak

from .speech import hear, words

SENTENCE = "Please call me back tomorrow morning."


async def test_satisfies_contract() -> None:
    tts = EspeakTTS()
    assert isinstance(tts, TextToSpeech)
    await tts.load()
    assert tts.sample_rate == 22050


async def test_speaks_in_small_chunks_as_produced(no_leaked_tasks: None) -> None:
    tts = EspeakTTS()
    chunks = [c async for c in tts.synthesize(SENTENCE)]
    assert len(chunks) > 5  # streamed in ~60 ms pieces, not one block
    assert all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    assert max(len(c) for c in chunks) <= tts.sample_rate * 0.1
    audio = np.concatenate(chunks)
    assert words(await hear(audio, tts.sample_rate)) == words(SENTENCE)


def speak_in_subprocess(script: str) -> np.ndarray:
    """Run ``script`` in a fresh interpreter; it prints raw int16 audio as hex."""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return np.frombuffer(bytes.fromhex(out.stdout.strip()), np.int16)


SPEAK = """
import asyncio, numpy as np
from voxline.providers.tts.espeak import EspeakConfig, EspeakTTS
async def main():
    tts = EspeakTTS(EspeakConfig(library={library!r}))
    pieces = [c async for c in tts.synthesize({text!r})]
    assert tts.sample_rate == 22050
    print(np.concatenate(pieces).tobytes().hex())
asyncio.run(main())
"""


async def test_system_library_works_too() -> None:
    """Debian's libespeak-ng1 is the other supported library.

    It runs in a fresh process: espeak-ng's state is per process, and the first
    library loaded is the one a process keeps.
    """
    system = ctypes.util.find_library("espeak-ng")
    if system is None:
        pytest.skip("libespeak-ng1 not installed")
    audio = speak_in_subprocess(SPEAK.format(library=system, text=SENTENCE))
    assert words(await hear(audio, 22050)) == words(SENTENCE)


async def test_piper_and_espeak_keep_separate_engines() -> None:
    """piper links its own espeak-ng with the same symbol names; neither may disturb the other."""
    script = """
import asyncio, numpy as np
from voxline.providers.tts.espeak import EspeakTTS
from voxline.providers.tts.piper import PiperTTS
async def main():
    espeak, piper = EspeakTTS(), PiperTTS()
    async for _ in espeak.synthesize("Good morning."):
        pass
    await piper.load()
    phonemes = piper._shared.voice.phonemize("Good morning.")
    # What piper says in a process without voxline's espeak engine.
    assert phonemes == [list("ɡˈʊd mˈɔːɹnɪŋ.")], phonemes
    async for _ in piper.synthesize("Good evening."):
        pass
    after = np.concatenate([c async for c in espeak.synthesize({sentence!r})])
    print(after.tobytes().hex())
asyncio.run(main())
""".format(sentence=SENTENCE)
    audio = speak_in_subprocess(script)
    assert words(await hear(audio, 22050)) == words(SENTENCE)


async def test_default_library_is_the_wheel_when_installed() -> None:
    library, data = find_espeak(EspeakConfig())
    assert "espeakng_loader" in library and data is not None


async def test_cancel_aborts_synthesis() -> None:
    tts = EspeakTTS(EspeakConfig(queue_chunks=2))
    long_text = "This sentence goes on and on. " * 50
    stream = tts.synthesize(long_text)
    got = [await anext(stream) for _ in range(3)]
    await stream.aclose()
    assert len(got) == 3
    # The engine is free again: a following synthesis runs to its end.
    short = [c async for c in tts.synthesize("Yes.")]
    total = sum(len(c) for c in short) / tts.sample_rate
    assert 0.2 < total < 2.0


async def test_concurrent_syntheses_do_not_mix() -> None:
    tts = EspeakTTS()
    texts = ["Good morning, everybody.", "Please call me back tomorrow."]

    async def speak(text: str) -> np.ndarray:
        return np.concatenate([c async for c in tts.synthesize(text)])

    both = await asyncio.gather(*(speak(t) for t in texts))
    heard = [words(await hear(a, tts.sample_rate)) for a in both]
    assert heard == [words(t) for t in texts]


async def test_unknown_voice_is_an_error() -> None:
    tts = EspeakTTS(EspeakConfig(voice="xx-no-such-voice"))
    with pytest.raises(ProviderError, match="unknown voice"):
        async for _ in tts.synthesize("hello"):
            pass
