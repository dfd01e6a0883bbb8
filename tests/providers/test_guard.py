"""The transcript guard's tests, one by one (providers/stt/guard.py)."""

from __future__ import annotations

import pytest

from voxline.providers.stt.guard import (
    GuardConfig,
    compression_ratio,
    echo_overlap,
    judge_decode,
    judge_turn,
    repeated_run,
    words,
)

G = GuardConfig()


def decode(text: str, no_speech: float = 0.05, logprob: float = -0.3, config: GuardConfig = G) -> str:
    return judge_decode(text, no_speech_prob=no_speech, avg_logprob=logprob, config=config)


@pytest.mark.parametrize("text", [
    "Monday, Monday, Monday, Monday, Monday,",
    "I'm going to go to the I'm going to go to the I'm going to go to the",
    "Thank you for watching.",
    "you",
    "la la la la la la la la la la la la la la la la la la la la la la la la",
])
def test_whisper_inventions_are_rejected(text: str) -> None:
    assert decode(text)


@pytest.mark.parametrize("text", [
    "What is the capital of France?",
    "No, no, no, that's not what I meant.",
    "Thank you.",
    "Could you tell me how many minutes are in an hour, please?",
    "I want to go forward ten meters.",
])
def test_what_callers_say_is_not(text: str) -> None:
    assert decode(text) == ""


def test_whispers_own_signals() -> None:
    assert decode("hello", no_speech=0.7, logprob=-1.2).startswith("no speech")
    assert decode("hello", no_speech=0.7, logprob=-0.2) == ""  # sure of its words: speech after all
    assert decode("hello", no_speech=0.9, logprob=-0.2).startswith("no speech")  # past any doubt
    assert decode("hello", no_speech=0.1, logprob=-2.5).startswith("unsure")
    assert decode("hello", no_speech=0.1, logprob=-1.5) == ""
    assert decode("Monday, Monday, Monday, Monday", config=GuardConfig(enabled=False)) == ""


def test_measures() -> None:
    assert repeated_run(words("a b a b a b c")) == (2, 3)
    assert repeated_run(words("one two three")) == (3, 1) or repeated_run(words("one two three"))[1] == 1
    assert compression_ratio("") == 0.0
    assert compression_ratio("ab " * 100) > 2.4 > compression_ratio("What is the capital of France?")
    assert echo_overlap(words("how can I help"), words("Hello! How can I help you today?")) == 1.0
    assert echo_overlap(words("what time is it"), words("Hello! How can I help you today?")) == 0.0


def test_turn_tests() -> None:
    assert judge_turn("what is two plus two", voiced_seconds=1.2, bot_said="", config=G) == ""
    assert judge_turn("yes", voiced_seconds=0.0, bot_said="", config=G) == ""
    assert judge_turn("what is the capital of France please", voiced_seconds=0.2, bot_said="", config=G)
    # Over the bot's reply, a short transcript of its own words is its echo; after it, the caller's.
    assert judge_turn("Hello?", voiced_seconds=0.5, bot_said="Hello! How can I help?", config=G, over_bot=True)
    assert judge_turn("Hello?", voiced_seconds=0.5, bot_said="Hello! How can I help?", config=G) == ""
    assert judge_turn("yes please", voiced_seconds=0.5, bot_said="Hello! How can I help?", config=G,
                      over_bot=True) == ""
    # The caller repeats two of the bot's words: not an echo.
    assert judge_turn("Paris? Why Paris?", voiced_seconds=1.0, bot_said="The capital is Paris.", config=G) == ""
