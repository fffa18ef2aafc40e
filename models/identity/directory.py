"""Reading who is who: patients, providers and care teams, as the viewer may see them.

Every read of a patient's record leaves an audit entry (one per patient touched); a refusal is
audited too and looks exactly like a record that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from tortoise.expressions import Q, Subquery
from tortoise.queryset import QuerySet

from models.alerts.alerts import Alert, AlertStatus
from models.identity.access import Scope, Sensitivity, Viewer, may_read, patients_visible_to
from models.identity.accounts import CareTeam, Patient, Provider, Role
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, audit_patient_read, denied
from models.kernel.errors import Forbidden, NotFound


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

    def urgency(self) -> tuple[int, datetime, str, str, UUID]:
        return (self.severity_rank, self.respond_by, self.family_name, self.given_name, self.id)


def default_patient_order(viewer: Viewer) -> PatientOrder:
    """The most urgent first for those who may see alerts; by name for everyone else."""
    return PatientOrder.URGENCY if may_read(viewer, ORDER_READS[PatientOrder.URGENCY]) else PatientOrder.NAME


def check_patient_list_arguments(viewer: Viewer, order: PatientOrder, filters: dict[str, object]) -> None:
    """`Forbidden`, naming the argument, when a list would be ordered or filtered (`filters`: the
    given ones, by name) by a property the viewer may not read: an admin, or an EHR client without
    `clinical:read`, ordering by alerts would learn which patients have urgent ones."""
    if not may_read(viewer, ORDER_READS[order]):
        raise Forbidden(
            f"orderBy: {order.value} sorts by open alerts, clinical data you may not see; use orderBy: NAME",
            argument="orderBy",
        )
    for name, value in filters.items():
        if value is not None and not may_read(viewer, FILTER_READS[name]):
            raise Forbidden(f"filter.{name} filters by clinical data you may not see", argument=f"filter.{name}")


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

    `Forbidden` when the order or a filter reads what the viewer may not (see
    `check_patient_list_arguments`). A fixed number of queries whatever the panel's size, and only
    the page's patients are loaded (`_urgent_page` says what the urgency order reads besides).
    """
    check_patient_list_arguments(viewer, order, {"careTeamId": care_team_id, "hasOpenAlerts": with_open_alerts})
    visible = Patient.filter(patients_visible_to(viewer))
    if care_team_id is not None:
        visible = visible.filter(care_team_id=care_team_id)
    active = Alert.filter(status__in=[AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED])
    flagged = Q(id__in=Subquery(active.values("patient_id")))
    rows: list[tuple[Patient, PatientCursor]] = []
    by_name, name_after = order is PatientOrder.NAME, after
    if order is PatientOrder.URGENCY:
        among_alerts = after is None or after.severity_rank != NO_ALERT_RANK
        if among_alerts and with_open_alerts is not False:
            rows = await _urgent_page(active.filter(patient_id__in=Subquery(visible.values("id"))), limit, after)
        # Then the patients without an open alert, by name.
        by_name, name_after = with_open_alerts is not True, None if among_alerts else after
        with_open_alerts = False
    if by_name and len(rows) < limit:
        if with_open_alerts is not None:
            visible = visible.filter(flagged if with_open_alerts else ~flagged)
        if name_after is not None:
            visible = visible.filter(
                Q(family_name__gt=name_after.family_name)
                | Q(family_name=name_after.family_name, given_name__gt=name_after.given_name)
                | Q(family_name=name_after.family_name, given_name=name_after.given_name, id__gt=name_after.id)
            )
        named = await visible.order_by("family_name", "given_name", "id").limit(limit - len(rows))
        rows += [(patient, PatientCursor(patient.family_name, patient.given_name, patient.id)) for patient in named]
    for patient, _ in rows:
        audit_patient_read(viewer, patient.id)
    return rows


async def _urgent_page(
    active: QuerySet[Any], limit: int, after: PatientCursor | None
) -> list[tuple[Patient, PatientCursor]]:
    """The patients with an open alert, the most urgent first (their most urgent alert, then name),
    `limit` of them after `after`. Reads each open alert's severity, deadline and patient's name
    (the care team's work queue, not the whole panel) and loads the page's patients; an index on
    the alerts' patient would let the database order them instead."""
    alerts = active.order_by("-severity_rank", "-respond_by").values_list(
        "patient_id", "severity_rank", "respond_by", "patient__family_name", "patient__given_name"
    )
    most_urgent: dict[UUID, PatientCursor] = {}
    for patient_id, rank, respond_by, family, given in await alerts:
        # The last alert of a patient is their most urgent.
        most_urgent[patient_id] = PatientCursor(family, given, patient_id, rank, respond_by)
    positions = sorted(most_urgent.values(), key=PatientCursor.urgency)
    if after is not None:
        positions = [position for position in positions if position.urgency() > after.urgency()]
    page = positions[:limit]
    if not page:
        return []
    patients = {patient.id: patient for patient in await Patient.filter(id__in=[p.id for p in page])}
    return [(patients[position.id], position) for position in page]


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


async def treating_provider_patient(
    viewer: Viewer,
    patient_id: UUID,
    *,
    refusal: NotFound | None = None,
    resource_type: str = "Patient",
    resource_id: UUID | None = None,
    action: AuditAction = AuditAction.UPDATE,
) -> Patient:
    """The patient, if the viewer is a provider of their care team (who may change their care).

    Otherwise `refusal` (default: patient not found), the very answer the caller gives for a
    record that does not exist, and a DENIED entry for `resource_type` against the patient."""
    patient = await Patient.get_or_none(id=patient_id)
    if patient is None or not viewer.is_role(Role.PROVIDER) or patient.care_team_id not in viewer.care_team_ids:  # type: ignore[attr-defined]
        refused = refusal or NotFound("patient")
        raise denied(viewer, refused, action, resource_type, patient_id=patient_id, resource_id=resource_id)
    return patient


async def require_clinical_record(viewer: Viewer, patient_id: UUID, resource_type: str, refusal: NotFound) -> None:
    """`require_clinical_access` for a record read by its id: a refusal is `refusal`, the very
    answer for a record that does not exist (not "patient not found", which would tell them
    apart)."""
    try:
        await require_clinical_access(viewer, patient_id, resource_type)
    except NotFound:
        raise refusal from None
