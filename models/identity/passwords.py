"""What a new password must be: NIST SP 800-63B §5.1.1.2 (memorized secrets).

Length over composition: 12 to 128 characters, any characters (spaces, emoji), no rule on
character classes. Refused when it is on the list of common and breached-looking passwords
shipped in `seeds/common_passwords.txt` (its case and a trailing run of digits or symbols
ignored), when it repeats too few characters, or when it contains the e-mail's local part or
one of the owner's names.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

MINIMUM_LENGTH = 12
MAXIMUM_LENGTH = 128
COMMON_PASSWORDS_FILE = Path(__file__).resolve().parents[2] / "seeds" / "common_passwords.txt"
# Parts of the e-mail or a name shorter than this are too common to refuse ("al", "li").
_SHORTEST_PERSONAL_PART = 3
_TRAILING_DECORATION = re.compile(r"[\d\W_]+$")


@dataclass(frozen=True)
class PasswordHashing:
    """How passwords are hashed and checked (api.auth.passwords: Argon2id, off the event loop),
    handed to the domain operations that set or check one."""

    hash: Callable[[str], Awaitable[str]]
    verify: Callable[[str | None, str], Awaitable[bool]]


@cache
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def _folded(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def password_problem(password: str, *, email: str = "", names: Iterable[str] = ()) -> str | None:
    """Why `password` is refused as a new password (a sentence for its owner), or None."""
    length = len(unicodedata.normalize("NFC", password))
    if length < MINIMUM_LENGTH:
        return f"the password must be at least {MINIMUM_LENGTH} characters long"
    if length > MAXIMUM_LENGTH:
        return f"the password must be at most {MAXIMUM_LENGTH} characters long"
    folded = _folded(password)
    compact = folded.replace(" ", "")
    common = common_passwords()
    if folded in common or compact in common or _TRAILING_DECORATION.sub("", compact) in common:
        return "the password is too common: it appears on lists of passwords attackers try first"
    if len(set(compact)) < 4:
        return "the password repeats too few different characters"
    local_part = _folded(email.partition("@")[0])
    if len(local_part) >= _SHORTEST_PERSONAL_PART and local_part in folded:
        return "the password must not contain your e-mail address"
    for name in names:
        for part in _folded(name).split():
            if len(part) >= _SHORTEST_PERSONAL_PART and part in folded:
                return "the password must not contain your name"
    return None
