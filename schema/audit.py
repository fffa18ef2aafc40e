"""The audit log in the API: `auditEvents(patientId, first, after)`, newest first. Read-only."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.kernel import audit, audit_log
from schema.accounts import node_uuid, parse_uuid
from schema.context import Context
from schema.errors import BadUserInput, refusals_as_errors
from schema.pagination import Connection, page_size
from schema.permissions import viewer_of

_CURSOR = "audit"


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
            patient_id=strawberry.ID(str(relay.GlobalID("Patient", str(event.patient_id))))
            if event.patient_id
            else None,
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
        limit = page_size(first, info.context.max_page_size)
        patient = None
        if patient_id is not None:
            patient = node_uuid(info, patient_id, "Patient")
            if patient is None:
                raise BadUserInput("patientId is not a patient id")
        position = None
        if after is not None:
            occurred, raw_id = info.context.cursors.open(_CURSOR, after, 2)
            event_id = parse_uuid(raw_id)
            try:
                occurred_at = datetime.fromisoformat(occurred)
            except ValueError:
                event_id = None
            if event_id is None:
                raise BadUserInput("after is not a cursor this list issued")
            position = audit_log.AuditCursor(occurred_at, event_id)
        with refusals_as_errors():
            events = await audit_log.list_audit_events(viewer, patient_id=patient, limit=limit + 1, after=position)
        page = events[:limit]
        return Connection[AuditEventType].build(
            [AuditEventType.from_model(event) for event in page],
            [info.context.cursors.at(_CURSOR, [event.occurred_at.isoformat(), str(event.id)]) for event in page],
            has_next_page=len(events) > limit,
            after=after,
        )
