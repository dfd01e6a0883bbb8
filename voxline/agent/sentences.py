"""Cut a streaming LLM reply into pieces worth speaking.

Waiting for a whole first sentence costs a quarter of a second on a small local
model, so the first piece may be a clause: text up to a comma, semicolon, colon
or dash once it holds ``first_min_words`` words. Later pieces are whole sentences
(at least ``min_chars`` long, so "Yes." does not become its own TTS call).
Abbreviations, initials and decimal numbers do not end a sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["SentenceSplitter"]

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e a.m p.m u.s no fig approx dept est inc ltd co".split()
)
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)")
_CLAUSE_END = re.compile(r"[,;:]\s|\s[—–-]\s")
MAX_PIECE_CHARS = 400  # speak something even if the model never punctuates


class SentenceSplitter:
    def __init__(self, first_min_words: int = 4, min_chars: int = 12) -> None:
        self.first_min_words = first_min_words
        self.min_chars = min_chars
        self._buf = ""
        self._emitted = 0

    def feed(self, text: str) -> Iterator[str]:
        """Add streamed text; yield every piece that is complete."""
        self._buf += text
        while True:
            piece = self._next_piece()
            if piece is None:
                return
            self._emitted += 1
            yield piece

    def flush(self) -> Iterator[str]:
        """The reply ended: whatever is left is the last piece."""
        rest = self._buf.strip()
        self._buf = ""
        if rest:
            self._emitted += 1
            yield rest

    def _next_piece(self) -> str | None:
        buf = self._buf
        for m in _SENTENCE_END.finditer(buf):
            end = m.end()
            if self._is_false_end(buf, m.start()):
                continue
            candidate = buf[:end].strip()
            if len(candidate) < self.min_chars and self._emitted > 0:
                continue
            self._buf = buf[end:].lstrip()
            return candidate
        if self._emitted == 0:
            for m in _CLAUSE_END.finditer(buf):
                candidate = buf[: m.start() + 1].strip()
                if len(candidate.split()) >= self.first_min_words:
                    self._buf = buf[m.end() :].lstrip()
                    return candidate.rstrip(" —–-")
        if len(buf) > MAX_PIECE_CHARS:
            cut = buf.rfind(" ", 0, MAX_PIECE_CHARS)
            cut = cut if cut > 0 else MAX_PIECE_CHARS
            self._buf = buf[cut:].lstrip()
            return buf[:cut].strip()
        return None

    @staticmethod
    def _is_false_end(buf: str, dot: int) -> bool:
        if buf[dot] != ".":
            return False
        word = buf[:dot].rsplit(None, 1)[-1].lower() if buf[:dot].strip() else ""
        word = word.lstrip("(\"'")
        if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
            return True
        # "3.5" never reaches here (the regex needs white space after the dot);
        # "No. 5" and initials are the cases above.
        return False
