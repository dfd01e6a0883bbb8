"""WhisperSTT on the real tiny.en model and real recorded speech."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxline.providers.base import Deadlines, ProviderError, Recognition, SpeechToText, Transcription
from voxline.providers.stt.whisper import WhisperConfig, WhisperSTT

FRAME = 320  # 20 ms at 16 kHz, as the pipeline sends it
NUMBERS = {"10": "ten", "1": "one", "2": "two", "3": "three"}


def words(text: str) -> list[str]:
    return [NUMBERS.get(w, w) for w in re.findall(r"[a-z0-9']+", text.lower())]


def wer(reference: list[str], hypothesis: list[str]) -> float:
    """Word error rate: word edits (substitutions, insertions, deletions) per reference word.

    Two decodings of one clip are compared by words, never by text: they are two
    computations in floating point, and a different machine (another SIMD path,
    another GEMM blocking) can tip a near tie the other way, as a comma that one
    decoding has and the other not.
    """
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        prev, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ref != hyp))
    return row[-1] / max(1, len(reference))


def test_word_error_rate() -> None:
    assert wer("a b c d".split(), "a b c d".split()) == 0
    assert wer("a b c d".split(), "a x c d".split()) == 0.25
    assert wer("a b c d".split(), "a b d".split()) == 0.25
    assert wer("a b c d".split(), "a b c d e f".split()) == 0.5
    assert wer("a b".split(), []) == 1.0


def goforward(speech_dir: Path) -> np.ndarray:
    return np.fromfile(speech_dir / "goforward.raw", dtype=np.int16)


def librivox_0880(speech_dir: Path) -> np.ndarray:
    audio, rate = sf.read(speech_dir / "librivox/sense_and_sensibility_01_austen_64kb-0880.wav", dtype="int16")
    assert rate == 16000
    return np.asarray(audio, dtype=np.int16)


async def send_frames(rec: Recognition, audio: np.ndarray) -> None:
    for start in range(0, len(audio), FRAME):
        await rec.send(audio[start : start + FRAME])


async def transcribe(stt: WhisperSTT, audio: np.ndarray) -> Transcription:
    rec = await stt.open()
    try:
        await send_frames(rec, audio)
        await rec.finalize()
        async for result in rec.results():
            if result.final:
                return result
        raise AssertionError("no final transcript")
    finally:
        await rec.aclose()


def test_satisfies_contract() -> None:
    stt = WhisperSTT()
    assert isinstance(stt, SpeechToText)
    assert stt.sample_rate == 16000


async def test_transcribes_go_forward(speech_dir: Path, no_leaked_tasks: None) -> None:
    result = await transcribe(WhisperSTT(), goforward(speech_dir))
    assert result.final
    assert words(result.text) == ["go", "forward", "ten", "meters"], result.text
    assert result.confidence is not None and 0 < result.confidence <= 1


async def test_two_recognitions_at_once_share_one_model(speech_dir: Path) -> None:
    a, b = WhisperSTT(), WhisperSTT()
    ra, rb = await asyncio.gather(
        transcribe(a, goforward(speech_dir)), transcribe(b, librivox_0880(speech_dir))
    )
    assert a._shared is not None and a._shared is b._shared
    assert words(ra.text) == ["go", "forward", "ten", "meters"], ra.text
    # tiny.en hears "ill disposed" as "old-sposed": check the words it gets right,
    # and that decoding alongside another call changes nothing: the same words as
    # alone (by words: punctuation is where two runs of a float model may differ;
    # a leak of the other call's audio or state would change words).
    assert {"he", "was", "not", "young", "man"} <= set(words(rb.text)), rb.text
    alone = await transcribe(b, librivox_0880(speech_dir))
    assert words(alone.text) == words(rb.text), (alone.text, rb.text)
    assert not {"go", "forward", "meters"} & set(words(rb.text)), rb.text


async def test_utterances_come_out_in_order(speech_dir: Path) -> None:
    rec = await WhisperSTT().open()
    try:
        await send_frames(rec, librivox_0880(speech_dir))
        await rec.finalize()
        await send_frames(rec, goforward(speech_dir))
        await rec.finalize()
        got = []
        async for result in rec.results():
            got.append(words(result.text))
            if len(got) == 2:
                break
    finally:
        await rec.aclose()
    assert {"he", "was", "not", "young", "man"} <= set(got[0]), got[0]
    assert got[1] == ["go", "forward", "ten", "meters"]


def librivox(speech_dir: Path) -> list[np.ndarray]:
    clips = []
    for path in sorted((speech_dir / "librivox").glob("*.wav")):
        audio, rate = sf.read(path, dtype="int16")
        assert rate == 16000
        clips.append(np.asarray(audio, dtype=np.int16))
    return clips


async def test_short_turns_decode_in_a_short_window_as_in_the_full_one(speech_dir: Path) -> None:
    windowed, full = WhisperSTT(), WhisperSTT(WhisperConfig(window_seconds=None))
    clips = [goforward(speech_dir), *librivox(speech_dir)]  # 2.8 to 7.1 s
    for audio in clips:
        # Two different computations (a 10 s window, a 30 s one): the same words,
        # within one word in ten, not the same characters (see wer()). A window
        # that cut speech off, or a decode that looped, is far past that.
        short, whole = (await transcribe(windowed, audio)).text, (await transcribe(full, audio)).text
        assert len(words(whole)) >= 4, whole
        assert wer(words(whole), words(short)) <= 0.1, (short, whole)
    assert windowed.stats == {"windowed": len(clips), "full": 0, "full_retries": 0, "rejected": 0}
    assert full.stats["full"] == len(clips) and full.stats["windowed"] == 0


async def test_the_window_grows_with_the_turn_up_to_whisper_s_own(speech_dir: Path) -> None:
    windowed = WhisperSTT()
    clips = librivox(speech_dir)
    ten = np.concatenate(clips[:2])  # 10.1 s: a 13 s window
    heard = set(words((await transcribe(windowed, ten)).text))
    assert windowed.stats == {"windowed": 1, "full": 0, "full_retries": 0, "rejected": 0}
    assert {"john", "dashwood", "leisure", "prudently", "he", "was", "not", "young", "man"} <= heard, heard
    long = np.concatenate([*clips, goforward(speech_dir)])  # 27.5 s and the tail: 30 s
    result = await transcribe(windowed, long)
    assert windowed.stats == {"windowed": 1, "full": 1, "full_retries": 0, "rejected": 0}
    assert {"john", "dashwood", "selfish", "amiable", "himself"} <= set(words(result.text)), result.text


async def test_a_decode_that_loops_in_a_tight_window_is_decoded_again_in_full(
    speech_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import voxline.providers.stt.whisper as whisper

    # A 4 s window for 2.8 s of speech: tiny.en, searching greedily, repeats
    # "Go forward 10 meters." to its token limit (why the default window is 10 s).
    monkeypatch.setattr(whisper, "TAIL_FRAMES", 100)
    stt = WhisperSTT(WhisperConfig(window_seconds=1.0, beam_size=1))
    result = await transcribe(stt, goforward(speech_dir))
    assert stt.stats == {"windowed": 0, "full": 1, "full_retries": 1, "rejected": 0}
    assert words(result.text) == ["go", "forward", "ten", "meters"], result.text


def test_a_sentence_said_twice_in_a_row_is_taken_for_a_loop() -> None:
    from voxline.providers.stt.whisper import repeats_a_sentence

    assert repeats_a_sentence("What is the capital of France? What is the capital of France?")
    assert repeats_a_sentence("go forward 10 meters. Go forward 10 meters. Go")
    assert not repeats_a_sentence("What is the capital of France?")
    assert not repeats_a_sentence("No. No. I said Paris.")  # one-word sentences are speech
    assert not repeats_a_sentence("Go forward. Then go forward again.")


async def test_a_windowed_decode_that_repeats_itself_is_decoded_again_in_full(
    speech_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stt = WhisperSTT()
    await stt.load()
    assert stt._shared is not None
    tokenizer = stt._shared.tokenizer
    real = tokenizer.decode
    monkeypatch.setattr(tokenizer, "decode", lambda tokens: (real(tokens) + " ") * 2)  # as the loop reads
    result = await transcribe(stt, goforward(speech_dir))
    assert stt.stats == {"windowed": 0, "full": 1, "full_retries": 1, "rejected": 0}
    assert words(result.text) == ["go", "forward", "ten", "meters"], result.text


async def test_an_interim_that_loops_says_nothing_and_is_not_decoded_in_full(
    speech_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = iter(range(1000))
    stt = WhisperSTT(WhisperConfig(interim_interval_ms=1), clock=lambda: float(next(ticks)))
    await stt.load()
    assert stt._shared is not None
    tokenizer = stt._shared.tokenizer
    real = tokenizer.decode
    monkeypatch.setattr(tokenizer, "decode", lambda tokens: (real(tokens) + " ") * 2)
    rec = await stt.open()
    try:
        await rec.send(goforward(speech_dir))
        results = aiter(rec.results())
        interim = await anext(results)
        assert not interim.final and interim.text == ""
        assert stt.stats["full"] == 0
        await rec.finalize()  # not the looped interim again: a decode of its own
        final = await anext(results)
        assert final.final and words(final.text) == ["go", "forward", "ten", "meters"]
        assert rec.reused_interims == 0 and stt.stats["full"] == 1  # type: ignore[attr-defined]
    finally:
        await rec.aclose()


async def test_a_final_of_the_audio_an_interim_just_decoded_is_that_interim(speech_dir: Path) -> None:
    ticks = iter(range(1000))
    stt = WhisperSTT(WhisperConfig(interim_interval_ms=1), clock=lambda: float(next(ticks)))
    rec = await stt.open()
    try:
        await rec.send(goforward(speech_dir))  # an interim of all of it
        results = aiter(rec.results())
        interim = await anext(results)
        assert not interim.final and words(interim.text) == ["go", "forward", "ten", "meters"]
        await rec.finalize()  # nothing said since: no second decode
        final = await anext(results)
        assert final.final and final.text == interim.text
        assert rec.reused_interims == 1  # type: ignore[attr-defined]
        assert stt.stats["windowed"] == 1
        # New audio after it: decoded afresh.
        await rec.send(goforward(speech_dir)[:16000])
        await rec.finalize()
        async for result in results:
            if result.final:
                break
        assert rec.reused_interims == 1 and stt.stats["windowed"] >= 2  # type: ignore[attr-defined]
    finally:
        await rec.aclose()


@pytest.mark.parametrize(
    "audio",
    [
        np.zeros(0, np.int16),
        np.zeros(32000, np.int16),
        np.random.default_rng(1).normal(0, 1000, 32000).astype(np.int16),
    ],
    ids=["nothing", "silence", "white-noise"],
)
async def test_no_speech_gives_empty_final(audio: np.ndarray) -> None:
    result = await transcribe(WhisperSTT(), audio)
    assert result.final
    assert result.text == ""


async def test_buffer_keeps_last_seconds_and_counts_dropped(speech_dir: Path) -> None:
    speech = goforward(speech_dir)
    noise = np.random.default_rng(2).normal(0, 3000, 5 * 16000).astype(np.int16)
    stt = WhisperSTT(WhisperConfig(max_buffer_seconds=3.0))
    rec = await stt.open()
    try:
        await send_frames(rec, np.concatenate([noise, speech]))
        assert rec.dropped_samples == len(noise) + len(speech) - 3 * 16000
        await rec.finalize()
        result = await anext(aiter(rec.results()))
    finally:
        await rec.aclose()
    assert "forward" in words(result.text), result.text


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_interim_results_while_audio_arrives(speech_dir: Path) -> None:
    clock = FakeClock()
    stt = WhisperSTT(WhisperConfig(interim_interval_ms=1000), clock=clock)
    rec = await stt.open()
    results: list[Transcription] = []
    try:
        speech = goforward(speech_dir)
        for start in range(0, len(speech), FRAME):
            clock.now += 0.02
            await rec.send(speech[start : start + FRAME])
            await asyncio.sleep(0)  # let interim decodes start while audio flows
        await rec.finalize()
        async for result in rec.results():
            results.append(result)
            if result.final:
                break
    finally:
        await rec.aclose()
    assert [r.final for r in results[:-1]] and not any(r.final for r in results[:-1])
    assert results[-1].final
    assert words(results[-1].text) == ["go", "forward", "ten", "meters"]


async def test_no_interims_by_default(speech_dir: Path) -> None:
    rec = await WhisperSTT().open()
    try:
        await send_frames(rec, goforward(speech_dir))
        await rec.finalize()
        first = await anext(aiter(rec.results()))
    finally:
        await rec.aclose()
    assert first.final


async def test_rejects_non_int16(no_leaked_tasks: None) -> None:
    rec = await WhisperSTT().open()
    try:
        with pytest.raises(ValueError, match="int16"):
            await rec.send(np.zeros(320, np.float32))
    finally:
        await rec.aclose()


async def test_closed_recognition_ends_results_and_refuses_audio() -> None:
    rec = await WhisperSTT().open()
    await rec.aclose()
    assert [r async for r in rec.results()] == []
    with pytest.raises(ProviderError, match="closed"):
        await rec.send(np.zeros(320, np.int16))


async def test_missing_model_is_a_permanent_provider_error(tmp_path: Path) -> None:
    stt = WhisperSTT(WhisperConfig(model="no-such-model", cache_dir=tmp_path))
    with pytest.raises(ProviderError) as info:
        await stt.open(Deadlines())
    assert not info.value.retryable
    assert "no-such-model" in str(info.value)


async def test_real_speech_passes_the_guard(speech_dir: Path) -> None:
    stt = WhisperSTT()
    for audio in [goforward(speech_dir), *librivox(speech_dir)]:
        result = await transcribe(stt, audio)
        assert result.rejected == "" and len(words(result.text)) >= 4, result
    assert stt.stats["rejected"] == 0


async def test_a_decode_that_repeats_a_word_is_rejected_and_kept_aside(
    speech_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stt = WhisperSTT()
    await stt.load()
    assert stt._shared is not None
    monkeypatch.setattr(stt._shared.tokenizer, "decode", lambda tokens: "Monday, Monday, Monday, Monday, Monday,")
    result = await transcribe(stt, goforward(speech_dir))
    assert result.final and result.text == ""
    assert result.heard == "Monday, Monday, Monday, Monday, Monday," and "repetition" in result.rejected
    assert stt.stats["rejected"] == 1
