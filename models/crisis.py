"""Crisis wording in patients' free text (CLINICAL.md §7).

Misses are not acceptable, false positives are: the scan is a plain substring match after
normalising case, quotes, punctuation and spacing, so "Can\u2019t  go on!!" matches "can't go on".
"""

from __future__ import annotations

import re

CRISIS_PHRASES: tuple[str, ...] = (
    "kill myself",
    "killing myself",
    "suicide",
    "suicidal",
    "end my life",
    "end it all",
    "want to die",
    "wanna die",
    "better off dead",
    "hurt myself",
    "hurting myself",
    "self harm",
    "self-harm",
    "cut myself",
    "overdose",
    "take all my pills",
    "no reason to live",
    "can't go on",
    "cant go on",
    "can't breathe",
    "cant breathe",
    "chest pain",
)

_QUOTES = str.maketrans(dict.fromkeys("\u2018\u2019\u201b\u2032\u02bc`", "'") | dict.fromkeys("\u201c\u201d", '"'))
# Everything but letters, digits and apostrophes separates words (hyphens and underscores too).
_SEPARATORS = re.compile(r"[^\w']+|_+")


def normalise(text: str) -> str:
    """Lower case, straight quotes, punctuation and repeated spaces collapsed to one space (§7)."""
    return " ".join(_SEPARATORS.sub(" ", text.translate(_QUOTES).lower()).split())


def crisis_matches(text: str | None, phrases: tuple[str, ...] = CRISIS_PHRASES) -> list[str]:
    """The crisis phrases found in `text`, in list order (CLINICAL.md §7).

    Plain substring matching on both normalised: "suicidally" still matches "suicidal", and
    "self-harm", "self harm" and "self--harm" are the same words.
    """
    if not text:
        return []
    haystack = normalise(text)
    return [phrase for phrase in phrases if normalise(phrase) in haystack]
