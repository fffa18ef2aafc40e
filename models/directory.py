"""Reading who is who: patients, providers and care teams, as the viewer may see them.

Every read of a patient's record leaves an audit entry (one per patient touched); a refusal is
audited too and looks exactly like a record that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from uuid import UUID

from tortoise.expressions import Q, RawSQL, Subquery

from models.access import Scope, Sensitivity, Viewer, may_read, patients_visible_to
from models.accounts import CareTeam, Patient, Provider, Role
from models.audit import AuditAction, AuditEntry, AuditOutcome
from models.errors import Forbidden, NotFound


class PatientOrder(StrEnum):
    URGENCY = "URGENCY"  # the most urgent open alert first, then its deadline, then name
    NAME = "NAME"  # family name, given name


# What ordering or filtering a patient list by each argument reads: a viewer may use it only if
# it may read that property (`may_read`, the rule that decides what it may select).
ORDER_READS = {PatientOrder.URGENCY: Sensitivity.CLINICAL, PatientOrder.NAME: Sensitivity.IDENTITY}
FILTER_READS = {"careTeamId": Sensitivity.IDENTITY, "hasOpenAlerts": Sensitivity.CLINICAL}

# A patient without an open alert sorts after every alert, by name.
NO_ALERT_RANK = 9
NO_DEADLINE = datetime(9999, 12, 31, tzinfo=UTC)


@dataclass(frozen=True)
class PatientCursor:
    """Position in a patient list (keyset pagination: stable under inserts). In the urgency order
    it starts with the patient's most urgent open alert (`NO_ALERT_RANK`, `NO_DEADLINE` without)."""

    family_name: str
    given_name: str
    id: UUID
    severity_rank: int = NO_ALERT_RANK
    respond_by: datetime = NO_DEADLINE


def default_patient_order(viewer: Viewer) -> PatientOrder:
    """The most urgent first for those who may see alerts; by name for everyone else."""
    return PatientOrder.URGENCY if may_read(viewer, ORDER_READS[PatientOrder.URGENCY]) else PatientOrder.NAME


def check_patient_list_arguments(viewer: Viewer, order: PatientOrder, with_open_alerts: bool | None) -> None:
    """`Forbidden`, naming the argument, when a list would be ordered or filtered by a property the
    viewer may not read (an admin, or an EHR client without `clinical:read`, ordering by alerts
    would learn which patients have urgent ones)."""
    if not may_read(viewer, ORDER_READS[order]):
        raise Forbidden(
            f"orderBy: {order.value} sorts by open alerts, clinical data you may not see; use orderBy: NAME",
            argument="orderBy",
        )
    if with_open_alerts is not None and not may_read(viewer, FILTER_READS["hasOpenAlerts"]):
        raise Forbidden(
            "filter.hasOpenAlerts filters by open alerts, clinical data you may not see",
            argument="filter.hasOpenAlerts",
        )


def audit_patient_read(viewer: Viewer, patient_id: UUID, resource_type: str = "Patient") -> None:
    viewer.audit.add(
        AuditEntry(AuditAction.READ, resource_type, AuditOutcome.SUCCESS, patient_id=patient_id, resource_id=None)
    )


def audit_refusal(viewer: Viewer, resource_type: str, resource_id: UUID | str, patient_id: UUID | None) -> None:
    viewer.audit.add(
        AuditEntry(
            AuditAction.READ,
            resource_type,
            AuditOutcome.DENIED,
            patient_id=patient_id,
            resource_id=str(resource_id),
        )
    )


async def get_patient(viewer: Viewer, patient_id: UUID) -> Patient:
    """The patient, if the viewer may see them; `NotFound` otherwise (audited either way)."""
    patient = await Patient.filter(patients_visible_to(viewer), id=patient_id).first()
    if patient is None:
        audit_refusal(viewer, "Patient", patient_id, patient_id)
        raise NotFound("patient")
    audit_patient_read(viewer, patient.id)
    return patient


async def get_patients(viewer: Viewer, patient_ids: list[UUID]) -> dict[UUID, Patient]:
    """The visible patients among `patient_ids`, in one query (for DataLoaders and `node`)."""
    patients = await Patient.filter(patients_visible_to(viewer), id__in=patient_ids)
    found = {patient.id: patient for patient in patients}
    for patient_id in patient_ids:
        if patient_id in found:
            audit_patient_read(viewer, patient_id)
        else:
            audit_refusal(viewer, "Patient", patient_id, patient_id)
    return found


# The patient's most urgent open alert, as a correlated subquery over the outer `patient` table
# that SQLite and PostgreSQL both run (Tortoise has no outer references). Without an alert, the
# values that sort last (the deadline literal compares as text on SQLite, casts on PostgreSQL).
_MOST_URGENT = (
    "COALESCE((SELECT alert.{column} FROM alert WHERE alert.patient_id = patient.id"
    " AND alert.status IN ('OPEN', 'ACKNOWLEDGED') ORDER BY alert.severity_rank, alert.respond_by LIMIT 1),"
    " {otherwise})"
)
_URGENT_RANK = RawSQL(_MOST_URGENT.format(column="severity_rank", otherwise=NO_ALERT_RANK))
_URGENT_BY = RawSQL(_MOST_URGENT.format(column="respond_by", otherwise="'9999-12-31 00:00:00+00:00'"))


async def list_patients(
    viewer: Viewer,
    *,
    order: PatientOrder,
    limit: int,
    after: PatientCursor | None = None,
    care_team_id: UUID | None = None,
    with_open_alerts: bool | None = None,
) -> list[tuple[Patient, PatientCursor]]:
    """Visible patients in `order`, `limit` of them after `after`, each with its position; with
    `with_open_alerts`, only those with (True) or without (False) an open or acknowledged alert.

    The database orders and pages (one query, whatever the number of patients); `Forbidden` when
    the order or a filter reads what the viewer may not (`check_patient_list_arguments`).
    """
    from models.alerts import Alert, AlertStatus  # alerts audit through this module

    check_patient_list_arguments(viewer, order, with_open_alerts)
    query = Patient.filter(patients_visible_to(viewer))
    if care_team_id is not None:
        query = query.filter(care_team_id=care_team_id)
    if with_open_alerts is not None:
        active = Alert.filter(status__in=[AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED]).values("patient_id")
        flagged = Q(id__in=Subquery(active))
        query = query.filter(flagged if with_open_alerts else ~flagged)
    by_name = Q(family_name__gt=after.family_name) if after else Q()
    if after is not None:
        by_name |= Q(family_name=after.family_name, given_name__gt=after.given_name)
        by_name |= Q(family_name=after.family_name, given_name=after.given_name, id__gt=after.id)
    if order is PatientOrder.NAME:
        patients = await query.filter(by_name).order_by("family_name", "given_name", "id").limit(limit)
        rows = [(p, PatientCursor(p.family_name, p.given_name, p.id)) for p in patients]
    else:
        query = query.annotate(urgent_rank=_URGENT_RANK, urgent_by=_URGENT_BY)
        if after is not None:
            respond_by = after.respond_by.astimezone(UTC)
            query = query.filter(
                Q(urgent_rank__gt=after.severity_rank)
                | Q(urgent_rank=after.severity_rank, urgent_by__gt=respond_by)
                | (Q(urgent_rank=after.severity_rank, urgent_by=respond_by) & by_name)
            )
        patients = await query.order_by("urgent_rank", "urgent_by", "family_name", "given_name", "id").limit(limit)
        rows = [(p, _urgency_position(p)) for p in patients]
    for patient, _ in rows:
        audit_patient_read(viewer, patient.id)
    return rows


def _urgency_position(patient: Patient) -> PatientCursor:
    from models.alerts import Alert

    deadline = Alert._meta.fields_map["respond_by"].to_python_value(patient.urgent_by)  # type: ignore[attr-defined]
    return PatientCursor(
        patient.family_name,
        patient.given_name,
        patient.id,
        int(patient.urgent_rank),  # type: ignore[attr-defined]
        deadline.astimezone(UTC),
    )


def _care_teams_visible_to(viewer: Viewer) -> Q:
    if viewer.is_role(Role.ADMIN):
        return Q()
    if viewer.is_api_client and not viewer.has_scope(Scope.PATIENTS_READ):
        return Q(pk=None)
    return Q(id__in=list(viewer.care_team_ids))


async def get_care_teams(viewer: Viewer, care_team_ids: list[UUID]) -> dict[UUID, CareTeam]:
    teams = await CareTeam.filter(_care_teams_visible_to(viewer), id__in=care_team_ids)
    return {team.id: team for team in teams}


async def list_care_teams(viewer: Viewer) -> list[CareTeam]:
    return list(await CareTeam.filter(_care_teams_visible_to(viewer)).order_by("name"))


def _providers_visible_to(viewer: Viewer) -> Q:
    """Admins see every provider; others see the providers of the care teams they can see."""
    if viewer.is_role(Role.ADMIN):
        return Q()
    if viewer.is_api_client and not viewer.has_scope(Scope.PATIENTS_READ):
        return Q(pk=None)
    return Q(care_teams__id__in=list(viewer.care_team_ids))


async def get_providers(viewer: Viewer, provider_ids: list[UUID]) -> dict[UUID, Provider]:
    providers = await Provider.filter(_providers_visible_to(viewer), id__in=provider_ids).distinct()
    return {provider.id: provider for provider in providers}


async def providers_of_care_team(viewer: Viewer, care_team_id: UUID) -> list[Provider]:
    if care_team_id not in (await get_care_teams(viewer, [care_team_id])):
        return []
    return list(await Provider.filter(care_teams__id=care_team_id).order_by("family_name", "given_name", "id"))


async def care_teams_of_provider(viewer: Viewer, provider_id: UUID) -> list[CareTeam]:
    teams = await CareTeam.filter(_care_teams_visible_to(viewer), providers__id=provider_id).order_by("name")
    return list(teams)


async def clinical_patient(viewer: Viewer, patient_id: UUID, resource_type: str) -> Patient:
    """The patient whose `resource_type` records the viewer asks for, if it may see them.

    `NotFound` otherwise, exactly as for a patient who does not exist; audited either way.
    """
    patient = await Patient.filter(patients_visible_to(viewer), id=patient_id).first()
    if patient is None or not may_read(viewer, Sensitivity.CLINICAL):
        audit_refusal(viewer, resource_type, patient_id, patient_id)
        raise NotFound("patient")
    audit_patient_read(viewer, patient.id, resource_type)
    return patient


async def clinical_patients(viewer: Viewer, patient_ids: list[UUID], resource_type: str) -> dict[UUID, Patient]:
    """`clinical_patient` for many patients in one query (for DataLoaders): the allowed ones."""
    visible = {p.id: p for p in await Patient.filter(patients_visible_to(viewer), id__in=patient_ids)}
    allowed = visible if may_read(viewer, Sensitivity.CLINICAL) else {}
    for patient_id in patient_ids:
        if patient_id in allowed:
            audit_patient_read(viewer, patient_id, resource_type)
        else:
            audit_refusal(viewer, resource_type, patient_id, patient_id)
    return allowed


def _own_record(viewer: Viewer) -> UUID | None:
    """A patient's own id: for a patient the access decision needs no query (they see their own
    record and no other, and the account was checked when this request was authenticated)."""
    if viewer.is_role(Role.PATIENT):
        return viewer.patient_id
    return None


async def require_clinical_access(viewer: Viewer, patient_id: UUID, resource_type: str) -> None:
    """`clinical_patient` for callers that need the decision, not the row (a patient reading
    their own record costs no query)."""
    own = _own_record(viewer)
    if own is None:
        await clinical_patient(viewer, patient_id, resource_type)
        return
    if patient_id != own:
        audit_refusal(viewer, resource_type, patient_id, patient_id)
        raise NotFound("patient")
    audit_patient_read(viewer, patient_id, resource_type)


async def clinical_patient_ids(viewer: Viewer, patient_ids: list[UUID], resource_type: str) -> list[UUID]:
    """`clinical_patients` for callers that need the allowed ids, not the rows (DataLoaders)."""
    own = _own_record(viewer)
    if own is None:
        return list(await clinical_patients(viewer, patient_ids, resource_type))
    for patient_id in patient_ids:
        if patient_id == own:
            audit_patient_read(viewer, patient_id, resource_type)
        else:
            audit_refusal(viewer, resource_type, patient_id, patient_id)
    return [patient_id for patient_id in dict.fromkeys(patient_ids) if patient_id == own]


async def treating_provider_patient(viewer: Viewer, patient_id: UUID) -> Patient:
    """The patient, if the viewer is a provider of their care team (who may change their care)."""
    patient = await Patient.get_or_none(id=patient_id)
    if patient is None or not viewer.is_role(Role.PROVIDER) or patient.care_team_id not in viewer.care_team_ids:  # type: ignore[attr-defined]
        raise NotFound("patient")
    return patient
