"""After the load: what the server acknowledged is in the database, once, and reached the EHR
client's copy, once.

The database is read through its own driver (sqlite3, asyncpg), not through the app, so a fault
in the app's read path cannot hide one in its write path.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass, field

import asyncpg

from bench.load.traffic import FeedCopy, Ledger

# Which rows the load wrote (the seed writes neither wording), and the table of every record kind.
QUERIES = {
    "check-ins": "SELECT id FROM check_in WHERE note LIKE 'load check-in %'",
    "messages": "SELECT id FROM message WHERE body LIKE 'load message %'",
    "survey responses": "SELECT id FROM survey_response",
}
# The FHIR resource each acknowledged record must reach the EHR client as (same id).
FEED_TYPES = {"check-ins": "Observation", "survey responses": "QuestionnaireResponse", "messages": "Communication"}


async def stored_ids(database_url: str) -> dict[str, set[str]]:
    """Ids of the rows of each kind, straight from the database."""
    rows: dict[str, set[str]] = {}
    if database_url.startswith("sqlite://"):
        with sqlite3.connect(database_url.removeprefix("sqlite://")) as connection:
            for kind, sql in QUERIES.items():
                rows[kind] = {str(uuid.UUID(str(value))) for (value,) in connection.execute(sql)}
        return rows
    connection = await asyncpg.connect(database_url)
    try:
        for kind, sql in QUERIES.items():
            rows[kind] = {str(record["id"]) for record in await connection.fetch(sql)}
    finally:
        await connection.close()
    return rows


def acknowledged(ledger: Ledger) -> dict[str, dict[str, str]]:
    return {"check-ins": ledger.check_ins, "messages": ledger.messages, "survey responses": ledger.survey_responses}


def expected_in_feed(ledger: Ledger, sharing: set[str]) -> set[tuple[str, str]]:
    """The resources the EHR client must have received: every acknowledged record of a patient
    who shares with it."""
    return {
        (FEED_TYPES[kind], record)
        for kind, records in acknowledged(ledger).items()
        for record, email in records.items()
        if email in sharing
    }


@dataclass
class Verdict:
    lines: list[str] = field(default_factory=list)
    failed: bool = False

    def say(self, line: str, *, bad: bool = False) -> None:
        self.lines.append(("FAILED: " if bad else "ok: ") + line)
        self.failed = self.failed or bad


def judge(
    ledger: Ledger, before: dict[str, set[str]], after: dict[str, set[str]], copy: FeedCopy, sharing: set[str]
) -> Verdict:
    verdict = Verdict()
    for kind, records in acknowledged(ledger).items():
        written = after[kind] - before[kind]
        missing = set(records) - written
        unanswered = written - set(records)  # stored, but the client never heard back
        line = f"{kind}: {len(records)} acknowledged, {len(written)} rows written"
        if unanswered:
            line += f" ({len(unanswered)} of them without an answer to the client)"
        if missing:
            line += f"; {len(missing)} acknowledged but not stored, e.g. {sorted(missing)[:3]}"
        verdict.say(line, bad=bool(missing))
    resent = f"{ledger.resends} check-ins resent with the same key answered the first check-in"
    if ledger.resends_answered_otherwise:
        verdict.say(f"{resent}, except {len(ledger.resends_answered_otherwise)}", bad=True)
    else:
        verdict.say(f"{resent} (and wrote no row: counted above)")
    expected = expected_in_feed(ledger, sharing)
    missing_in_feed = expected - copy.received.keys()
    # These records never change after they are written: a second copy means a cursor served it twice.
    repeated = sorted(key for key in expected if copy.received[key] > 1)
    line = (
        f"EHR change feed: {copy.changes} changes in {copy.pages} pages; {len(expected)} acknowledged records of "
        f"the {len(sharing)} consenting patients, {len(expected) - len(missing_in_feed)} received"
    )
    if missing_in_feed:
        line += f"; missing e.g. {sorted(missing_in_feed)[:3]}"
    line += f"; {len(repeated)} received twice" + (f", e.g. {repeated[:3]}" if repeated else "")
    verdict.say(line, bad=bool(missing_in_feed or repeated))
    return verdict
