"""Treatment plans: what a provider prescribes, within the limits of `models.care.plan_rules`
(CLINICAL.md §1, §2, §6, §8), and its status history.

A patient has at most one current (ACTIVE or ON_HOLD) plan; a unique index backs the check made
here. Every status change is kept with its reason and who made it (None: the system,
e.g. an automatic hold after a severe side effect, which the alert asks a clinician to review).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from tortoise.exceptions import IntegrityError
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models.care.plan_records import (
    CURRENT_STATUSES,
    CareSetting,
    ConcomitantMedication,
    Formulation,
    MedicationClass,
    PlanStatus,
    ScheduledSurvey,
    TreatmentPlan,
    TreatmentPlanStatusChange,
)
from models.care.plan_rules import (
    DEFAULT_SURVEY_SCHEDULE,
    FORMULATIONS,
    ceiling_problem,
    contraindication_problem,
    dose_problem,
    provider_medication_list,
    schedule_problem,
)
from models.identity.access import Viewer, clinical_patient, clinical_patient_ids, treating_provider_patient
from models.identity.accounts import Role
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, denied, record_now, record_system
from models.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.kernel.events import Operation, record_event
from models.kernel.policy import BloodPressure, ClinicPolicy
from models.kernel.prepared import prepared, prepared_read
from models.surveys.assignments import cancel_recurring_surveys


@dataclass(frozen=True)
class PlanTerms:
    """What a provider sets on a plan: all required terms at creation, any of them on update."""

    formulation: Formulation | None = None
    setting: CareSetting | None = None
    dose: Decimal | None = None
    sessions_per_week: int | None = None
    min_hours_between_sessions: int | None = None
    planned_sessions: int | None = None
    monitor_required: bool | None = None
    bp_ceiling: BloodPressure | None = None
    survey_schedule: tuple[ScheduledSurvey, ...] | None = None
    notes: str | None = None
    # CLINICAL.md §8: the patient's medication classes, in full (None on update: unchanged).
    concomitant_medications: tuple[MedicationClass, ...] | None = None


@dataclass(frozen=True)
class ResolvedTerms:
    """A plan's complete terms."""

    formulation: Formulation
    setting: CareSetting
    dose: Decimal
    sessions_per_week: int
    min_hours_between_sessions: int
    planned_sessions: int
    monitor_required: bool
    bp_ceiling: BloodPressure
    survey_schedule: tuple[ScheduledSurvey, ...]
    notes: str


@dataclass(frozen=True)
class NewPlan:
    patient_id: UUID
    terms: PlanTerms
    structural_contraindications: tuple[str, ...] = field(default=())
    reason: str = "plan created"


def _resolve(terms: PlanTerms, base: ResolvedTerms | None, policy: ClinicPolicy) -> ResolvedTerms:
    """`terms` over `base` (the current plan), or over CLINICAL.md's defaults for a new plan."""
    if base is None:
        for name in ("formulation", "setting", "dose", "planned_sessions"):
            if getattr(terms, name) is None:
                raise InvalidInput(name, f"{name} is required")
        assert terms.formulation and terms.setting and terms.dose is not None and terms.planned_sessions is not None
        base = ResolvedTerms(
            formulation=terms.formulation,
            setting=terms.setting,
            dose=terms.dose,
            sessions_per_week=2,
            min_hours_between_sessions=policy.default_min_hours_between_sessions,
            planned_sessions=terms.planned_sessions,
            monitor_required=True,
            bp_ceiling=policy.default_bp_ceiling,
            survey_schedule=DEFAULT_SURVEY_SCHEDULE,
            notes="",
        )
    elif terms.formulation is not None and terms.formulation != base.formulation:
        raise InvalidInput("formulation", "the formulation of a plan cannot change; create a new plan")
    given = {
        term.name: getattr(terms, term.name)
        for term in dataclasses.fields(ResolvedTerms)
        if getattr(terms, term.name) is not None
    }
    resolved = ResolvedTerms(**{**vars(base), **given})
    _validate(resolved, policy)
    return resolved


def _validate(terms: ResolvedTerms, policy: ClinicPolicy) -> None:
    if terms.dose != terms.dose.quantize(Decimal("0.01")):
        raise InvalidInput("dose", "dose has at most 2 decimal places")
    if problem := dose_problem(terms.formulation, terms.setting, terms.dose, policy):
        raise InvalidInput("dose", problem)
    for name, value, low, high in (
        ("sessionsPerWeek", terms.sessions_per_week, 1, 7),
        ("minHoursBetweenSessions", terms.min_hours_between_sessions, 12, 24 * 30),
        ("plannedSessions", terms.planned_sessions, 1, 100),
    ):
        if not low <= value <= high:
            raise InvalidInput(name, f"{name} must be between {low} and {high}")
    if problem := ceiling_problem(terms.bp_ceiling, policy):
        raise InvalidInput("bloodPressureCeiling", problem)
    if problem := schedule_problem(terms.survey_schedule):
        raise InvalidInput("surveySchedule", problem)
    if len(terms.notes) > 4000:
        raise InvalidInput("notes", "notes must be at most 4000 characters")


def terms_of(plan: TreatmentPlan) -> ResolvedTerms:
    return ResolvedTerms(
        formulation=plan.formulation,
        setting=plan.setting,
        dose=plan.dose,
        sessions_per_week=plan.sessions_per_week,
        min_hours_between_sessions=plan.min_hours_between_sessions,
        planned_sessions=plan.planned_sessions,
        monitor_required=plan.monitor_required,
        bp_ceiling=plan.bp_ceiling,
        survey_schedule=plan.schedule,
        notes=plan.notes,
    )


def _columns(terms: ResolvedTerms) -> dict[str, Any]:
    return {
        "formulation": terms.formulation,
        "setting": terms.setting,
        "dose": terms.dose,
        "dose_unit": FORMULATIONS[terms.formulation].unit,
        "sessions_per_week": terms.sessions_per_week,
        "min_hours_between_sessions": terms.min_hours_between_sessions,
        "planned_sessions": terms.planned_sessions,
        "monitor_required": terms.monitor_required,
        "bp_ceiling_systolic": terms.bp_ceiling.systolic,
        "bp_ceiling_diastolic": terms.bp_ceiling.diastolic,
        "survey_schedule": [item.as_json() for item in terms.survey_schedule],
        "notes": terms.notes,
    }


def _require_provider(viewer: Viewer, action: AuditAction = AuditAction.UPDATE) -> UUID:
    if not viewer.is_role(Role.PROVIDER) or viewer.provider_id is None:
        refusal = Forbidden("only the patient's providers may change a treatment plan")
        raise denied(viewer, refusal, action, "TreatmentPlan")
    return viewer.provider_id


async def record_plan_medications(
    plan: TreatmentPlan, medications: list[ConcomitantMedication], viewer: Viewer | None, *, now: datetime
) -> None:
    """Keep a plan's concomitant medications (CLINICAL.md §8), as a new version of the plan
    (inside the caller's transaction)."""
    plan.concomitant_medications = [entry.as_json() for entry in medications]
    plan.version += 1
    await plan.save(update_fields=["concomitant_medications", "version", "updated_at"])
    await _changed(plan, viewer, AuditAction.UPDATE, "concomitant medications changed", now=now)


async def _changed(
    plan: TreatmentPlan, viewer: Viewer | None, action: AuditAction, detail: str, *, now: datetime
) -> None:
    """The event and the audit row of a plan write (inside its transaction)."""
    patient_id: UUID = plan.patient_id  # type: ignore[attr-defined]
    await record_event(
        "TreatmentPlan." + ("created" if action is AuditAction.CREATE else "updated"),
        resource_type="TreatmentPlan",
        resource_id=plan.id,
        operation=Operation.CREATED if action is AuditAction.CREATE else Operation.UPDATED,
        version=plan.version,
        now=now,
        patient_id=patient_id,
        payload={"status": plan.status.value},
    )
    entry = AuditEntry(action, "TreatmentPlan", AuditOutcome.SUCCESS, patient_id, str(plan.id), detail[:200])
    if viewer is None:
        await record_system(entry, now=now)
    else:
        await record_now(viewer, entry, now=now, trail=viewer.audit)


async def create_treatment_plan(viewer: Viewer, data: NewPlan, *, now: datetime, policy: ClinicPolicy) -> TreatmentPlan:
    """A provider of the patient's care team prescribes a plan (one current plan per patient), within
    CLINICAL.md §1's dose limits and refused while a §2 structural contraindication is marked."""
    prescriber_id = _require_provider(viewer, AuditAction.CREATE)
    patient = await treating_provider_patient(
        viewer, data.patient_id, resource_type="TreatmentPlan", action=AuditAction.CREATE
    )
    if problem := contraindication_problem(data.structural_contraindications):
        raise InvalidInput("structuralContraindications", problem)
    terms = _resolve(data.terms, None, policy)
    medications = provider_medication_list([], data.terms.concomitant_medications or (), now)
    if not data.reason.strip():
        raise InvalidInput("reason", "reason is required")
    try:
        async with in_transaction():
            if await TreatmentPlan.exists(patient_id=patient.id, status__in=CURRENT_STATUSES):
                raise Conflict("the patient already has a current plan: complete or cancel it first")
            plan = await TreatmentPlan.create(
                patient_id=patient.id,
                prescriber_id=prescriber_id,
                status=PlanStatus.ACTIVE,
                status_reason=data.reason.strip()[:500],
                status_changed_at=now,
                concomitant_medications=[entry.as_json() for entry in medications],
                **_columns(terms),
            )
            await TreatmentPlanStatusChange.create(
                plan=plan, from_status=None, to_status=PlanStatus.ACTIVE, reason=plan.status_reason,
                changed_by_id=viewer.id, changed_at=now,
            )  # fmt: skip
            await _changed(plan, viewer, AuditAction.CREATE, "plan created", now=now)
    except IntegrityError as error:  # the unique index on current plans settled a race
        raise Conflict("the patient already has a current plan: complete or cancel it first") from error
    return plan


async def _plan_for_provider(viewer: Viewer, plan_id: UUID) -> TreatmentPlan:
    """The plan, if the viewer treats its patient; one answer for a plan that does not exist and
    for another team's (audited either way)."""
    _require_provider(viewer)
    plan = await TreatmentPlan.get_or_none(id=plan_id)
    if plan is None:
        raise denied(viewer, NotFound("treatment plan"), AuditAction.UPDATE, "TreatmentPlan", resource_id=plan_id)
    await treating_provider_patient(
        viewer, plan.patient_id, refusal=NotFound("treatment plan"), resource_type="TreatmentPlan", resource_id=plan_id,  # type: ignore[attr-defined]
    )  # fmt: skip
    return plan


async def update_treatment_plan(
    viewer: Viewer, plan_id: UUID, changes: PlanTerms, *, now: datetime, policy: ClinicPolicy
) -> TreatmentPlan:
    """Change a current plan's terms (not its status: hold, resume and end do that)."""
    await _plan_for_provider(viewer, plan_id)
    async with in_transaction():
        # Locked and re-read: a concurrent hold (e.g. the automatic one after a severe side effect)
        # must neither be lost nor undone by an edit of the terms.
        plan = await TreatmentPlan.filter(id=plan_id).select_for_update().first()
        if plan is None:  # pragma: no cover - plans are never deleted
            raise NotFound("treatment plan")
        if plan.status not in CURRENT_STATUSES:
            raise Conflict(f"a {plan.status.value} plan cannot be changed; create a new one")
        columns = _columns(_resolve(changes, terms_of(plan), policy))
        if changes.concomitant_medications is not None:
            listed = provider_medication_list(plan.medications, changes.concomitant_medications, now)
            columns["concomitant_medications"] = [entry.as_json() for entry in listed]
        plan.update_from_dict(columns)
        plan.version += 1
        await plan.save(update_fields=[*columns, "version", "updated_at"])
        await _changed(plan, viewer, AuditAction.UPDATE, "plan terms changed", now=now)
    return plan


async def change_plan_status(
    plan: TreatmentPlan, to_status: PlanStatus, reason: str, *, changed_by: Viewer | None, now: datetime
) -> TreatmentPlan:
    """Move a plan to `to_status` and keep the change (call inside the caller's transaction).

    `changed_by` None is the system (e.g. the automatic hold after a severe side effect).
    """
    if not reason.strip():
        raise InvalidInput("reason", "reason is required")
    allowed = {
        PlanStatus.ACTIVE: {PlanStatus.ON_HOLD, PlanStatus.COMPLETED, PlanStatus.CANCELLED},
        PlanStatus.ON_HOLD: {PlanStatus.ACTIVE, PlanStatus.COMPLETED, PlanStatus.CANCELLED},
    }
    if to_status not in allowed.get(plan.status, set()):
        raise Conflict(f"a {plan.status.value} plan cannot become {to_status.value}")
    previous = plan.status
    plan.status = to_status
    plan.status_reason = reason.strip()[:500]
    plan.status_changed_at = now
    plan.version += 1
    await plan.save(update_fields=["status", "status_reason", "status_changed_at", "version", "updated_at"])
    await TreatmentPlanStatusChange.create(
        plan=plan, from_status=previous, to_status=to_status, reason=plan.status_reason,
        changed_by_id=changed_by.id if changed_by else None, changed_at=now,
    )  # fmt: skip
    await _changed(plan, changed_by, AuditAction.UPDATE, f"{previous.value} -> {to_status.value}", now=now)
    if to_status is not PlanStatus.ACTIVE:
        await cancel_recurring_surveys(plan.patient_id, now=now)  # type: ignore[attr-defined]
    return plan


async def set_treatment_plan_status(
    viewer: Viewer, plan_id: UUID, to_status: PlanStatus, reason: str, *, now: datetime
) -> TreatmentPlan:
    """Hold, resume, complete or cancel a plan, as one of the patient's providers."""
    plan = await _plan_for_provider(viewer, plan_id)
    async with in_transaction():
        # Re-read under the transaction so two providers acting at once do not both succeed.
        locked = await TreatmentPlan.filter(id=plan.id).select_for_update().first()
        if locked is None:  # pragma: no cover - plans are never deleted
            raise NotFound("treatment plan")
        return await change_plan_status(locked, to_status, reason, changed_by=viewer, now=now)


async def current_plan(viewer: Viewer, patient_id: UUID) -> TreatmentPlan | None:
    """The patient's current (ACTIVE or ON_HOLD) plan, else the latest one, as the viewer may see it."""
    patient = await clinical_patient(viewer, patient_id, "TreatmentPlan")
    plans = TreatmentPlan.filter(patient_id=patient.id)
    return await plans.filter(status__in=CURRENT_STATUSES).first() or await plans.order_by("-created_at").first()


@prepared_read(TreatmentPlan)
def _plans_of(patient_ids: list[UUID]) -> QuerySet[TreatmentPlan]:
    return TreatmentPlan.filter(patient_id__in=patient_ids).order_by("created_at")


async def current_plans(viewer: Viewer, patient_ids: list[UUID]) -> dict[UUID, TreatmentPlan]:
    """`current_plan` for many patients in two queries (for DataLoaders)."""
    allowed = await clinical_patient_ids(viewer, patient_ids, "TreatmentPlan")
    chosen: dict[UUID, TreatmentPlan] = {}
    for plan in await prepared(_plans_of, patient_ids=allowed):
        patient_id: UUID = plan.patient_id
        known = chosen.get(patient_id)
        if known is None or known.status not in CURRENT_STATUSES:
            chosen[patient_id] = plan
    return chosen


async def plan_histories(plan_ids: list[UUID]) -> dict[UUID, list[TreatmentPlanStatusChange]]:
    """Status changes of plans the caller was already allowed to see, oldest first, by plan."""
    histories: dict[UUID, list[TreatmentPlanStatusChange]] = {plan_id: [] for plan_id in plan_ids}
    for change in await TreatmentPlanStatusChange.filter(plan_id__in=plan_ids).order_by("changed_at", "created_at"):
        histories[change.plan_id].append(change)  # type: ignore[attr-defined]
    return histories


async def get_plan(viewer: Viewer, plan_id: UUID) -> TreatmentPlan:
    """One plan, for a viewer who may see its patient's clinical record."""
    plan = await TreatmentPlan.get_or_none(id=plan_id)
    if plan is None or not await clinical_patient_ids(viewer, [plan.patient_id], "TreatmentPlan"):  # type: ignore[attr-defined]
        raise NotFound("treatment plan")
    return plan
