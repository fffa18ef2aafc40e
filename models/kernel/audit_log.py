"""Reading the audit log: who may see which rows of it (an admin all, a patient their own record's).

Kept apart from `models.kernel.audit`, which every write uses to record its event, because reading needs
the viewer's access rules of `models.identity.access`, and `models.identity.access` holds an `AuditTrail`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from tortoise.expressions import Q

from models.identity.access import Viewer
from models.identity.accounts import Role
from models.kernel.audit import AuditAction, AuditEntry, AuditEvent, AuditOutcome, denied
from models.kernel.errors import Forbidden, NotFound


@dataclass(frozen=True)
class AuditCursor:
    occurred_at: datetime
    id: UUID


def _shown_to_patient(viewer: Viewer) -> Q:
    """What a patient sees of their own record's log: everyone's access but other patients'."""
    return Q(actor_role__not="PATIENT") | Q(actor_role__isnull=True) | Q(actor_id=viewer.id)


def _shown(viewer: Viewer, events: list[AuditEvent]) -> list[AuditEvent]:
    """Audit the reading (once per patient), and keep addresses and request ids from patients."""
    for shown in sorted({event.patient_id for event in events if event.patient_id is not None}):
        viewer.audit.add(AuditEntry(AuditAction.READ, "AuditEvent", AuditOutcome.SUCCESS, patient_id=shown))
    if viewer.is_role(Role.PATIENT):
        for event in events:  # in memory only: the rows themselves cannot change
            event.client_address = None
            event.request_id = None
    return events


async def get_audit_event(viewer: Viewer, event_id: UUID) -> AuditEvent:
    """One audit row, under the rules of `list_audit_events`; `NotFound` for any other."""
    query = AuditEvent.filter(id=event_id)
    if viewer.is_role(Role.PATIENT):
        query = query.filter(_shown_to_patient(viewer), patient_id=viewer.patient_id)
    elif not viewer.is_role(Role.ADMIN):
        raise denied(viewer, NotFound("audit event"), AuditAction.READ, "AuditEvent", resource_id=event_id)
    event = await query.first()
    if event is None:  # none, or not about this patient's record: one answer, audited
        raise denied(viewer, NotFound("audit event"), AuditAction.READ, "AuditEvent", resource_id=event_id)
    return _shown(viewer, [event])[0]


async def list_audit_events(
    viewer: Viewer, *, patient_id: UUID | None, limit: int, after: AuditCursor | None = None
) -> list[AuditEvent]:
    """The audit log, newest first (HIPAA audit controls; a patient's accounting of disclosures).

    Admins read all of it. A patient reads who accessed their own record: the care team, clients
    and admins, but not other patients' refused attempts, and no addresses or request ids.
    Reading the log is itself audited, once per patient whose events were shown.
    """
    if viewer.is_role(Role.PATIENT):
        if patient_id not in (None, viewer.patient_id):
            viewer.audit.add(AuditEntry(AuditAction.READ, "AuditEvent", AuditOutcome.DENIED, patient_id=patient_id))
            raise NotFound("patient")
        patient_id = viewer.patient_id
    elif not viewer.is_role(Role.ADMIN):
        viewer.audit.add(AuditEntry(AuditAction.READ, "AuditEvent", AuditOutcome.DENIED, patient_id=patient_id))
        raise Forbidden("only admins, and patients for their own record, may read the audit log")
    query = AuditEvent.all()
    if patient_id is not None:
        query = query.filter(patient_id=patient_id)
    if viewer.is_role(Role.PATIENT):
        query = query.filter(_shown_to_patient(viewer))
    if after is not None:
        query = query.filter(Q(occurred_at__lt=after.occurred_at) | Q(occurred_at=after.occurred_at, id__lt=after.id))
    return _shown(viewer, list(await query.order_by("-occurred_at", "-id").limit(limit)))
