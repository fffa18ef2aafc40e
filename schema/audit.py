"""The audit log in the API: `auditEvents(patientId, first, after)`, newest first. Read-only."""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry
from strawberry.types import Info

from models.kernel import audit, audit_log
from schema.context import Context
from schema.errors import BadUserInput
from schema.ids import global_id, node_uuid
from schema.pagination import Connection, Listing, each, paginate
from schema.permissions import viewer_of

# Newest first; a cursor is an event's time and id.
_EVENTS: Listing[audit.AuditEvent, audit_log.AuditCursor] = Listing(
    "audit",
    (datetime.fromisoformat, uuid.UUID),
    audit_log.AuditCursor,
    lambda event: [event.occurred_at.isoformat(), str(event.id)],
)


@strawberry.type(name="AuditEvent")
class AuditEventType:
    id: strawberry.ID
    occurred_at: datetime
    actor_type: str
    actor_role: str | None
    actor: str | None = strawberry.field(description="E-mail of the user or id of the client who acted.")
    patient_id: strawberry.ID | None
    action: str = strawberry.field(description="C, R, U, D or E (FHIR AuditEvent.action).")
    resource_type: str
    resource_id: str | None
    operation: str | None
    outcome: str
    detail: str | None
    client_address: str | None
    request_id: str | None

    @classmethod
    def from_model(cls, event: audit.AuditEvent) -> AuditEventType:
        return cls(
            id=strawberry.ID(str(event.id)),
            occurred_at=event.occurred_at,
            actor_type=event.actor_type.value,
            actor_role=event.actor_role,
            actor=event.actor_label,
            patient_id=strawberry.ID(global_id("Patient", event.patient_id)) if event.patient_id else None,
            action=event.action.value,
            resource_type=event.resource_type,
            resource_id=event.resource_id,
            operation=event.operation,
            outcome=event.outcome.value,
            detail=event.detail,
            client_address=event.client_address,
            request_id=event.request_id,
        )


@strawberry.type
class AuditQuery:
    @strawberry.field(description="Who did what to which record: admins all, a patient their own record.")
    async def audit_events(
        self,
        info: Info[Context, None],
        patient_id: strawberry.ID | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[AuditEventType]:
        viewer = viewer_of(info)
        patient = None
        if patient_id is not None:
            patient = node_uuid(patient_id, "Patient")
            if patient is None:
                raise BadUserInput("patientId is not a patient id")

        async def fetch(limit: int, position: audit_log.AuditCursor | None) -> list[audit.AuditEvent]:
            return await audit_log.list_audit_events(viewer, patient_id=patient, limit=limit, after=position)

        return await paginate(info.context, _EVENTS, first, after, fetch, each(AuditEventType.from_model))
