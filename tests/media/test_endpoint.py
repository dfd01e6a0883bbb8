"""Endpointer: every transition, hysteresis, onset, hangover, min_speech, config swap, pts."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from voxline.media.endpoint import EndpointConfig, Endpointer, EndpointEvent
from voxline.media.frames import SpeechEnded, SpeechStarted

RATE = 16000
WIN = 320  # 20 ms windows


def feed(
    ep: Endpointer, probs: Sequence[float | bool], first: int = 0, win: int = WIN
) -> list[tuple[int, EndpointEvent]]:
    """Feed windows ``first, first+1, ...``; return (window index, event) pairs."""
    out: list[tuple[int, EndpointEvent]] = []
    for k, p in enumerate(probs, start=first):
        for event in ep.update(p, k * win, win, arrival=100.0 + k * win / RATE):
            out.append((k, event))
    return out


def cfg(**kw: float) -> EndpointConfig:
    base: dict[str, float] = {"threshold": 0.5, "start": 0.1, "stop": 0.1, "min_speech": 0.0}
    base.update(kw)
    return EndpointConfig(**base)


def test_silence_stays_quiet() -> None:
    ep = Endpointer(cfg(), RATE)
    assert feed(ep, [0.0, 0.1, 0.3, 0.49] * 20) == []
    assert ep.state == "quiet" and not ep.in_speech and ep.turn == 0


def test_onset_after_start_seconds_with_pts_of_first_speech_window() -> None:
    ep = Endpointer(cfg(start=0.1), RATE)  # 0.1 s = 5 windows of 20 ms
    events = feed(ep, [0.0] * 3 + [0.9] * 5)
    assert len(events) == 1
    k, ev = events[0]
    assert k == 7  # detected on the 5th speech window ...
    assert isinstance(ev, SpeechStarted)
    assert ev.pts == 3 * WIN  # ... but stamped where speech started
    assert ev.rate == RATE and ev.turn == 1
    assert ev.time == pytest.approx(100.0 + 3 * WIN / RATE)  # arrival of that window
    assert ep.in_speech and ep.state == "speech"


def test_onset_one_window_short_is_not_speech() -> None:
    ep = Endpointer(cfg(start=0.1), RATE)
    assert feed(ep, [0.9] * 4 + [0.0]) == []
    assert ep.state == "quiet"
    events = feed(ep, [0.9] * 5, first=5)
    assert [(k, type(e), e.pts) for k, e in events] == [(9, SpeechStarted, 5 * WIN)]


def test_onset_counts_samples_not_windows() -> None:
    # 512-sample windows: 0.2 s = 3200 samples needs 7 windows (6 give 3072).
    ep = Endpointer(cfg(start=0.2), RATE)
    events = feed(ep, [0.9] * 7, win=512)
    assert [k for k, _ in events] == [6]


def test_zero_start_and_stop_fire_on_first_window() -> None:
    ep = Endpointer(cfg(start=0.0, stop=0.0), RATE)
    events = feed(ep, [0.0, 0.9, 0.0])
    assert [(k, type(e), e.pts) for k, e in events] == [(1, SpeechStarted, WIN), (2, SpeechEnded, 2 * WIN)]


def test_hangover_ends_turn_at_first_silent_window() -> None:
    ep = Endpointer(cfg(start=0.1, stop=0.1), RATE)
    events = feed(ep, [0.9] * 10 + [0.0] * 5)
    assert [k for k, _ in events] == [4, 14]
    ended = events[1][1]
    assert isinstance(ended, SpeechEnded)
    assert ended.pts == 10 * WIN  # where speech ended, not where it was noticed
    assert ended.speech == pytest.approx(10 * WIN / RATE)
    assert ended.turn == 1
    assert ended.time == pytest.approx(100.0 + 10 * WIN / RATE)
    assert ep.state == "quiet"


def test_hangover_one_window_short_keeps_turn_open() -> None:
    ep = Endpointer(cfg(start=0.1, stop=0.1), RATE)
    feed(ep, [0.9] * 10)
    assert feed(ep, [0.0] * 4, first=10) == []
    assert ep.state == "hangover" and ep.in_speech


def test_speech_during_hangover_resumes_turn_and_moves_end() -> None:
    ep = Endpointer(cfg(start=0.1, stop=0.1), RATE)
    events = feed(ep, [0.9] * 10 + [0.0] * 3 + [0.9] * 4 + [0.0] * 5)
    assert [(type(e), e.pts) for _, e in events] == [(SpeechStarted, 0), (SpeechEnded, 17 * WIN)]
    assert events[1][1].turn == 1  # one turn across the short pause


def test_hysteresis_keeps_state_between_thresholds() -> None:
    # threshold 0.5 -> silence below 0.35; 0.4 is "no change".
    ep = Endpointer(cfg(start=0.04, stop=0.04), RATE)
    assert feed(ep, [0.4] * 10) == []  # from silence, 0.4 is not speech
    events = feed(ep, [0.5, 0.5], first=10)  # p == threshold counts as speech
    assert [(type(e), e.pts) for _, e in events] == [(SpeechStarted, 10 * WIN)]
    assert feed(ep, [0.4] * 10 + [0.35] * 10, first=12) == []  # 0.35 is not < 0.35
    assert ep.state == "speech"
    events = feed(ep, [0.34, 0.34], first=32)
    assert [(type(e), e.pts) for _, e in events] == [(SpeechEnded, 32 * WIN)]


def test_between_thresholds_during_hangover_keeps_counting_silence() -> None:
    # Like Silero's iterator: once unvoiced, a window in the dead band does not
    # reset the hangover.
    ep = Endpointer(cfg(start=0.02, stop=0.1), RATE)
    feed(ep, [0.9] * 3)
    events = feed(ep, [0.1, 0.4, 0.4, 0.4, 0.4], first=3)
    assert [(type(e), e.pts) for _, e in events] == [(SpeechEnded, 3 * WIN)]


def test_explicit_silence_threshold() -> None:
    config = EndpointConfig(threshold=0.7, silence=0.2, start=0.0, stop=0.0)
    assert config.silence_threshold == 0.2
    ep = Endpointer(config, RATE)
    assert [type(e) for _, e in feed(ep, [0.7, 0.3, 0.2, 0.19])] == [SpeechStarted, SpeechEnded]
    assert EndpointConfig(threshold=0.1).silence_threshold == 0.01  # floored like Silero


def test_bool_decisions() -> None:
    ep = Endpointer(cfg(start=0.04, stop=0.04), RATE)
    events = feed(ep, [False, True, True, False, False])
    assert [(k, type(e), e.pts) for k, e in events] == [(2, SpeechStarted, WIN), (4, SpeechEnded, 3 * WIN)]


def test_min_speech_defers_end_until_turn_spans_it() -> None:
    ep = Endpointer(cfg(start=0.02, stop=0.1, min_speech=0.3), RATE)
    events = feed(ep, [0.9] * 5 + [0.0] * 30)  # 0.1 s of "uh", then 0.6 s pause
    assert [type(e) for _, e in events] == [SpeechStarted]
    assert ep.state == "hangover"
    events = feed(ep, [0.9] * 5 + [0.0] * 5, first=35)  # more speech: spans 0.8 s now
    assert [(type(e), e.pts) for _, e in events] == [(SpeechEnded, 40 * WIN)]
    ended = events[0][1]
    assert isinstance(ended, SpeechEnded)
    assert ended.speech == pytest.approx(40 * WIN / RATE) and ended.turn == 1


def test_min_speech_met_ends_normally() -> None:
    ep = Endpointer(cfg(start=0.02, stop=0.1, min_speech=0.2), RATE)
    events = feed(ep, [0.9] * 10 + [0.0] * 5)
    assert [(k, type(e)) for k, e in events] == [(0, SpeechStarted), (14, SpeechEnded)]


def test_turn_ids_increase_and_pair() -> None:
    ep = Endpointer(cfg(start=0.02, stop=0.02), RATE, first_turn=7)
    events = feed(ep, ([0.9] * 3 + [0.0] * 3) * 3)
    assert [(type(e).__name__, e.turn) for _, e in events] == [
        ("SpeechStarted", 7), ("SpeechEnded", 7),
        ("SpeechStarted", 8), ("SpeechEnded", 8),
        ("SpeechStarted", 9), ("SpeechEnded", 9),
    ]  # fmt: skip
    assert ep.turn == 9 and ep.started == 3 and ep.ended == 3


def test_config_swap_shortens_hangover_mid_turn() -> None:
    ep = Endpointer(cfg(start=0.02, stop=0.2), RATE)
    feed(ep, [0.9] * 5 + [0.0] * 3)  # 3 silent windows: not yet 0.2 s
    ep.config = cfg(start=0.02, stop=0.06)
    events = feed(ep, [0.0], first=8)  # 4 silent windows >= 0.06 s
    assert [(type(e), e.pts) for _, e in events] == [(SpeechEnded, 5 * WIN)]


def test_config_swap_longer_onset_and_threshold() -> None:
    ep = Endpointer(cfg(start=0.04), RATE)
    ep.config = cfg(start=0.1, threshold=0.8)  # e.g. while the bot speaks
    assert feed(ep, [0.7] * 10) == []  # below the new threshold
    assert [k for k, _ in feed(ep, [0.9] * 5, first=10)] == [14]


def test_flush_closes_open_turn_where_speech_ended() -> None:
    ep = Endpointer(cfg(start=0.02, stop=0.2), RATE)
    feed(ep, [0.9] * 5)
    (ev,) = ep.flush()
    assert isinstance(ev, SpeechEnded) and ev.pts == 5 * WIN and ev.turn == 1
    ep = Endpointer(cfg(start=0.02, stop=0.2), RATE)
    feed(ep, [0.9] * 5 + [0.0] * 3)  # in hangover
    (ev,) = ep.flush()
    assert isinstance(ev, SpeechEnded) and ev.pts == 5 * WIN
    assert ep.state == "quiet" and ep.flush() == ()


def test_flush_drops_onset_and_quiet() -> None:
    ep = Endpointer(cfg(start=0.2), RATE)
    feed(ep, [0.9] * 3)
    assert ep.state == "onset"
    assert ep.flush() == ()
    assert Endpointer(cfg(), RATE).flush() == ()


def test_flush_ignores_min_speech_so_turns_always_pair() -> None:
    ep = Endpointer(cfg(start=0.02, stop=0.02, min_speech=5.0), RATE)
    feed(ep, [0.9] * 3 + [0.0] * 10)
    assert [type(e) for e in ep.flush()] == [SpeechEnded]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0.0},
        {"threshold": 1.5},
        {"threshold": 0.5, "silence": 0.6},
        {"threshold": 0.5, "silence": 0.0},
        {"start": -0.1},
        {"stop": 61.0},
        {"min_speech": -1.0},
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        EndpointConfig(**kwargs)


def test_config_is_frozen() -> None:
    c = EndpointConfig()
    with pytest.raises(AttributeError):
        c.stop = 1.0  # type: ignore[misc]
    assert (c.threshold, c.start, c.stop, c.min_speech) == (0.5, 0.2, 0.2, 0.0)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate"):
        Endpointer(EndpointConfig(), 0)


def test_pause_is_announced_once_per_silence_before_the_hangover_ends() -> None:
    from voxline.media.frames import SpeechPaused

    ep = Endpointer(EndpointConfig(start=0.064, stop=0.2, pause=0.064), rate=16000)
    events: list[object] = []
    pts = 0

    def feed(voiced: bool, windows: int) -> None:
        nonlocal pts
        for _ in range(windows):
            events.extend(ep.update(voiced, pts, 512))
            pts += 512

    feed(True, 10)
    feed(False, 2)  # 64 ms of silence: a pause
    feed(True, 3)  # speech resumes: the next silence may pause again
    feed(False, 10)  # 320 ms: pause, then the end
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["SpeechStarted", "SpeechPaused", "SpeechPaused", "SpeechEnded"]
    first, second = (e for e in events if isinstance(e, SpeechPaused))
    assert first.pts == 10 * 512 and second.pts == 15 * 512  # where the speech stopped
    assert all(e.turn == 1 for e in events)  # type: ignore[attr-defined]


def test_pause_must_be_shorter_than_the_hangover() -> None:
    with pytest.raises(ValueError, match="pause must be in"):
        EndpointConfig(stop=0.2, pause=0.2)
