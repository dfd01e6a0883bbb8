import logging

import pytest

from voxline.media.budget import PathBudget, TurnLatency


def budget() -> PathBudget:
    return PathBudget.build(
        [
            ("vad", 0.2, "vad_end"),
            ("stt", 0.3, "transcript"),
            ("llm", 0.2, "first_token"),
            ("tts", 0.1, "first_tts_audio"),
            ("playout", 0.02, "first_played"),
        ]
    )


def test_negative_latency_is_refused() -> None:
    with pytest.raises(ValueError, match="negative latency"):
        PathBudget.build([("x", -1.0, None)])


def test_turn_within_budget_has_no_violation() -> None:
    lat = TurnLatency(budget(), "s1")
    for name, t in [("speech_end", 0.0), ("vad_end", 0.2), ("transcript", 0.45),
                    ("first_token", 0.6), ("first_tts_audio", 0.7), ("first_played", 0.72)]:
        lat.mark(7, name, 100 + t)
    rec = lat.close(7)
    assert rec is not None and rec.violations == []
    assert rec.voice_to_voice == pytest.approx(0.72)
    assert rec.segments["transcript"] == pytest.approx(0.25)


def test_exceeded_segment_is_counted_and_logged_with_turn(caplog: pytest.LogCaptureFixture) -> None:
    lat = TurnLatency(budget(), "s1")
    lat.mark(3, "speech_end", 0.0)
    lat.mark(3, "vad_end", 0.2)
    lat.mark(3, "transcript", 0.9)  # 0.7 s against 0.3 s
    lat.mark(3, "first_played", 1.5)
    with caplog.at_level(logging.WARNING):
        rec = lat.close(3)
    assert rec is not None
    # first_played: 0.6 s against first_token + first_tts_audio + first_played = 0.32 s
    assert rec.violations == ["transcript", "first_played", "voice_to_voice"]
    assert lat.violations == {"transcript": 1, "first_played": 1, "voice_to_voice": 1}
    assert any(getattr(r, "turn_id", None) == 3 for r in caplog.records)
    assert lat.close(3) is rec and lat.violations["transcript"] == 1  # closing twice counts once


def test_first_mark_wins_and_history_is_bounded() -> None:
    lat = TurnLatency(budget(), max_turns=4)
    lat.mark(1, "speech_end", 1.0)
    lat.mark(1, "speech_end", 2.0)
    assert lat.turns[1].marks["speech_end"] == 1.0
    for t in range(2, 10):
        lat.mark(t, "speech_end", float(t))
    assert list(lat.turns) == [6, 7, 8, 9]
