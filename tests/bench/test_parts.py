"""The harness's parts on their own: where speech starts and ends in what is
sent, where a reply starts and stops in what is heard, what an impaired wire
does to the frames, the options as typed."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from voxline.bench.caller import FRAME, Ears, Impairment, Mouth, Utterance
from voxline.bench.cli import _fraction, _ms
from voxline.bench.report import render
from voxline.bench.result import join_heard, join_stages, percentiles, summarise
from voxline.bench.script import load_script, synthetic_script
from voxline.bench.signals import cough, loud_span, speech_bounds, utterance
from voxline.bench.wer import edits, wer, words

RATE = 16000


def test_speech_bounds_lie_within_an_energy_window_of_the_sound() -> None:
    pcm = np.concatenate((np.zeros(1234, np.int16), utterance(0.9, RATE), np.zeros(3000, np.int16)))
    start, end = speech_bounds(pcm, RATE)  # type: ignore[misc]
    window, fade = int(RATE * 0.0025), int(RATE * 0.01)  # the sound fades in and out over 10 ms
    assert 1234 - window <= start <= 1234 + fade
    assert 1234 + int(0.9 * RATE) - fade <= end <= 1234 + int(0.9 * RATE) + window
    assert speech_bounds(np.zeros(800, np.int16), RATE) is None
    assert loud_span(cough(0.08, RATE), RATE) is not None


class Wire:
    """A line that records what was sent and when."""

    name = "test"
    rate = RATE
    can_impair = True
    session_id = None

    def __init__(self) -> None:
        self.sent: list[tuple[float, np.ndarray]] = []

    async def send(self, pcm: np.ndarray) -> None:
        import time

        self.sent.append((time.monotonic(), pcm))


async def test_the_mouth_places_the_speech_end_at_its_sample_in_the_frame_that_carried_it() -> None:
    wire = Wire()
    mouth = Mouth(wire)  # type: ignore[arg-type]
    pcm = np.concatenate((np.zeros(100, np.int16), utterance(0.5, RATE), np.zeros(500, np.int16)))
    utt = mouth.say(Utterance.of(pcm, RATE))
    stop = asyncio.Event()
    task = asyncio.ensure_future(mouth.run(stop))
    await utt.done.wait()
    stop.set()
    await task
    assert utt.bounds is not None and utt.end_at is not None and utt.onset_at is not None
    n = int(RATE * FRAME)
    k, offset = divmod(utt.bounds[1], n)
    if offset == 0:
        k, offset = k - 1, n
    sent_at = wire.sent[k][0]
    assert utt.end_at == pytest.approx(sent_at + offset / RATE, abs=1e-3)
    assert utt.onset_at == pytest.approx(wire.sent[0][0] + utt.bounds[0] / RATE, abs=1e-3)
    assert np.array_equal(np.concatenate([p for _, p in wire.sent])[: len(pcm)], pcm)


def test_the_ears_find_a_reply_onset_and_where_it_stops() -> None:
    ears = Ears()
    n = int(RATE * FRAME)
    reply = utterance(0.4, RATE)
    quiet = np.zeros(n, np.int16)
    t = 100.0
    for i in range(10):
        ears.heard(quiet, RATE, t + i * FRAME)
    start = t + 10 * FRAME
    for i in range(len(reply) // n):
        ears.heard(reply[i * n : (i + 1) * n], RATE, start + i * FRAME)
    end = start + (len(reply) // n) * FRAME
    assert ears.onset_after(t) == pytest.approx(start, abs=0.003)
    assert ears.stop_after(start + 0.1, now=end + 0.01) is None  # not quiet long enough yet
    assert ears.stop_after(start + 0.1, now=end + 0.5) == pytest.approx(end, abs=0.015)
    assert ears.gaps == 0


def test_impairment_loses_and_reorders_the_share_asked_for_seeded() -> None:
    wire = Wire()
    mouth = Mouth(wire, Impairment(loss=0.05, jitter=0.04, reorder=0.01, seed=3))  # type: ignore[arg-type]
    mouth._wire = asyncio.Queue()
    frames = 4000
    for k in range(frames):
        mouth._impaired(k * FRAME, np.full(320, k, np.int16))
    assert 0.03 < mouth.lost / frames < 0.07
    assert 0.004 < mouth.reordered / frames < 0.02
    out = []
    while not mouth._wire.empty():
        depart, pcm = mouth._wire.get_nowait()
        out.append((depart, int(pcm[0])))
    assert len(out) == frames - mouth.lost
    order = [k for _, k in out]
    assert sum(1 for a, b in zip(order, order[1:]) if b < a) == mouth.reordered
    held = [d - k * FRAME for d, k in out]
    assert min(held) >= 0 and np.median(held) == pytest.approx(0.02, abs=0.005)  # uniform over 0-40 ms
    same = Mouth(wire, Impairment(loss=0.05, jitter=0.04, reorder=0.01, seed=3))  # type: ignore[arg-type]
    same._wire = asyncio.Queue()
    for k in range(frames):
        same._impaired(k * FRAME, np.full(320, k, np.int16))
    assert same.lost == mouth.lost and same.reordered == mouth.reordered


def test_a_line_that_cannot_be_impaired_is_not() -> None:
    wire = Wire()
    wire.can_impair = False
    assert Mouth(wire, Impairment(loss=0.5)).impair is None  # type: ignore[arg-type]


def test_options_as_typed() -> None:
    assert _fraction("5%") == pytest.approx(0.05) and _fraction("0.01") == 0.01
    assert _ms("40ms") == 40 and _ms("0.04s") == 40 and _ms("40") == 40


def test_percentiles_and_the_join_of_the_service_marks() -> None:
    p = percentiles([300.0, 310.0, 320.0, None])
    assert p["n"] == 3 and p["p50_ms"] == 310.0 and p["max_ms"] == 320.0
    assert percentiles([])["p50_ms"] is None
    rows: list[dict[str, Any]] = [{"turn": 1, "speech_end": 50.0, "v2v_ms": 300.0},
                                  {"turn": 2, "speech_end": 60.0, "v2v_ms": 310.0}]
    records = [{"turn": 7, "data": {"marks": {"speech_end": 60.01, "first_played": 60.3}}},
               {"turn": 6, "data": {"marks": {"speech_end": 50.0, "vad_end": 50.2, "first_played": 50.29}}}]
    join_stages(rows, records)
    assert rows[0]["stages_ms"] == {"speech_end": 0.0, "vad_end": 200.0, "first_played": 290.0}
    assert rows[1]["service_turn"] == 7 and rows[1]["stages_clock"] == "shared"
    # A service on another clock: aligned on its own speech end.
    far = [{"turn": 1, "data": {"marks": {"speech_end": 9000.0, "first_played": 9000.25}}}]
    rows2: list[dict[str, Any]] = [{"turn": 1, "speech_end": 50.0, "v2v_ms": 300.0}]
    join_stages(rows2, far)
    assert rows2[0]["stages_ms"]["first_played"] == 250.0 and rows2[0]["stages_clock"] == "aligned"


def test_scripts(tmp_path: Any) -> None:
    turns = synthetic_script(6)
    assert [t.kind for t in turns] == ["ask", "bargein", "cough"] * 2
    assert [t.kind for t in synthetic_script(3, bargein=False)] == ["ask"] * 3
    raw = tmp_path / "q.raw"
    utterance(0.5, RATE).astype("<i2").tofile(raw)
    script = tmp_path / "s.json"
    script.write_text('{"turns": [{"raw": "q.raw", "text": "hello", "expect": ["Hi"]}, '
                      '{"say": "What is two plus two?", "kind": "bargein"}]}')
    got = load_script(script, lambda text: utterance(0.3, RATE))
    assert got[0].text == "hello" and got[0].expect == ("hi",) and got[1].kind == "bargein"
    with pytest.raises(ValueError, match="needs a voice"):
        load_script(script, None)


def test_wer_normalises_words_and_counts_each_kind_of_edit() -> None:
    assert words("It's 4 o'clock, Monday!") == ["it", "is", "four", "oclock", "monday"]
    assert edits(["a", "b", "c"], ["a", "x", "c", "d"]) == 2  # one substitution, one insertion
    assert edits(["a", "b"], []) == 2
    assert wer([("What is the capital of France?", "what is the capital on france")]) == (round(1 / 6, 4), 1, 6)
    assert wer([]) == (None, 0, 0)


def test_what_the_service_heard_is_joined_to_each_turn_and_scored() -> None:
    rows: list[dict[str, Any]] = [
        {"call": 0, "turn": 1, "text": "what is two plus two", "service_turn": 3},
        {"call": 0, "turn": 2, "text": "which animal says meow", "service_turn": 5},
        {"call": 0, "turn": 3, "text": "", "service_turn": 6},  # a cough: no words to score
        {"call": 0, "turn": 4, "text": "good bye", "service_turn": None},  # never joined to a service turn
    ]
    events = [
        {"kind": "transcript", "turn": 3, "data": {"text": "what is to", "final": False, "who": "caller"}},
        {"kind": "transcript", "turn": 3, "data": {"text": "What is two plus two?", "final": True, "who": "caller"}},
        {"kind": "transcript", "turn": 3, "data": {"text": "Four.", "final": True, "who": "agent"}},
        {"kind": "transcript", "turn": 5, "data": {"text": "with candy milk", "final": True, "who": "caller"}},
        {"kind": "state", "turn": 5, "data": {"state": "thinking"}},
    ]
    join_heard(rows, events)
    assert rows[0]["heard"] == "What is two plus two?" and rows[1]["heard"] == "with candy milk"
    assert "heard" not in rows[2] and "heard" not in rows[3]
    summary = summarise(rows, None)["heard"]
    # 0 errors in 5 words, then 4 words of which "which animal says meow" -> "with candy milk": 4 errors
    assert summary == {"wer": round(4 / 9, 4), "errors": 4, "words": 9, "turns": 2, "unheard": 0}
    assert "What the service heard" in render({"rows": rows, "heard": summary})


def test_recorded_speech_comes_with_its_own_transcripts() -> None:
    from voxline.bench.script import SPHINX_DIR, sphinx_recordings, sphinx_script

    if not SPHINX_DIR.exists():
        pytest.skip("pocketsphinx-testdata is not installed")
    recs = sphinx_recordings()
    texts = [t for _, t in recs]
    assert "he was not an ill disposed young man" in texts and "ten of clubs" in texts
    assert all(len(pcm) > RATE // 2 for pcm, _ in recs)
    turns = sphinx_script(12)
    assert [t.text for t in turns[:len(recs)]] == texts and turns[len(recs)].text == texts[0]


def test_voices_are_named_as_the_engines_take_them() -> None:
    from voxline.bench.voices import parse_voices

    assert parse_voices("piper, espeak:en-gb-x-rp,espeak") == ["piper", "espeak:en-gb-x-rp", "espeak"]
    for bad in ("", "festival", "piper:joe"):
        with pytest.raises(ValueError):
            parse_voices(bad)


async def test_several_voices_take_turns_and_each_is_scored_apart() -> None:
    from voxline.bench.result import heard_wer
    from voxline.bench.script import voice_texts
    from voxline.bench.voices import load_voices

    pairs = [("what is two plus two", ("four",)), ("which ocean is the biggest", ("pacific",))] * 2
    voices = await load_voices(["espeak:en-us+f3", "espeak:en-gb-x-rp"], [p[0] for p in pairs])
    turns = voice_texts(pairs, voices, bargein=False)
    assert [t.voice for t in turns] == ["espeak:en-us+f3", "espeak:en-gb-x-rp"] * 2
    assert all(len(t.audio) > RATE // 2 for t in turns)
    assert not np.array_equal(turns[0].audio, voices[1][1](pairs[0][0]))  # two voices, two sounds
    rows = [{"text": t.text, "voice": t.voice, "service_turn": i, "heard": t.text if i % 2 else "what is to"}
            for i, t in enumerate(turns)]
    summary = heard_wer(rows)
    assert summary["by_voice"] == {"espeak:en-gb-x-rp": 0.0, "espeak:en-us+f3": 0.6}  # 3 of 5 words wrong, twice


def test_the_progress_bar_counts_turns_and_can_be_off(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from voxline.bench.progress import Progress

    out = io.StringIO()
    p = Progress(3, "turns", stream=out)
    for i in range(3):
        p.step(f"turn {i}")
    p.close()
    assert "3/3" in out.getvalue() and p.done == 3
    quiet = io.StringIO()
    q = Progress(2, stream=quiet, enabled=False)
    q.step()
    q.close()
    assert quiet.getvalue() == ""
