"""Alerts and triage: raise (once per rule and source), list by urgency, acknowledge, resolve,
escalate when the deadline passes (CLINICAL.md §9).

What raises an alert and how severe it is lives in `models.alerts.alert_rules`; this module stores
alerts and moves them through OPEN → ACKNOWLEDGED → RESOLVED.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models.alerts.alert_rules import AlertKind, AlertSpec, Severity, respond_by
from models.identity.access import Viewer
from models.identity.accounts import Patient, Provider, Role
from models.kernel.audit import (
    AuditAction,
    AuditEntry,
    AuditOutcome,
    audit_patient_read,
    denied,
    record_now,
    record_system,
)
from models.kernel.base import Entity
from models.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.kernel.events import Operation, record_event
from models.kernel.policy import ClinicPolicy
from models.kernel.text import MAX_NOTE_LENGTH, kept_note


class AlertStatus(StrEnum):
    OPEN = "OPEN"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RESOLVED = "RESOLVED"


class Alert(Entity):
    patient: fields.ForeignKeyRelation[Patient] = fields.ForeignKeyField(
        "ketafollow.Patient", related_name="alerts", on_delete=fields.RESTRICT
    )
    kind = fields.CharEnumField(AlertKind, max_length=40)
    severity = fields.CharEnumField(Severity, max_length=16)
    severity_rank = fields.IntField()
    status = fields.CharEnumField(AlertStatus, max_length=16, default=AlertStatus.OPEN)
    summary = fields.CharField(max_length=500)
    source_type = fields.CharField(max_length=64)
    source_id = fields.UUIDField(null=True)
    dedup_key = fields.CharField(max_length=300, db_index=True)
    raised_at = fields.DatetimeField()
    respond_by = fields.DatetimeField()
    acknowledged_at = fields.DatetimeField(null=True)
    acknowledged_by_id = fields.UUIDField(null=True)
    acknowledgement_note = fields.CharField(max_length=2000, default="")
    resolved_at = fields.DatetimeField(null=True)
    resolved_by_id = fields.UUIDField(null=True)
    resolution_note = fields.CharField(max_length=2000, default="")
    escalation_level = fields.IntField(default=0)
    escalated_at = fields.DatetimeField(null=True)
    version = fields.IntField(default=1)

    class Meta:
        table = "alert"
        indexes = (("status", "severity_rank", "respond_by"),)


class AlertEscalation(Entity):
    """Who an overdue alert was escalated to, and when (the record CLINICAL.md §9 asks for)."""

    alert: fields.ForeignKeyRelation[Alert] = fields.ForeignKeyField(
        "ketafollow.Alert", related_name="escalations", on_delete=fields.RESTRICT
    )
    level = fields.IntField()
    provider: fields.ForeignKeyNullableRelation[Provider] = fields.ForeignKeyField(
        "ketafollow.Provider", related_name="alert_escalations", null=True, on_delete=fields.RESTRICT
    )
    contact = fields.CharField(max_length=200, null=True)
    escalated_at = fields.DatetimeField()

    class Meta:
        table = "alert_escalation"


async def _alert_event(alert: Alert, event_type: str, operation: Operation, now: datetime) -> None:
    await record_event(
        event_type,
        resource_type="Alert",
        resource_id=alert.id,
        operation=operation,
        version=alert.version,
        now=now,
        patient_id=alert.patient_id,  # type: ignore[attr-defined]
        payload={"severity": alert.severity.value, "kind": alert.kind.value, "status": alert.status.value},
    )


async def raise_alert(
    spec: AlertSpec, *, patient: Patient, source_type: str, source_id: UUID | None, now: datetime,
    policy: ClinicPolicy,
) -> Alert:  # fmt: skip
    """Store `spec` for the care team (inside the caller's transaction).

    CLINICAL.md §9 duplicate suppression: the same rule for the same patient and source record
    raises one alert while that alert is open or acknowledged (a unique index backs this);
    once it is resolved, the same rule firing again is news and raises a new one.
    """
    dedup_key = f"{spec.kind.value}:{spec.rule}:{patient.id}:{source_type}:{source_id}"
    active = Alert.filter(dedup_key=dedup_key, status__in=[AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED])
    existing = await active.first()
    if existing is not None:
        return existing
    try:
        async with in_transaction():
            alert = await Alert.create(
                patient=patient,
                kind=spec.kind,
                severity=spec.severity,
                severity_rank=spec.severity.rank,
                summary=spec.summary[:500],
                source_type=source_type,
                source_id=source_id,
                dedup_key=dedup_key,
                raised_at=now,
                respond_by=respond_by(spec.severity, now, patient.time_zone, policy),
            )
    except IntegrityError:
        winner = await active.first()
        if winner is None:
            raise
        return winner
    await _alert_event(alert, "Alert.raised", Operation.CREATED, now)
    return alert


async def raise_alerts(
    specs: list[AlertSpec], *, patient: Patient, source_type: str, source_id: UUID | None, now: datetime,
    policy: ClinicPolicy,
) -> list[Alert]:  # fmt: skip
    return [
        await raise_alert(spec, patient=patient, source_type=source_type, source_id=source_id, now=now, policy=policy)
        for spec in specs
    ]


def _triage_scope(viewer: Viewer, action: AuditAction = AuditAction.READ) -> Q:
    """Alerts are the care team's work queue: providers see their care teams' patients' alerts."""
    if not viewer.is_role(Role.PROVIDER):
        raise denied(viewer, Forbidden("alerts are for the providers of the patient's care team"), action, "Alert")
    return Q(patient__care_team_id__in=list(viewer.care_team_ids))


@dataclass(frozen=True)
class AlertCursor:
    severity_rank: int
    respond_by: datetime
    id: UUID


async def list_alerts(
    viewer: Viewer, *, statuses: list[AlertStatus] | None, limit: int, after: AlertCursor | None = None
) -> list[Alert]:
    """The viewer's alert queue, most urgent first: severity, then the earliest deadline."""
    query = Alert.filter(_triage_scope(viewer))
    if statuses:
        query = query.filter(status__in=statuses)
    if after is not None:
        query = query.filter(
            Q(severity_rank__gt=after.severity_rank)
            | Q(severity_rank=after.severity_rank, respond_by__gt=after.respond_by)
            | Q(severity_rank=after.severity_rank, respond_by=after.respond_by, id__gt=after.id)
        )
    alerts = list(await query.order_by("severity_rank", "respond_by", "id").limit(limit))
    for alert in alerts:
        audit_patient_read(viewer, alert.patient_id, "Alert")  # type: ignore[attr-defined]
    return alerts


async def raised_alert(viewer: Viewer, alert_id: UUID) -> Alert | None:
    """The alert if it is in the viewer's triage scope (for the live feed: another team's alert is
    simply not delivered, nothing is audited for it; the caller audits what it delivers)."""
    return await Alert.filter(_triage_scope(viewer), id=alert_id).first()


async def _alert_for(viewer: Viewer, alert_id: UUID) -> Alert:
    """The alert, locked, if it is the viewer's care team's; one answer for an alert that does
    not exist and for another team's (audited either way, against its patient)."""
    alert = await Alert.filter(_triage_scope(viewer, AuditAction.UPDATE), id=alert_id).select_for_update().first()
    if alert is None:
        other = await Alert.get_or_none(id=alert_id).only("id", "patient_id")
        patient: UUID | None = other.patient_id if other else None  # type: ignore[attr-defined]
        raise denied(viewer, NotFound("alert"), AuditAction.UPDATE, "Alert", patient_id=patient, resource_id=alert_id)
    return alert


def _note(note: str | None, *, required: bool) -> str:
    cleaned = kept_note(note or "")
    if required and not cleaned:
        raise InvalidInput("note", "say how the alert was resolved")
    return cleaned


async def _triaged(viewer: Viewer, alert: Alert, what: str, now: datetime) -> None:
    await _alert_event(alert, f"Alert.{what}", Operation.UPDATED, now)
    patient_id: UUID = alert.patient_id  # type: ignore[attr-defined]
    entry = AuditEntry(AuditAction.UPDATE, "Alert", AuditOutcome.SUCCESS, patient_id, str(alert.id), what)
    await record_now(viewer, entry, now=now, trail=viewer.audit)


async def acknowledge_alert(viewer: Viewer, alert_id: UUID, note: str | None, *, now: datetime) -> Alert:
    """A provider of the care team takes the alert (acknowledging twice keeps the first)."""
    cleaned = _note(note, required=False)
    async with in_transaction():
        alert = await _alert_for(viewer, alert_id)
        if alert.status is AlertStatus.RESOLVED:
            raise Conflict("the alert is already resolved")
        if alert.status is AlertStatus.ACKNOWLEDGED:
            return alert
        alert.status = AlertStatus.ACKNOWLEDGED
        alert.acknowledged_at, alert.acknowledged_by_id, alert.acknowledgement_note = now, viewer.id, cleaned
        alert.version += 1
        await alert.save()
        await _triaged(viewer, alert, "acknowledged", now)
    return alert


async def resolve_alert(viewer: Viewer, alert_id: UUID, note: str | None, *, now: datetime) -> Alert:
    """A provider of the care team closes the alert, saying how (an open alert is acknowledged too)."""
    cleaned = _note(note, required=True)
    async with in_transaction():
        alert = await _alert_for(viewer, alert_id)
        if alert.status is AlertStatus.RESOLVED:
            raise Conflict("the alert is already resolved")
        if alert.acknowledged_at is None:
            alert.acknowledged_at, alert.acknowledged_by_id = now, viewer.id
        alert.status = AlertStatus.RESOLVED
        alert.resolved_at, alert.resolved_by_id, alert.resolution_note = now, viewer.id, cleaned
        alert.version += 1
        await alert.save()
        await _triaged(viewer, alert, "resolved", now)
    return alert


async def resolve_automatically(
    *, kind: AlertKind, source_type: str, source_id: UUID, note: str, now: datetime
) -> list[Alert]:
    """Close the OPEN alerts of `kind` about a record once their premise is gone (inside the
    caller's transaction), audited as the service. An acknowledged alert is left to the provider
    who took it: they may already be calling the patient, and close it themselves."""
    resolved = []
    for alert in await Alert.filter(
        kind=kind, source_type=source_type, source_id=source_id, status=AlertStatus.OPEN
    ).select_for_update():
        claimed = await Alert.filter(id=alert.id, status=AlertStatus.OPEN, version=alert.version).update(
            status=AlertStatus.RESOLVED, resolved_at=now, resolution_note=note[:MAX_NOTE_LENGTH],
            version=alert.version + 1, updated_at=now,
        )  # fmt: skip
        if claimed != 1:
            continue  # a provider acknowledged it meanwhile
        alert.status, alert.resolved_at, alert.resolution_note = AlertStatus.RESOLVED, now, note[:MAX_NOTE_LENGTH]
        alert.version += 1
        await _alert_event(alert, "Alert.resolved", Operation.UPDATED, now)
        patient_id: UUID = alert.patient_id  # type: ignore[attr-defined]
        entry = AuditEntry(AuditAction.UPDATE, "Alert", AuditOutcome.SUCCESS, patient_id, str(alert.id), "resolved")
        await record_system(entry, now=now)
        resolved.append(alert)
    return resolved


async def escalate_overdue_alerts(*, now: datetime, policy: ClinicPolicy) -> int:
    """Job: escalate alerts still OPEN past their deadline (CLINICAL.md §9). Returns how many.

    Level 1 (URGENT and HIGH): every provider of the patient's care team. Level 2 (URGENT only,
    one more deadline later): the clinic's on-call contact. Each escalation is claimed with a
    conditional update, so replicas running this job at once escalate an alert once.
    """
    escalated = 0
    due = await Alert.filter(
        status=AlertStatus.OPEN,
        respond_by__lte=now,
        escalation_level=0,
        severity__in=[Severity.URGENT, Severity.HIGH],
    ).prefetch_related("patient")
    for alert in due:
        escalated += await _escalate(alert, level=1, now=now, policy=policy)
    second = await Alert.filter(
        status=AlertStatus.OPEN, severity=Severity.URGENT, escalation_level=1, escalated_at__isnull=False
    ).prefetch_related("patient")
    for alert in second:
        assert alert.escalated_at is not None
        if now >= alert.escalated_at + (alert.respond_by - alert.raised_at):
            escalated += await _escalate(alert, level=2, now=now, policy=policy)
    return escalated


async def _escalate(alert: Alert, *, level: int, now: datetime, policy: ClinicPolicy) -> int:
    async with in_transaction():
        claimed = await Alert.filter(id=alert.id, escalation_level=level - 1, status=AlertStatus.OPEN).update(
            escalation_level=level, escalated_at=now, version=alert.version + 1
        )
        if claimed != 1:
            return 0
        alert.escalation_level, alert.escalated_at, alert.version = level, now, alert.version + 1
        if level == 1:
            # Only clinicians who can sign in: not one still invited, nor one deactivated.
            providers = await Provider.filter(
                care_teams__id=alert.patient.care_team_id,  # type: ignore[attr-defined]
                user__is_active=True,
            )
            for provider in providers:
                await AlertEscalation.create(alert=alert, level=level, provider=provider, escalated_at=now)
        else:
            contact = policy.on_call_contact or "clinic on-call contact (not configured)"
            await AlertEscalation.create(alert=alert, level=level, contact=contact, escalated_at=now)
        await _alert_event(alert, "Alert.escalated", Operation.UPDATED, now)
        detail = f"escalated to level {level}"
        await record_system(
            AuditEntry(AuditAction.UPDATE, "Alert", AuditOutcome.SUCCESS, alert.patient.id, str(alert.id), detail),
            now=now,
        )
    return 1
