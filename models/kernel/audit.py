"""The audit log: one append-only `AuditEvent` per access to patient data, and per security event.

HIPAA 45 CFR 164.312(b) (audit controls). Rows map 1:1 to FHIR `AuditEvent`. The table refuses
UPDATE and DELETE at the database level (triggers in the migration), so not even a bug in this
code can rewrite history.

Reads are collected during a request in an `AuditTrail` and written in one statement before the
response leaves (one row per patient touched, not per row read); writes record their event in
the same transaction as the change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar
from uuid import UUID, uuid4

from tortoise import fields
from tortoise.models import Model

from models.kernel.errors import DomainError


class Actor(Protocol):
    """Who did it, as the trail records them: `models.identity.access.Viewer` (which holds a trail, so this
    module cannot import it)."""

    @property
    def id(self) -> UUID: ...
    @property
    def label(self) -> str: ...
    @property
    def audit(self) -> AuditTrail: ...
    @property
    def is_api_client(self) -> bool: ...
    @property
    def role_name(self) -> str: ...


class AuditAction(StrEnum):
    """FHIR AuditEvent.action: Create, Read, Update, Delete, Execute."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class AuditOutcome(StrEnum):
    SUCCESS = "SUCCESS"
    DENIED = "DENIED"
    FAILED = "FAILED"


class ActorType(StrEnum):
    USER = "USER"
    API_CLIENT = "API_CLIENT"
    ANONYMOUS = "ANONYMOUS"
    SYSTEM = "SYSTEM"


class AuditEvent(Model):
    id = fields.UUIDField(primary_key=True)
    occurred_at = fields.DatetimeField(db_index=True)
    actor_type = fields.CharEnumField(ActorType, max_length=16)
    actor_id = fields.UUIDField(null=True)
    actor_role = fields.CharField(max_length=16, null=True)
    actor_label = fields.CharField(max_length=254, null=True)
    patient_id = fields.UUIDField(null=True, db_index=True)
    action = fields.CharEnumField(AuditAction, max_length=1)
    resource_type = fields.CharField(max_length=64)
    resource_id = fields.CharField(max_length=64, null=True)
    operation = fields.CharField(max_length=100, null=True)
    outcome = fields.CharEnumField(AuditOutcome, max_length=16)
    detail = fields.CharField(max_length=200, null=True)
    client_address = fields.CharField(max_length=64, null=True)
    request_id = fields.CharField(max_length=64, null=True)

    class Meta:
        table = "audit_event"
        indexes = (("patient_id", "occurred_at"),)


@dataclass(frozen=True)
class AuditEntry:
    action: AuditAction
    resource_type: str
    outcome: AuditOutcome
    patient_id: UUID | None = None
    resource_id: str | None = None
    detail: str | None = None


@dataclass
class AuditTrail:
    """The audit entries of one request, written together before the response is sent."""

    request_id: str | None = None
    client_address: str | None = None
    operation: str | None = None
    pending: dict[AuditEntry, None] = field(default_factory=dict)  # ordered, without repeats

    def add(self, entry: AuditEntry) -> None:
        # A list read touching a patient many times is one access to that patient.
        self.pending.setdefault(entry)

    def row(self, viewer: Actor | None, entry: AuditEntry, now: datetime) -> dict[str, Any]:
        """The audit_event row of `entry` in this request, by field name."""
        return {
            "id": uuid4(),
            "occurred_at": now,
            "actor_type": _actor_type(viewer),
            "actor_id": viewer.id if viewer else None,
            "actor_role": viewer.role_name if viewer else None,
            "actor_label": viewer.label if viewer else None,
            "patient_id": entry.patient_id,
            "action": entry.action,
            "resource_type": entry.resource_type,
            "resource_id": entry.resource_id,
            "operation": (self.operation or "")[:100] or None,
            "outcome": entry.outcome,
            "detail": entry.detail,
            "client_address": self.client_address,
            "request_id": self.request_id,
        }

    async def flush(self, viewer: Actor | None, now: datetime) -> None:
        """Write the pending entries in one statement (call inside the caller's transaction, if any)."""
        if not self.pending:
            return
        entries, self.pending = list(self.pending), {}
        await write_rows([self.row(viewer, entry, now) for entry in entries])


async def write_rows(rows: list[dict[str, Any]]) -> None:
    """Insert audit_event rows in one statement, as rows: every request writes some, and making a
    model instance of each cost more than the insert (issue #18). Each value goes through its
    field's conversion and checks (lengths, enum members) as a model's save would."""
    db = AuditEvent._choose_db(True)
    executor = db.executor_class(model=AuditEvent, db=db)
    fields_map = AuditEvent._meta.fields_map
    columns = executor.regular_columns_all
    values = [[fields_map[name].to_db_value(row[name], AuditEvent) for name in columns] for row in rows]
    await db.execute_many(executor.insert_query_all, values)


Refusal = TypeVar("Refusal", bound=DomainError)


def denied(
    viewer: Actor,
    refusal: Refusal,
    action: AuditAction,
    resource_type: str,
    *,
    patient_id: UUID | None = None,
    resource_id: UUID | str | None = None,
) -> Refusal:
    """`refusal`, once a DENIED entry for it is in the viewer's trail: every refused access,
    read or write, is audited (written with the request's other entries, when it ends), against
    the patient it concerned when there is one. What the caller is told does not change."""
    viewer.audit.add(
        AuditEntry(
            action,
            resource_type,
            AuditOutcome.DENIED,
            patient_id=patient_id,
            resource_id=str(resource_id) if resource_id is not None else None,
            detail=refusal.message[:200],
        )
    )
    return refusal


def audit_patient_read(viewer: Actor, patient_id: UUID, resource_type: str = "Patient") -> None:
    """A successful read of `patient_id`'s record, in the viewer's trail (written when the request ends)."""
    viewer.audit.add(
        AuditEntry(AuditAction.READ, resource_type, AuditOutcome.SUCCESS, patient_id=patient_id, resource_id=None)
    )


def _actor_type(viewer: Actor | None) -> ActorType:
    if viewer is None:
        return ActorType.ANONYMOUS
    return ActorType.API_CLIENT if viewer.is_api_client else ActorType.USER


async def record_system(entry: AuditEntry, *, now: datetime) -> None:
    """Write one event done by the service itself (a job, an automatic hold)."""
    await write_rows([{**AuditTrail().row(None, entry, now), "actor_type": ActorType.SYSTEM}])


async def record_now(
    viewer: Actor | None, entry: AuditEntry, *, now: datetime, trail: AuditTrail | None = None
) -> None:
    """Write one event at once (security events, and writes inside their own transaction)."""
    await write_rows([(trail or AuditTrail()).row(viewer, entry, now)])


async def record_all_now(viewer: Actor, entries: list[AuditEntry], *, now: datetime, trail: AuditTrail) -> None:
    """`record_now` for several events of one write, in one statement (inside its transaction)."""
    await write_rows([trail.row(viewer, entry, now) for entry in entries])
