"""Is a transcript something the caller said? Tests against invented turns.

Whisper writes fluent text for audio with no words in it: a line's hiss, a
ring tone, music on hold, the bot's own voice coming back down the line. The
classic products are repetitions ("Monday, Monday, Monday, Monday, Monday,"),
stock phrases from its training subtitles ("Thank you for watching."), and
sentences far longer than the speech they came from. A caller turn made of
such text is answered as if the caller had said it.

Two places judge a final transcript, each with what it knows:

- the recogniser (``judge_decode``), with whisper's own signals: the
  probability that the window held no speech, the mean log-probability of the
  tokens written, and how repetitive the text is (its zlib compression ratio,
  as whisper's own decoder measures it, and a word or phrase said again and
  again in a row);
- the agent's listener (``judge_turn``), with the text's own tests again (for
  recognisers that do not judge themselves) and what the VAD measured: the voiced
  length of the turn (a transcript of more words than that speech could carry
  is invented), and what the bot itself said just before (its own voice heard
  back as an echo).

A rejected transcript is not an empty one: it carries its text and the reason
(``Transcription.rejected``), so the session's events show it, and it is counted;
it is never answered.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

__all__ = [
    "GuardConfig",
    "compression_ratio",
    "repeated_run",
    "judge_decode",
    "judge_turn",
    "echo_overlap",
    "STOCK_PHRASES",
    "words",
]

_WORD = re.compile(r"[a-z0-9']+")

# Whisper's best-known inventions on silence and noise (subtitle credits), in
# words. A caller may say "thank you", so only the whole transcript counts.
STOCK_PHRASES = frozenset({
    "thank you for watching",
    "thanks for watching",
    "please subscribe",
    "subtitles by the amara org community",
    "you",
})


@dataclass(frozen=True, slots=True)
class GuardConfig:
    # Whisper's own no-speech rule (faster-whisper's defaults): both must hold.
    no_speech_prob: float = 0.6
    no_speech_logprob: float = -1.0
    # Above this no-speech probability, the decode is rejected however sure of
    # its words it is. Measured (benchmarks.quality's clips, tiny.en, 16 kHz and
    # G.711): real and synthetic speech at most 0.69; ring-back and chords
    # ("Beep Beep Beep", "Thank you.") 0.86 and more.
    max_no_speech_prob: float = 0.8
    # Below this mean token log-probability the decoder was guessing (real
    # speech on those clips: -1.45 at the lowest; tones -1.7 to -2.2).
    min_avg_logprob: float = -2.0
    # Whisper's own threshold for a repetitive decode (gzip ratio of the text).
    max_compression_ratio: float = 2.4
    # The same word this many times in a row, or a phrase of 2-8 words this many
    # times: a decoder loop ("no, no, no" is three; a loop is five and more).
    max_word_run: int = 4
    max_phrase_run: int = 3
    # A caller says at most about this many words per second of voiced speech
    # (fast speech is ~4); plus a few for the VAD's onset and hangover.
    max_words_per_second: float = 6.0
    words_slack: int = 3
    # The bot's own words heard back: this share of the transcript's words, in
    # order, are in what the bot said just before (echo); at least min_echo_words.
    echo_share: float = 0.7
    min_echo_words: int = 3
    enabled: bool = True


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def compression_ratio(text: str) -> float:
    """Whisper's measure of a repetitive decode: bytes of text per byte of zlib."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def repeated_run(ws: list[str], max_n: int = 8) -> tuple[int, int]:
    """The longest run of one n-gram said again and again in a row: (n, times)."""
    best = (1, 1 if ws else 0)
    for n in range(1, max_n + 1):
        i = 0
        while i + n <= len(ws):
            times = 1
            while ws[i + times * n : i + (times + 1) * n] == ws[i : i + n]:
                times += 1
            if times > best[1] or (times == best[1] and n > best[0]):
                best = (n, times)
            i += max(1, (times - 1) * n) if times > 1 else 1
    return best


def judge_decode(
    text: str, *, no_speech_prob: float | None, avg_logprob: float | None, config: GuardConfig
) -> str:
    """Why a decoded transcript is not the caller's words; "" if nothing says so."""
    if not config.enabled or not text.strip():
        return ""
    c = config
    if no_speech_prob is not None and avg_logprob is not None:
        if no_speech_prob > c.no_speech_prob and avg_logprob < c.no_speech_logprob:
            return f"no speech (p={no_speech_prob:.2f}, logprob {avg_logprob:.2f})"
    if no_speech_prob is not None and no_speech_prob > c.max_no_speech_prob:
        return f"no speech (p={no_speech_prob:.2f})"
    if avg_logprob is not None and avg_logprob < c.min_avg_logprob:
        return f"unsure decode (logprob {avg_logprob:.2f})"
    ws = words(text)
    if " ".join(ws) in STOCK_PHRASES:
        return "stock phrase"
    n, times = repeated_run(ws)
    if (n == 1 and times >= c.max_word_run) or (n > 1 and times >= c.max_phrase_run):
        return f"repetition ({' '.join(ws[:n])!r} x{times})"
    ratio = compression_ratio(text)
    if ratio > c.max_compression_ratio:
        return f"repetition (compression ratio {ratio:.2f})"
    return ""


def echo_overlap(heard: list[str], said: list[str]) -> float:
    """Share of ``heard``'s words found in order in ``said`` (longest common subsequence)."""
    if not heard or not said:
        return 0.0
    row = [0] * (len(said) + 1)
    for h in heard:
        prev = 0
        for j, s in enumerate(said, 1):
            prev, row[j] = row[j], prev + 1 if h == s else max(row[j], row[j - 1])
    return row[-1] / len(heard)


def judge_turn(
    text: str, *, voiced_seconds: float, bot_said: str, config: GuardConfig, over_bot: bool = False
) -> str:
    """Why a caller turn's transcript is not what the caller said, from what the
    VAD measured and what the bot said just before; "" if nothing says so.

    ``over_bot``: the speech began while the bot's reply was playing. Then a
    transcript of fewer than ``min_echo_words`` words is an echo too if every one
    of them is in what the bot said ("Hello?" from "Hello! How can I help?");
    said after the bot finished, such words are the caller's ("yes")."""
    if not config.enabled or not text.strip():
        return ""
    c = config
    # The text's own tests, for a recogniser that does not judge its decodes.
    if reason := judge_decode(text, no_speech_prob=None, avg_logprob=None, config=c):
        return reason
    ws = words(text)
    limit = c.words_slack + c.max_words_per_second * max(0.0, voiced_seconds)
    if len(ws) > limit:
        return f"{len(ws)} words in {voiced_seconds:.2f}s of speech"
    if bot_said and (len(ws) >= c.min_echo_words or over_bot):
        share = echo_overlap(ws, words(bot_said))
        if share >= (c.echo_share if len(ws) >= c.min_echo_words else 1.0):
            return f"echo of the bot's own words ({share:.0%})"
    return ""
