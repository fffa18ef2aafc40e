"""The EHR change feed (PRODUCT.md capability 10, ARCHITECTURE.md decision 2).

The feed is the domain-event outbox read in commit order, each event rendered as the FHIR
resources of its record (a dosing session is a MedicationAdministration and the Observations of
its readings: blood pressure, heart rate, SpO2; a plan a CarePlan and a MedicationRequest), by the
mappers the FHIR registry lists (`models.ehr.fhir.registry.RECORDS`).

Commit order, not insert order: on PostgreSQL a transaction that took `seq` 7 can commit after
one that took `seq` 8, so a reader who has seen 8 and resumes "after 8" would skip 7 for ever.
Each event therefore carries the id of the transaction that wrote it (a trigger fills it), the
feed is ordered by (transaction id, seq), and only events of transactions older than every
transaction still running are served: whatever commits later has a larger transaction id and
sorts after any cursor already handed out. On SQLite writers are serialized, so `seq` order is
commit order and the transaction id is not needed.

The feed is compacted per record: a record appears once, at its latest version (an older event
of a record that has changed since is passed over). A client that applies each change as an
upsert keyed by (resourceType, id) ends with exactly our current state.

Visibility is the client's: its scopes (`changes:read` to read the feed, `patients:read` for
Patient and Consent, `clinical:read` for the clinical record), its care teams, and the patient's consent,
evaluated when the page is read. A revoked consent is itself a change (a Consent, `inactive`),
and the patient's later changes are no longer served.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.connection import get_connection
from tortoise.transactions import in_transaction

from models.ehr.fhir.registry import RECORDS, RECORDS_BY_EVENT_TYPE
from models.identity.access import Scope, Viewer
from models.kernel.audit import AuditAction, audit_patient_read, denied
from models.kernel.errors import Forbidden
from models.kernel.events import DomainEvent, Operation

# The records that reach the feed, and the FHIR resource types each becomes (the first: the one a
# deleted record's tombstone names).
SOURCES: dict[str, tuple[str, ...]] = {records.event_type: records.resource_types for records in RECORDS}
FEED_RESOURCE_TYPES = tuple(sorted({kind for kinds in SOURCES.values() for kind in kinds}))
ALL_PARTS = 1 << 15  # a position past every resource of an event
MAX_EVENTS_SCANNED = 5_000  # per page, so a page filtered down to little stays quick


@dataclass(frozen=True, order=True)
class FeedPosition:
    """Where a client is: the last change it received (`part` of the event `seq` written by
    transaction `xid`; `xid` is 0 on SQLite)."""

    xid: int
    seq: int
    part: int


START = FeedPosition(-1, 0, ALL_PARTS)


@dataclass(frozen=True)
class Change:
    position: FeedPosition
    sequence: int
    resource_type: str
    resource_id: str
    action: Operation
    version: int
    occurred_at: datetime
    resource: dict[str, Any] | None
    patient_id: UUID | None


@dataclass(frozen=True, slots=True)
class _Event:
    """What the feed needs of a domain event (its payload is not read: the resource is rendered
    from the record as it is now)."""

    seq: int
    xid: int
    resource_type: str
    resource_id: UUID
    operation: Operation
    version: int
    occurred_at: datetime
    patient_id: UUID | None


@dataclass(frozen=True)
class ChangePage:
    changes: list[Change]
    has_next_page: bool
    end: FeedPosition | None  # resume from here (also past events the client may not see)


def _sources_for(viewer: Viewer, resource_types: frozenset[str] | None) -> list[str]:
    """The event types this client may read, narrowed to the FHIR types it asked for. A Consent
    names its patient: without `patients:read` a client sees no patient, consents included."""
    allowed = set()
    if viewer.has_scope(Scope.PATIENTS_READ):
        allowed |= {"Patient", "Consent"}
    if viewer.has_scope(Scope.CLINICAL_READ) and viewer.has_scope(Scope.PATIENTS_READ):
        allowed |= set(SOURCES) - {"Patient", "Consent"}
    return sorted(source for source in allowed if resource_types is None or resource_types & set(SOURCES[source]))


async def read_changes(
    viewer: Viewer, *, after: FeedPosition | None, first: int, resource_types: frozenset[str] | None = None
) -> ChangePage:
    """The changes after `after` that the client may see, oldest first, at most `first`.

    Every patient whose records are on the page is audited (one read each)."""
    if not viewer.has_scope(Scope.CHANGES_READ):
        refusal = Forbidden("the change feed is for EHR clients with the changes:read scope")
        raise denied(viewer, refusal, AuditAction.READ, "Change")
    sources = _sources_for(viewer, resource_types)
    position = after or START
    collected: list[Change] = []
    scanned = 0
    async with _consistent_snapshot() as connection:
        query = _EventQuery(connection, viewer, sources, await _horizon(connection))
        while len(collected) <= first and scanned < MAX_EVENTS_SCANNED and sources:
            # Enough events for the rest of the page and one change more (to know there is a next
            # page), plus the event at `position`: the query starts at it (`>=`, a client may stop
            # between the resources of an event) and it brings nothing new when it was read whole.
            # Asking one too few made almost every page read, render and drop a second batch.
            limit = first + 1 - len(collected) + 1
            events = await query.after(position, limit=limit)
            if not events:
                break
            scanned += len(events)
            rendered = await _render(events)
            for event in events:
                for part, (resource_type, resource_id, resource) in enumerate(rendered[event.seq]):
                    here = FeedPosition(event.xid, event.seq, part)
                    if here <= position or (resource_types is not None and resource_type not in resource_types):
                        continue
                    collected.append(_change(event, here, resource_type, resource_id, resource))
                position = max(position, FeedPosition(event.xid, event.seq, ALL_PARTS))
            if len(events) < limit:  # the query returned all there is
                break
    page = collected[:first]
    for patient_id in sorted({change.patient_id for change in page if change.patient_id is not None}):
        audit_patient_read(viewer, patient_id, "Change")
    if len(collected) > first:
        return ChangePage(page, True, page[-1].position)
    more = scanned >= MAX_EVENTS_SCANNED
    return ChangePage(page, more, position if position != START else after)


def _change(
    event: _Event, here: FeedPosition, resource_type: str, resource_id: str, resource: dict[str, Any] | None
) -> Change:
    action = Operation.DELETED if resource is None else event.operation
    return Change(
        here,
        event.seq,
        resource_type,
        resource_id,
        action,
        event.version,
        event.occurred_at,
        resource,
        event.patient_id,
    )


@asynccontextmanager
async def _consistent_snapshot() -> AsyncIterator[BaseDBAsyncClient]:
    """On PostgreSQL, one read-only REPEATABLE READ transaction: the horizon, the events and the
    records of a page come from one snapshot. SQLite reads outside a transaction (a transaction
    there would take the write lock); its single writer keeps `seq` order safe anyway."""
    connection = get_connection("default")
    if connection.capabilities.dialect != "postgres":
        yield connection
        return
    async with in_transaction() as transaction:
        await transaction.execute_script("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield transaction


async def _horizon(connection: BaseDBAsyncClient) -> int | None:
    """The oldest transaction id still running: every event below it is final (PostgreSQL)."""
    if connection.capabilities.dialect != "postgres":
        return None
    _, rows = await connection.execute_query("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    return int(rows[0][0])


class _EventQuery:
    """The next visible, latest-version events after a position, in commit order."""

    def __init__(self, connection: BaseDBAsyncClient, viewer: Viewer, sources: list[str], horizon: int | None):
        self.connection = connection
        self.postgres = horizon is not None
        self.viewer = viewer
        self.sources = sources
        self.horizon = horizon
        self.values: list[Any] = []

    def _value(self, value: Any) -> str:
        if isinstance(value, UUID) and not self.postgres:
            value = str(value)
        self.values.append(value)
        return f"${len(self.values)}" if self.postgres else "?"

    async def after(self, position: FeedPosition, *, limit: int) -> list[_Event]:
        self.values = []
        kinds = ", ".join(self._value(source) for source in self.sources)
        if self.postgres:
            order = "e.xid, e.seq"
            start = f"(e.xid, e.seq) >= ({self._value(position.xid)}, {self._value(position.seq)})"
            start += f" AND e.xid < {self._value(self.horizon)}"
        else:
            order = "e.seq"
            start = f"e.seq >= {self._value(position.seq)}"
        # SQLite would otherwise pick an index on a filtered column and sort every later event of the
        # feed for each page; a unary plus keeps it on the primary key's order, reading only as far
        # as the page needs (PostgreSQL walks its (xid, seq) index and has no such operator on text).
        plus = "" if self.postgres else "+"
        kind_column = f"{plus}e.resource_type"
        client = self._value(self.viewer.id)
        teams = ", ".join(self._value(team) for team in sorted(self.viewer.care_team_ids)) or "NULL"
        own_consents = self._value(self.viewer.id)
        # Only placeholders and fixed SQL are interpolated: every value is a bound parameter.
        sql = (
            f"SELECT e.seq, {'e.xid' if self.postgres else '0'}, {_EVENT_COLUMNS} FROM domain_event e "  # noqa: S608
            f"WHERE {kind_column} IN ({kinds}) AND {start} "
            f"AND ((e.resource_type <> 'Consent' AND {plus}e.patient_id IN ("
            "  SELECT c.patient_id FROM data_sharing_consent c JOIN patient p ON p.id = c.patient_id"
            f"  WHERE c.api_client_id = {client} AND c.revoked_at IS NULL AND p.care_team_id IN ({teams})))"
            f" OR (e.resource_type = 'Consent' AND {plus}e.resource_id IN ("
            f"  SELECT d.id FROM data_sharing_consent d WHERE d.api_client_id = {own_consents}))) "
            "AND NOT EXISTS (SELECT 1 FROM domain_event later WHERE later.resource_type = e.resource_type"
            "  AND later.resource_id = e.resource_id"
            "  AND (later.version > e.version OR (later.version = e.version AND later.seq > e.seq))) "
            f"ORDER BY {order} LIMIT {self._value(limit)}"
        )
        _, rows = await self.connection.execute_query(sql, self.values)
        return [_event(row) for row in rows]


# The columns of `_Event` after seq and xid, read with the feed query itself, each converted as the
# model's field converts it (SQLite returns UUIDs and timestamps as text).
_EVENT_FIELDS = [DomainEvent._meta.fields_map[column.name] for column in fields(_Event)[2:]]
_EVENT_COLUMNS = ", ".join(f"e.{field.source_field or field.model_field_name}" for field in _EVENT_FIELDS)


def _event(row: Any) -> _Event:
    values = [field.to_python_value(value) for field, value in zip(_EVENT_FIELDS, list(row)[2:], strict=True)]
    return _Event(int(row[0]), int(row[1]), *values)


Rendered = list[tuple[str, str, dict[str, Any] | None]]


async def _render(events: list[_Event]) -> dict[int, Rendered]:
    """Each event's resources as FHIR, from the records as they are now (one query per kind of
    record on the page). A record that no longer exists is a tombstone."""
    ids: dict[str, list[UUID]] = defaultdict(list)
    for event in events:
        ids[event.resource_type].append(event.resource_id)
    resources: dict[tuple[str, UUID], Rendered] = {}
    for kind, record_ids in ids.items():
        for record_id, rendered in (await RECORDS_BY_EVENT_TYPE[kind].by_ids(record_ids)).items():
            resources[(kind, record_id)] = [
                (resource["resourceType"], str(resource["id"]), resource) for resource in rendered
            ]
    result: dict[int, Rendered] = {}
    for event in events:
        found = resources.get((event.resource_type, event.resource_id))
        primary = SOURCES[event.resource_type][0]
        result[event.seq] = found if found else [(primary, str(event.resource_id), None)]
    return result
