"""PiperTTS with the real joe-medium voice, checked by ear: whisper transcribes it back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxline.providers.base import (
    Deadlines,
    ProviderError,
    ProviderTimeout,
    TextToSpeech,
)
from voxline.providers.tts.piper import PiperConfig, PiperTTS

from .speech import hear, words

SENTENCES = "The weather is lovely today. Please call me back tomorrow morning."


async def test_satisfies_contract() -> None:
    tts = PiperTTS()
    assert isinstance(tts, TextToSpeech)
    await tts.load()
    assert tts.sample_rate == 22050


async def test_speaks_what_it_is_given(no_leaked_tasks: None) -> None:
    tts = PiperTTS()
    chunks = [chunk async for chunk in tts.synthesize(SENTENCES)]
    assert len(chunks) == 2  # one per sentence
    assert all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    audio = np.concatenate(chunks)
    assert 2.0 < len(audio) / tts.sample_rate < 10.0
    assert words(await hear(audio, tts.sample_rate)) == words(SENTENCES)


async def test_cancel_stops_before_the_next_sentence() -> None:
    tts = PiperTTS(PiperConfig(queue_chunks=1))
    text = " ".join(f"This is sentence number {n}." for n in range(1, 9))
    stream = tts.synthesize(text)
    first = await anext(stream)
    await stream.aclose()
    assert first.size > 0
    # The voice is free again at once: a new synthesis is not stuck behind the old one.
    chunks = [c async for c in tts.synthesize("Done.", Deadlines(first_result=10.0))]
    assert len(chunks) == 1


async def test_empty_text_gives_no_audio() -> None:
    assert [c async for c in PiperTTS().synthesize("   ")] == []


async def test_first_audio_deadline() -> None:
    tts = PiperTTS()
    await tts.load()
    long_sentence = "and then " * 60 + "the end."
    with pytest.raises(ProviderTimeout) as info:
        async for _ in tts.synthesize(long_sentence, Deadlines(first_result=0.001)):
            pass
    assert info.value.phase in ("first audio", "model slot", "executor slot")


async def test_missing_voice_is_a_permanent_error(tmp_path: Path) -> None:
    tts = PiperTTS(PiperConfig(model=str(tmp_path / "nothing-here.onnx"), cache_dir=tmp_path))
    with pytest.raises(ProviderError) as info:
        await tts.load()
    assert not info.value.retryable
