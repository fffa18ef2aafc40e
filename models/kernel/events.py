"""The transactional outbox (ARCHITECTURE.md decision 2).

Every write that others must hear about appends a `DomainEvent` in the same transaction. The
`seq` order feeds the EHR change feed, subscriptions and notifications; a reader never sees an
event before its transaction commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from tortoise import fields
from tortoise.models import Model

from models.kernel.audit import Actor, AuditAction, AuditEntry, AuditOutcome, record_all_now, record_now


class Operation(StrEnum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"


class DomainEvent(Model):
    seq = fields.BigIntField(primary_key=True, generated=True)
    type = fields.CharField(max_length=64)
    resource_type = fields.CharField(max_length=64)
    resource_id = fields.UUIDField()
    patient_id = fields.UUIDField(null=True, db_index=True)
    operation = fields.CharEnumField(Operation, max_length=8)
    version = fields.IntField()
    occurred_at = fields.DatetimeField()
    payload: dict[str, Any] = fields.JSONField(default=dict)
    # The writing transaction's id, set by a database trigger on PostgreSQL (NULL on SQLite, where
    # writers are serialized and `seq` order is commit order). See models.ehr.changes.
    xid = fields.BigIntField(null=True)

    class Meta:
        table = "domain_event"
        indexes = (("resource_type", "resource_id"),)


async def record_event(
    event_type: str,
    *,
    resource_type: str,
    resource_id: UUID,
    operation: Operation,
    version: int,
    now: datetime,
    patient_id: UUID | None = None,
    payload: dict[str, Any] | None = None,
) -> DomainEvent:
    """Append an event; call it inside the transaction of the write it describes."""
    return await DomainEvent.create(
        type=event_type,
        resource_type=resource_type,
        resource_id=resource_id,
        patient_id=patient_id,
        operation=operation,
        version=version,
        occurred_at=now,
        payload=payload or {},
    )


async def record_created(
    viewer: Actor,
    resource_type: str,
    resource_id: UUID,
    patient_id: UUID,
    *,
    now: datetime,
    payload: dict[str, Any] | None = None,
    returned: bool = False,
) -> None:
    """A new record's event (`<resource_type>.created`, version 1) and its audit entry, written
    together inside the transaction that creates it. `returned`: the record goes back to the
    viewer in the answer without being read again, and the READ entry that read would have
    added to the trail is written here, in the same INSERT as the CREATE one (the caller then
    does not audit the read again)."""
    await record_event(
        f"{resource_type}.created", resource_type=resource_type, resource_id=resource_id,
        operation=Operation.CREATED, version=1, now=now, patient_id=patient_id, payload=payload,
    )  # fmt: skip
    entry = AuditEntry(AuditAction.CREATE, resource_type, AuditOutcome.SUCCESS, patient_id, str(resource_id))
    if not returned:
        await record_now(viewer, entry, now=now, trail=viewer.audit)
        return
    read = AuditEntry(AuditAction.READ, resource_type, AuditOutcome.SUCCESS, patient_id)
    await record_all_now(viewer, [entry, read], now=now, trail=viewer.audit)


# How far back a subscription's `since` may reach (docs/api.md, "Messages and live updates"). The outbox keeps every
# event; the window bounds what one reconnection may ask the database to replay.
REPLAY_WINDOW = timedelta(days=7)
REPLAY_BATCH = 200
# An event's time is taken when its request starts, its `seq` when it commits: an event can commit
# after one with a later time (two requests at once, on two replicas). A client that saw the later
# one and resumes with its time would never get the earlier one; so a replay starts this long
# before `since` (more than a request may last, and the clock skew between replicas), and clients
# drop what they already have by id (delivery is at least once).
REPLAY_OVERLAP = timedelta(minutes=1)


async def events_since(
    event_type: str, since: datetime, *, patient_id: UUID | None = None
) -> AsyncIterator[DomainEvent]:
    """The committed events of a type that occurred at or after `since` (less REPLAY_OVERLAP), in
    `seq` order, read in batches (a subscription replays them before its live events). Visibility
    is the caller's."""
    after = 0
    since -= REPLAY_OVERLAP
    while True:
        query = DomainEvent.filter(type=event_type, occurred_at__gte=since, seq__gt=after)
        if patient_id is not None:
            query = query.filter(patient_id=patient_id)
        batch = list(await query.order_by("seq").limit(REPLAY_BATCH))
        for event in batch:
            yield event
        if len(batch) < REPLAY_BATCH:
            return
        after = batch[-1].seq


class DispatchCursor(Model):
    """How far the shared dispatcher has published events (api.bus, Redis mode)."""

    name = fields.CharField(max_length=32, primary_key=True)
    last_seq = fields.BigIntField()

    class Meta:
        table = "dispatch_cursor"


@dataclass(frozen=True)
class BusEvent:
    """A committed `DomainEvent` as subscribers receive it (published after commit, in order)."""

    seq: int
    type: str
    resource_type: str
    resource_id: UUID
    patient_id: UUID | None
    payload: dict[str, Any]

    @classmethod
    def of(cls, event: DomainEvent) -> BusEvent:
        return cls(event.seq, event.type, event.resource_type, event.resource_id, event.patient_id, dict(event.payload))

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "type": self.type,
            "resourceType": self.resource_type,
            "resourceId": str(self.resource_id),
            "patientId": str(self.patient_id) if self.patient_id else None,
            "payload": self.payload,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BusEvent:
        patient = data.get("patientId")
        return cls(
            int(data["seq"]),
            str(data["type"]),
            str(data["resourceType"]),
            UUID(str(data["resourceId"])),
            UUID(str(patient)) if patient else None,
            dict(data.get("payload") or {}),
        )


class EventBus(Protocol):
    """Where committed events go for live subscribers (api.bus has the implementations)."""

    async def publish(self, event: BusEvent) -> None: ...

    def subscribe(self) -> AbstractAsyncContextManager[AsyncIterator[BusEvent]]: ...
