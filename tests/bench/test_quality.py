"""benchmarks.quality's own parts, on small inputs."""

from __future__ import annotations

import numpy as np

from benchmarks.quality import (
    PAUSED,
    QUESTIONS,
    answered,
    noise_source,
    phone,
    recordings,
    summary,
    wer_row,
    words,
)


def test_at_least_thirty_questions_each_with_expected_words() -> None:
    assert len(QUESTIONS) >= 30 and all(expect for _, expect in QUESTIONS)
    assert len({q for q, _ in QUESTIONS}) == len(QUESTIONS)
    for first, second, word in PAUSED:
        assert word in words(second) and first and second


def test_answers_are_judged_by_their_words_numbers_as_words() -> None:
    assert answered("There are 7 days in a week.", ("seven",))
    assert answered("It has twenty-four hours.", ("twenty", "twentyfour"))
    assert answered("Paris!", ("paris",))
    assert not answered("The capital is New York.", ("paris",))
    assert not answered("", ("four",))


def test_word_error_rate_counts_edits_over_reference_words() -> None:
    row = wer_row([("what is the capital of France", "what is the capital on France"), ("go forward", "go forward")])
    assert (row["errors"], row["words"]) == (1, 8) and row["wer_pct"] == 12.5
    assert row["misheard"] == [{"ref": "what is the capital of France", "heard": "what is the capital on France"}]


def test_the_phone_path_keeps_length_and_speech_band() -> None:
    t = np.arange(16000) / 16000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    line = phone(tone)
    assert abs(len(line) - len(tone)) <= 2
    # 440 Hz passes the line (µ-law costs ~38 dB SNR at this level); 6 kHz does not.
    core = slice(1000, 15000)
    assert np.corrcoef(line[core].astype(float), tone[core].astype(float))[0, 1] > 0.99
    high = (8000 * np.sin(2 * np.pi * 6000 * t)).astype(np.int16)
    assert np.abs(phone(high)[core]).max() < 800


def test_noise_sources_are_sixty_seconds_of_what_they_say() -> None:
    for kind in ("silence", "line_noise", "tones"):
        x = noise_source(kind, 2.0)
        assert x.dtype == np.int16 and len(x) == 32000
    assert not noise_source("silence", 1.0).any()
    assert 100 < np.sqrt(np.mean(noise_source("line_noise", 2.0).astype(float) ** 2)) < 1500


def test_recordings_have_their_transcripts() -> None:
    clips = recordings()
    sets = {name for name, _, _ in clips}
    assert sets == {"librivox", "cards", "goforward"}
    assert all(len(audio) > 8000 and ref for _, ref, audio in clips)
    assert ("goforward", "go forward ten meters") in [(n, r) for n, r, _ in clips]


def test_summary_reads_each_part() -> None:
    wer = {k: {"wer_pct": 1.0, "errors": 1, "words": 100} for k in
           ("librivox/16k", "librivox/8k_ulaw", "cards/8k_ulaw", "goforward/8k_ulaw", "questions/x/16k",
            "questions/x/8k_ulaw")}
    s = summary({"wer": wer, "hallucination": {"invented_turns": 0},
                 "answers": {"16k": {"right_pct": 90.0}, "8k_ulaw": {"right_pct": 80.0}}})
    assert s["wer_questions/8k_ulaw"] == 1.0 and s["invented_turns"] == 0 and s["answers_right_pct_8k_ulaw"] == 80.0
