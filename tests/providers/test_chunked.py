"""Text is cut into bounded pieces before any TTS, and synthesised one piece at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from voxline.config import ProvidersConfig, TtsConfig
from voxline.providers.base import PCM, Deadlines, TextToSpeech
from voxline.providers.chunked import ChunkedTTS, speech_pieces
from voxline.providers.factory import build_providers


def test_sentences_are_packed_up_to_the_bound() -> None:
    text = "Hello there. Dr. Smith is here! Is he? \"Yes.\" I think so"
    assert list(speech_pieces(text, 30)) == ["Hello there.", "Dr. Smith is here! Is he?", '"Yes." I think so']
    assert list(speech_pieces(text, 1000)) == [text]
    assert list(speech_pieces("   \n ", 10)) == []


def test_a_long_sentence_is_cut_at_clauses_then_words_then_anywhere() -> None:
    clauses = "first part here, second part here; third part here"
    assert list(speech_pieces(clauses, 20)) == ["first part here,", "second part here;", "third part here"]
    words = " ".join(["word"] * 30)  # no punctuation at all
    pieces = list(speech_pieces(words, 42))
    assert all(len(p) <= 42 for p in pieces) and " ".join(pieces) == words
    assert all(p.split() == ["word"] * len(p.split()) for p in pieces)  # never inside a word
    assert list(speech_pieces("x" * 100, 40)) == ["x" * 40, "x" * 40, "x" * 20]


def test_every_piece_is_bounded_and_nothing_is_lost() -> None:
    text = ("It was the best of times, it was the worst of times - it was the age of wisdom; "
            "it was the age of foolishness. " * 40) + "supercalifragilistic" * 30
    for bound in (1, 7, 60, 250):
        pieces = list(speech_pieces(text, bound))
        assert all(0 < len(p) <= bound for p in pieces)
        assert "".join("".join(pieces).split()) == "".join(text.split())
    with pytest.raises(ValueError, match="max_chars"):
        list(speech_pieces("x", 0))


class RecordingTTS:
    """A TTS that records what it is asked and yields one chunk per word."""

    name = "recording"
    sample_rate = 16000

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.closed = 0

    async def synthesize(self, text: str, deadlines: Deadlines | None = None) -> AsyncIterator[PCM]:
        self.asked.append(text)
        try:
            for _ in text.split():
                await asyncio.sleep(0)
                yield np.ones(160, dtype=np.int16)
        finally:
            self.closed += 1


async def test_pieces_are_synthesised_one_after_another_and_cancel_stops_them() -> None:
    inner = RecordingTTS()
    tts = ChunkedTTS(inner, max_chars=24)
    assert isinstance(tts, TextToSpeech) and tts.name == "recording" and tts.sample_rate == 16000
    text = "one two three four. five six seven eight. nine ten eleven twelve."
    stream = tts.synthesize(text)
    await anext(stream)
    assert inner.asked == ["one two three four."]  # the rest is not asked for yet
    await stream.aclose()
    assert inner.closed == 1 and len(inner.asked) == 1  # the running piece closed, no other started
    chunks = [c async for c in tts.synthesize(text)]
    assert len(chunks) == 12 and inner.asked[1:] == ["one two three four.", "five six seven eight.",
                                                     "nine ten eleven twelve."]


async def test_cancelling_the_consumer_task_stops_the_pieces() -> None:
    inner = RecordingTTS()
    tts = ChunkedTTS(inner, max_chars=10)
    got = asyncio.Event()

    async def consume() -> None:
        async for _ in tts.synthesize("aa bb. cc dd. ee ff. gg hh."):
            got.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(consume())
    await got.wait()
    task.cancel()
    await asyncio.wait([task])
    for _ in range(3):  # the loop closes an abandoned async generator on its next turns
        await asyncio.sleep(0)
    assert task.cancelled()
    assert inner.asked == ["aa bb."] and inner.closed == 1


def test_the_factory_bounds_every_tts_and_the_offline_voice() -> None:
    for engine in ("piper", "espeak", "openai"):
        cfg = ProvidersConfig(tts=TtsConfig(engine=engine, max_chars=123, base_url="http://127.0.0.1:9"))
        providers = build_providers(cfg)
        for tts in (providers.tts, providers.offline):
            assert isinstance(tts, ChunkedTTS) and tts.max_chars == 123
        metered = providers.metered()
        assert isinstance(metered.tts.inner, ChunkedTTS) and isinstance(metered.offline.inner, ChunkedTTS)
