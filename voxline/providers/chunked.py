"""Every TTS synthesises bounded pieces of text, one after another.

A TTS engine given a whole text synthesises it as one job, and an embedded one
as few inferences: Piper runs one VITS inference per sentence it finds, so 4096
characters without a full stop are one inference over the whole text (~170 s of
audio, gigabytes of activations, many seconds of CPU before the first sample).
A remote vendor is asked for minutes of audio in one request. Neither can be
stopped part-way except between the pieces it was given.

``speech_pieces`` cuts a text into pieces of at most ``max_chars`` characters:
at sentence ends (and line breaks), a sentence longer than that at clause
boundaries (``,`` ``;`` ``:`` and spaced dashes), a clause longer than that at
spaces, and a single run of more than ``max_chars`` non-space characters anywhere.
Consecutive short sentences are packed into one piece up to the bound, so a
vendor is not asked once per "Yes." (an engine that splits sentences itself,
as Piper does, still starts playing after the first one).

``ChunkedTTS`` wraps any ``TextToSpeech`` with it (the factory wraps every TTS,
the offline voice included): each piece is one ``synthesize`` call on the inner
engine, started only when the previous one has been consumed, so the work and
memory of one call are bounded by ``max_chars``, and the engine's deadlines
(first audio, idle, total) apply per piece. Cancelling (the consumer's task, or
``aclose``) closes the current piece's stream and starts no other: what is
already running is at most one piece, and each engine stops within its own
unit of work (Piper: the sentence inference under way; espeak-ng: one callback,
~60 ms of audio; a vendor: its HTTP stream is closed).

This lives here and not in ``voxline.agent.sentences`` (which cuts a *streaming*
LLM reply for early first audio): providers do not import the agent, and
every caller of a TTS, not only the agent, needs the bound.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from .base import PCM, Deadlines, TextToSpeech

__all__ = ["MAX_CHARS", "speech_pieces", "ChunkedTTS"]

MAX_CHARS = 150

# A sentence ends at . ! ? … (and closing quotes or brackets) followed by space.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+|\s+(?=[—–-]\s)")
# A full stop after these (or after a single letter) does not end a sentence.
_ABBREVIATIONS = frozenset("mr mrs ms dr prof sr jr st vs etc e.g i.e a.m p.m u.s no fig approx".split())


def _sentences(line: str) -> Iterator[str]:
    start = 0
    for m in _SENTENCE_END.finditer(line):
        before = line[start : m.start()]
        word = before.split()[-1].lower().lstrip("(\"'") if before.strip() else ""
        stem = word.rstrip(".")
        if word.endswith(".") and (stem in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha())):
            continue  # "Dr. Smith", "J. R. R. Tolkien"
        piece = line[start : m.start()].strip() + line[m.start() : m.end()].strip()
        if piece:
            yield piece
        start = m.end()
    rest = line[start:].strip()
    if rest:
        yield rest


def _clauses(sentence: str) -> Iterator[str]:
    return (c for c in (c.strip() for c in _CLAUSE_END.split(sentence)) if c)


def _slices(word: str, max_chars: int) -> Iterator[str]:
    return (word[i : i + max_chars] for i in range(0, len(word), max_chars))


def _pack(units: Iterable[str], max_chars: int, finer: Callable[[str], Iterable[str]]) -> Iterator[str]:
    """Join consecutive units with a space while the result fits; a unit that
    does not fit alone is cut by ``finer``."""
    piece = ""
    for unit in units:
        if len(unit) > max_chars:
            if piece:
                yield piece
                piece = ""
            yield from finer(unit)
        elif not piece:
            piece = unit
        elif len(piece) + 1 + len(unit) <= max_chars:
            piece = f"{piece} {unit}"
        else:
            yield piece
            piece = unit
    if piece:
        yield piece


def speech_pieces(text: str, max_chars: int = MAX_CHARS) -> Iterator[str]:
    """``text`` as pieces of at most ``max_chars`` characters (see the module docstring)."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")

    def words(clause: str) -> Iterator[str]:
        return _pack(clause.split(), max_chars, lambda w: _slices(w, max_chars))

    def clauses(sentence: str) -> Iterator[str]:
        return _pack(_clauses(sentence), max_chars, words)

    sentences = (s for line in text.splitlines() for s in _sentences(line))
    return _pack(sentences, max_chars, clauses)


class ChunkedTTS:
    """A ``TextToSpeech`` that hands its inner engine one bounded piece at a time."""

    def __init__(self, inner: TextToSpeech, max_chars: int = MAX_CHARS) -> None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {max_chars}")
        self.inner = inner
        self.name = inner.name
        self.max_chars = max_chars
        self.pieces = 0  # pieces started, over this object's life

    @property
    def sample_rate(self) -> int:
        return int(self.inner.sample_rate)  # an engine knows its rate for sure after load()

    @sample_rate.setter
    def sample_rate(self, rate: int) -> None:
        self.inner.sample_rate = rate

    async def synthesize(self, text: str, deadlines: Deadlines | None = None) -> AsyncGenerator[PCM, None]:
        for piece in speech_pieces(text, self.max_chars):
            self.pieces += 1
            it = self.inner.synthesize(piece, deadlines)
            try:
                async for pcm in it:
                    yield pcm
            finally:
                await _aclose(it)

    def __getattr__(self, name: str) -> Any:  # load(), state(), chain ... of the engine
        return getattr(self.inner, name)


async def _aclose(it: AsyncIterator[PCM]) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        await aclose()
