"""Free text as it is kept: the notes on check-ins, side effects, dosing sessions (at home and in
clinic) and alerts share one limit and one way of counting it.

The words are screened as sent (CLINICAL.md §0) before this decides anything; this only decides
what is stored. A note is kept without its surrounding whitespace and is measured as kept:
padding a phone or a form added is no reason to refuse a patient's or a clinician's note.
"""

from __future__ import annotations

from models.kernel.errors import InvalidInput

MAX_NOTE_LENGTH = 2000


def kept_note(text: str, field: str = "note") -> str:
    """`text` as it is stored, without surrounding whitespace; `InvalidInput(field, …)` when that
    is longer than `MAX_NOTE_LENGTH` characters."""
    kept = text.strip()
    if len(kept) > MAX_NOTE_LENGTH:
        raise InvalidInput(field, f"{field} must be at most {MAX_NOTE_LENGTH} characters")
    return kept
