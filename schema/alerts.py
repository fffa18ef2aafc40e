"""Alerts in the API: a care team's queue, most urgent first, and its triage (`acknowledgeAlert`,
`resolveAlert`), CLINICAL.md §9; an alert raised by the safety screen shows what was sent (§0)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info

from models.alerts import alerts as alert_ops
from models.alerts.alert_rules import Severity as DomainSeverity
from models.alerts.alerts import AlertStatus as DomainAlertStatus
from models.identity import directory
from models.safety import screen as screening
from schema.accounts import PatientType
from schema.context import Context
from schema.errors import Conflict, NotFound, ValidationError
from schema.ids import node_id
from schema.loaders import loader
from schema.mutations import payload
from schema.pagination import Connection, Listing, each, moment, paginate
from schema.permissions import viewer_of

AlertSeverity = strawberry.enum(DomainSeverity, name="AlertSeverity")
AlertStatus = strawberry.enum(DomainAlertStatus, name="AlertStatus")


@strawberry.type(name="Alert")
class AlertType(relay.Node):
    id: relay.NodeID[str]
    kind: str
    severity: AlertSeverity  # type: ignore[valid-type]
    status: AlertStatus  # type: ignore[valid-type]
    summary: str
    source_type: str
    created_at: datetime
    respond_by: datetime
    acknowledged_at: datetime | None
    acknowledgement_note: str
    resolved_at: datetime | None
    resolution_note: str
    escalation_level: int
    patient_id: strawberry.Private[uuid.UUID]
    source_id: strawberry.Private[uuid.UUID | None] = None

    @classmethod
    def from_model(cls, alert: alert_ops.Alert) -> AlertType:
        return cls(
            id=str(alert.id),
            kind=alert.kind.value,
            severity=alert.severity,
            status=alert.status,
            summary=alert.summary,
            source_type=alert.source_type,
            created_at=alert.raised_at,
            respond_by=alert.respond_by,
            acknowledged_at=alert.acknowledged_at,
            acknowledgement_note=alert.acknowledgement_note,
            resolved_at=alert.resolved_at,
            resolution_note=alert.resolution_note,
            escalation_level=alert.escalation_level,
            patient_id=alert.patient_id,  # type: ignore[attr-defined]
            source_id=alert.source_id if alert.source_type == screening.SOURCE_TYPE else None,
        )

    @strawberry.field(
        description="For an alert raised by the safety screen (sourceType SafetyScreening): what the patient "
        "sent, kept even when the request was refused (CLINICAL.md section 0): the operation, its safety content, "
        "the record it became (recordType) or why it was refused (refusal)."
    )
    async def screened_content(self, info: Info[Context, None]) -> JSON | None:
        if self.source_id is None:
            return None
        found = await loader(info, "screenings", screening.screened_contents).load(self.source_id)
        return found  # type: ignore[return-value]

    @strawberry.field
    async def patient(self, info: Info[Context, None]) -> PatientType | None:
        patient = await loader(info, "patients", directory.get_patients).load(self.patient_id)
        return PatientType.from_model(patient) if patient else None


# The queue's order: severity, then the earliest deadline, then the id.
_ALERTS: Listing[alert_ops.Alert, alert_ops.AlertCursor] = Listing(
    "alerts",
    (int, moment, uuid.UUID),
    alert_ops.AlertCursor,
    lambda alert: [str(alert.severity_rank), alert.respond_by.isoformat(), str(alert.id)],
)


@strawberry.input
class AlertActionInput:
    alert_id: strawberry.ID
    note: str | None = None


AlertResult = Annotated[AlertType | ValidationError | NotFound | Conflict, strawberry.union("AlertResult")]


@strawberry.type
class AlertPayload:
    result: AlertResult


@strawberry.type
class AlertQuery:
    @strawberry.field(description="Your care teams' alerts, most urgent first (providers).")
    async def alerts(
        self,
        info: Info[Context, None],
        status: list[AlertStatus] | None = None,  # type: ignore[valid-type]
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[AlertType]:
        async def fetch(limit: int, position: alert_ops.AlertCursor | None) -> list[alert_ops.Alert]:
            return await alert_ops.list_alerts(viewer_of(info), statuses=status, limit=limit, after=position)

        return await paginate(info.context, _ALERTS, first, after, fetch, each(AlertType.from_model))


# acknowledge_alert or resolve_alert: (viewer, alert id, note, *, now) -> the alert.
Triage = Callable[..., Awaitable[alert_ops.Alert]]


@strawberry.type
class AlertMutation:
    @strawberry.mutation(description="Take an alert (providers of the patient's care team).")
    async def acknowledge_alert(self, info: Info[Context, None], input: AlertActionInput) -> AlertPayload:
        return await _triage(info, input, alert_ops.acknowledge_alert)

    @strawberry.mutation(description="Close an alert, saying how (providers of the patient's care team).")
    async def resolve_alert(self, info: Info[Context, None], input: AlertActionInput) -> AlertPayload:
        return await _triage(info, input, alert_ops.resolve_alert)


async def _triage(info: Info[Context, None], input: AlertActionInput, operation: Triage) -> AlertPayload:
    async def call() -> alert_ops.Alert:
        alert_id = node_id(input.alert_id, "Alert", "alertId")
        return await operation(viewer_of(info), alert_id, input.note, now=info.context.now())

    return await payload(AlertPayload, call, AlertType.from_model)
