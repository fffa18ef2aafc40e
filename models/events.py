"""The transactional outbox (ARCHITECTURE.md decision 2).

Every write that others must hear about appends a `DomainEvent` in the same transaction. The
`seq` order feeds the EHR change feed, subscriptions and notifications; a reader never sees an
event before its transaction commits.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from tortoise import fields
from tortoise.models import Model


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
