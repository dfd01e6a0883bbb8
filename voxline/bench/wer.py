"""Word error rate of what the service heard against what the caller said.

Words are compared after the normalisation every WER report needs: lower case,
punctuation gone, digits spelled out one to twenty and a few contractions
split, so "It's 4." and "it is four" count as the same words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["words", "edits", "wer"]

_NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen sixteen seventeen eighteen nineteen twenty").split()
_CONTRACTIONS = {"it's": "it is", "what's": "what is", "that's": "that is", "i'm": "i am",
                 "don't": "do not", "can't": "can not", "cannot": "can not", "you're": "you are",
                 "there's": "there is", "let's": "let us", "isn't": "is not", "won't": "will not"}
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    out: list[str] = []
    for w in _WORD.findall(text.lower().replace("’", "'")):
        w = _CONTRACTIONS.get(w, w)
        for part in w.split():
            if part.isdigit() and int(part) < len(_NUMBERS):
                part = _NUMBERS[int(part)]
            out.append(part.replace("'", ""))
    return out


def edits(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Substitutions, deletions and insertions that turn ``hyp`` into ``ref`` (Levenshtein)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(pairs: Iterable[tuple[str, str]]) -> tuple[float | None, int, int]:
    """(WER, edits, reference words) over (said, heard) pairs; WER None with no words said."""
    total = errs = 0
    for said, heard in pairs:
        ref = words(said)
        total += len(ref)
        errs += edits(ref, words(heard))
    return (round(errs / total, 4) if total else None), errs, total
