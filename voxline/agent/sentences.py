"""Cut a streaming LLM reply into pieces worth speaking.

Waiting for a whole first sentence costs a quarter of a second on a small local
model, so the first piece may be a clause: text up to a comma, semicolon, colon
or dash once it holds ``first_min_words`` words. Later pieces are whole sentences
(at least ``min_chars`` long, so "Yes." does not become its own TTS call).
Abbreviations, initials and decimal numbers do not end a sentence.

Short answers often have no clause to break at ("The capital of France is
Paris."), and on a local model at ~20 tokens/s their whole first sentence
takes 0.3-0.6 s to write. When the caller has waited (``feed(..., hurry=True)``:
the agent sets it once the first token is ``first_piece_wait`` old), the first
piece may end at a phrase boundary: before a verb, preposition or conjunction
that follows at least ``phrase_min_words`` words ("The capital of France" |
"is Paris."). The cut is taken as soon as such a word appears, even if it
may still grow ("is" -> "island"): the cut is before the word, so it is at a
word boundary whatever the word becomes, and waiting to be sure would cost a
token. A fast model has finished its sentence before anyone hurries, and keeps
its prosody.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["SentenceSplitter"]

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e a.m p.m u.s no fig approx dept est inc ltd co".split()
)
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)")
_SENTENCE_END_NOW = re.compile(r"[.!?…]+[\"')\]]*$")  # at the end of what has come so far
_CLAUSE_END = re.compile(r"[,;:]\s|\s[—–-]\s")
_WORD = re.compile(r"\S+")
# Words that open a phrase: a first piece may end before one of these.
_PHRASE_STARTERS = frozenset(
    "is are was were am be has have had will would can could should may might must do does did "
    "in on at of for with to from by about into over under after before during "
    "and but or so because which that who when where while if than".split()
)
MAX_PIECE_CHARS = 400  # speak something even if the model never punctuates


class SentenceSplitter:
    def __init__(self, first_min_words: int = 4, min_chars: int = 12, phrase_min_words: int = 3) -> None:
        self.first_min_words = first_min_words
        self.min_chars = min_chars
        self.phrase_min_words = phrase_min_words
        self._buf = ""
        self._emitted = 0

    def feed(self, text: str, hurry: bool = False) -> Iterator[str]:
        """Add streamed text; yield every piece that is complete.

        ``hurry``: the first piece may end at a phrase boundary (see above).
        """
        self._buf += text
        while True:
            piece = self._next_piece(hurry)
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

    def _next_piece(self, hurry: bool = False) -> str | None:
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
        if self._emitted == 0 and hurry:
            # A sentence whose end is the newest token: normally the next token
            # (a space, or the end of the answer) confirms it; hurried, "?" and
            # "!" need no confirming, nor a "." after a word that is not an
            # abbreviation, an initial or a number (which might go on "3.5").
            end_now = _SENTENCE_END_NOW.search(buf)
            if end_now is not None and buf[: end_now.start()].strip():
                mark = buf[end_now.start()]
                before = buf[: end_now.start()].rstrip()
                if mark != "." or not (self._is_false_end(buf, end_now.start()) or before[-1:].isdigit()):
                    self._buf = ""
                    return buf.strip()
            cut = self._phrase_cut(buf)
            if cut is not None:
                self._buf = buf[cut:]
                return buf[:cut].strip()
        if len(buf) > MAX_PIECE_CHARS:
            cut = buf.rfind(" ", 0, MAX_PIECE_CHARS)
            cut = cut if cut > 0 else MAX_PIECE_CHARS
            self._buf = buf[cut:].lstrip()
            return buf[:cut].strip()
        return None

    def _phrase_cut(self, buf: str) -> int | None:
        """Where the first phrase boundary after ``phrase_min_words`` words is."""
        words = list(_WORD.finditer(buf))
        for i in range(self.phrase_min_words, len(words)):
            if words[i].group().lower() in _PHRASE_STARTERS:
                return words[i].start()
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
