"""Crisis wording in patients' free text (CLINICAL.md §7).

Misses are not acceptable, false positives are. Every scanned field and every phrase go through
the same normaliser (`normalise`), then the scan is a plain substring match of their letters and
digits (spaces and apostrophes left out): "Can\u2019t  go on!!", "c\u00adan't go on" and
"CAN\uff07T go on" all contain "can't go on", and "#KillMyself" contains "kill myself". The phrases
are the clinic's (`ClinicPolicy.crisis_phrases`), read from a seed file (`read_crisis_phrases`),
never a constant.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

# The list of CLINICAL.md §7, shipped as seed data; a clinic points CRISIS_PHRASES_FILE elsewhere.
SEED_CRISIS_PHRASES_FILE = Path(__file__).resolve().parents[2] / "seeds" / "crisis_phrases.txt"

# Apostrophe look-alikes: curly, reversed and low single quotes, primes, grave and acute accents, modifier
# letters (which count as letters, so would otherwise glue words together), fullwidth forms.
_APOSTROPHES = (
    "\u0060\u00b4\u2018\u2019\u201a\u201b\u2032\u2035\u02b9\u02bb\u02bc\u02bd\u02be\u02bf"
    "\u02c8\u02ca\u02cb\u0374\u055a\u05f3\u1fbd\u1fbf\u1fef\u1ffd\u1ffe\ua78b\ua78c\uff07\uff40"
)
_QUOTES = "\u00ab\u00bb\u2039\u203a\u02ba\u02dd\u02ee\u201c\u201d\u201e\u201f\u2033\u2036\u05f4\u301d\u301e\u301f\uff02"
_PLAIN = str.maketrans(dict.fromkeys(_APOSTROPHES, "'") | dict.fromkeys(_QUOTES, '"'))
# Invisible characters removed wherever they are: format characters (soft hyphen, zero-width space,
# joiners, word joiner, BOM, bidi controls, tags…), combining marks (accents, strike-through and
# underline "styles", variation selectors) and the Hangul fillers, which are letters but blank.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Mn", "Me"})
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
# Everything but letters, digits and apostrophes separates words (hyphens and underscores too).
_SEPARATORS = re.compile(r"[^\w']+|_+")


class CrisisPhrasesError(ValueError):
    """A crisis phrase file that cannot serve: missing, unreadable, empty, or with a blank phrase."""


def _visible_and_plain(text: str) -> str:
    text = text.translate(_PLAIN)
    return "".join(
        character
        for character in text
        if unicodedata.category(character) not in _INVISIBLE_CATEGORIES and character not in _BLANK_LETTERS
    )


def normalise(text: str) -> str:
    """The one normaliser of scanned text and phrases (CLINICAL.md §7): Unicode NFKC (fullwidth,
    ligatures, styled letters and odd spaces become plain), format characters and combining marks
    removed, every apostrophe and quote variant made plain, case folded, punctuation and repeated
    spaces collapsed to one space.

    Invisible characters and quotes are handled before and after the Unicode passes: NFKC turns an
    acute accent into a space and a combining mark, a fullwidth grave into a grave, and the
    decomposition after case folding splits accents off letters ("é" → "e")."""
    text = _visible_and_plain(text)
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _visible_and_plain(unicodedata.normalize("NFKD", text))
    return " ".join(_SEPARATORS.sub(" ", text).split())


def _letters_and_digits(normalised: str) -> str:
    """What the scan compares: a normalised text without its spaces and apostrophes, so that a
    phrase is found whatever stands between its words or letters ("can't go on" in "can t go on",
    "cant go on" and "can''t go on"; "kill myself" in "#KillMyself" and "k i l l  m y s e l f")."""
    return normalised.replace("'", "").replace(" ", "")


@lru_cache(maxsize=4096)
def _phrase_key(phrase: str) -> str:
    return _letters_and_digits(normalise(phrase))


def crisis_matches(text: str | None, phrases: tuple[str, ...]) -> list[str]:
    """The crisis phrases found in `text`, as the clinic lists them, in list order (CLINICAL.md §7).

    Substring matching on both normalised, word boundaries and all: "suicidally" still matches
    "suicidal", and "self-harm", "self harm", "selfharm" and "self--harm" are the same words."""
    if not text:
        return []
    haystack = _letters_and_digits(normalise(text))
    return [phrase for phrase in phrases if (key := _phrase_key(phrase)) and key in haystack]


def parse_crisis_phrases(text: str) -> tuple[str, ...]:
    """CLINICAL.md §7 (the phrase list is seed data, never a constant): the phrases of a phrase
    file's text, one a line, blank lines and `#` comment lines left out. Raises
    `CrisisPhrasesError` when there is no phrase, or a line has no letter or digit (it would match
    every text)."""
    phrases = []
    for number, line in enumerate(text.splitlines(), start=1):
        phrase = line.strip()
        if not phrase or phrase.startswith("#"):
            continue
        if not _phrase_key(phrase):
            raise CrisisPhrasesError(f"line {number} ({phrase!r}) has no letter or digit")
        phrases.append(phrase)
    if not phrases:
        raise CrisisPhrasesError("it lists no phrase")
    return tuple(phrases)


def read_crisis_phrases(path: Path) -> tuple[str, ...]:
    """CLINICAL.md §7: the phrases of a phrase file (UTF-8), the seed list or a clinic's own.
    Raises `CrisisPhrasesError` saying what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise CrisisPhrasesError(f"{path} cannot be read: {reason}") from error
    try:
        return parse_crisis_phrases(text)
    except CrisisPhrasesError as error:
        raise CrisisPhrasesError(f"{path}: {error}") from None
