"""Clinic sessions (PRODUCT.md capability 12, CLINICAL.md §1): a dose given in clinic (IM, IV,
Spravato, or any formulation given there), recorded after the fact by a provider of the patient's
care team with the REMS monitoring form's fields.

The record is a `DosingSession` with setting CLINIC, COMPLETED when it is written, and it is
treated like a session completed at home: the same alerts after dosing (§2 breathing and oxygen,
§3), the same follow-up surveys (§6), the same event for the change feed and FHIR.

Doses: a plan dosed in mg takes a dose its formulation allows (§1: range, or Spravato's 28, 56 or
84 mg). A weight-based plan (IM mg/kg, IV mg/kg per hour) is still recorded as the total in mg,
the figure the REMS form and FHIR's MedicationAdministration carry; with no weight on file, the
total is checked against the formulation's per-kg maximum for the heaviest patient the clinic
expects (`ClinicPolicy.heaviest_patient_kg`), over the session's hours for an infusion.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models.alerts import alert_rules
from models.alerts.alerts import raise_alerts
from models.care.dosing import ended_early, record_session_written
from models.care.dosing_records import DosingSession, SessionStatus
from models.care.plan_records import CURRENT_STATUSES, CareSetting, DoseUnit, PlanStatus, TreatmentPlan
from models.care.plan_rules import dose_problem, formulation_limits
from models.care.pre_dose import PLAUSIBLE, reading_is_current
from models.identity.access import Viewer, treating_provider_patient
from models.identity.accounts import Provider, Role
from models.identity.directory import get_providers
from models.kernel.audit import AuditAction, denied
from models.kernel.errors import Conflict, Forbidden, InvalidInput
from models.kernel.events import Operation
from models.kernel.idempotency import Outcome, request_fields, run_once
from models.kernel.policy import BloodPressure, ClinicPolicy
from models.kernel.text import kept_note
from models.safety.rules import Findings, Phase, reading_findings, respiratory_depression_alert
from models.surveys.assignments import schedule_follow_up

CLINIC_SETTING = CareSetting.CLINIC.value
MAX_LOT_NUMBER = 64
MAX_MONITORED_BY = 100


@dataclass(frozen=True)
class ClinicReading:
    """One line of the monitoring form: blood pressure, heart rate and SpO2 where measured."""

    phase: Phase
    systolic: int
    diastolic: int
    measured_at: datetime
    heart_rate: int | None = None
    spo2: int | None = None


@dataclass(frozen=True)
class ClinicSession:
    """The REMS monitoring form of one session (CLINICAL.md §1); observations are yes/no."""

    patient_id: UUID
    dose_mg: Decimal
    started_at: datetime
    ended_at: datetime
    monitored_by: str
    readings: tuple[ClinicReading, ...]
    sedation: bool
    dissociation: bool
    respiratory_depression: bool
    ready_to_leave_at: datetime | None = None
    lot_number: str | None = None
    notes: str = ""
    idempotency_key: str | None = None


def clinic_session_findings(data: ClinicSession, ceiling: BloodPressure, policy: ClinicPolicy) -> Findings:
    """What a clinic session's form calls for, as after a session at home: each reading's alerts
    (§2, §3: PRE against the pre-dose thresholds and the plan's ceiling, AT_40_MIN and POST
    against the post-dose ones, SpO2 at any time), respiratory depression observed (URGENT), and
    no time the patient was ready to leave (§3: not back to baseline, HIGH)."""
    findings = Findings()
    for reading in data.readings:
        found = reading_findings(
            reading.phase, policy, systolic=reading.systolic, diastolic=reading.diastolic, spo2=reading.spo2,
            ceiling=ceiling,
        )  # fmt: skip
        findings.merge(found)
    findings.add(respiratory_depression_alert(data.respiratory_depression), emergency=data.respiratory_depression)
    if (not_ready := alert_rules.not_back_to_baseline_alert(data.ready_to_leave_at is not None)) is not None:
        summary = "Clinic session recorded without a time the patient was ready to leave: not back to baseline."
        findings.add(replace(not_ready, summary=summary))
    return findings


async def record_clinic_session(viewer: Viewer, data: ClinicSession, *, now: datetime, policy: ClinicPolicy) -> Outcome:
    """A provider of the patient's care team records a session given in clinic (CLINICAL.md §1)
    as COMPLETED, with its alerts (§2, §3), its follow-up surveys (§6), its event and its audit
    row in one transaction; the advice its readings call for comes back with it.

    Other roles are refused (`Forbidden`); a patient outside the provider's teams is `NotFound`.
    The patient's plan must be ACTIVE (a plan on hold is a `Conflict` that says so), and the
    session may not overlap another one of the patient (recorded twice, by two providers)."""
    if not viewer.is_role(Role.PROVIDER):
        refusal = Forbidden("clinic sessions are recorded by the patient's providers")
        raise denied(viewer, refusal, AuditAction.CREATE, "DosingSession", patient_id=data.patient_id)
    patient = await treating_provider_patient(
        viewer, data.patient_id, resource_type="DosingSession", action=AuditAction.CREATE
    )

    async def write() -> Outcome:
        _validate(data, now, policy)
        async with in_transaction():
            # Locked: two providers recording the same session at once are told of the overlap.
            plan = (
                await TreatmentPlan.filter(patient_id=patient.id, status__in=CURRENT_STATUSES)
                .select_for_update()
                .first()
            )
            plan = _usable_plan(plan)
            if problem := _dose_problem(plan, data, policy):
                raise InvalidInput("doseMg", problem)
            if (other := await _overlapping(patient.id, data, policy)) is not None:
                raise Conflict(
                    f"another dosing session of this patient overlaps this time (started "
                    f"{other.started_at.isoformat()}): was this session recorded already?"
                )
            session = await DosingSession.create(**_columns(viewer, plan, data, now, policy))
            findings = clinic_session_findings(data, plan.bp_ceiling, policy)
            await raise_alerts(
                findings.alerts, patient=patient, source_type="DosingSession", source_id=session.id, now=now,
                policy=policy,
            )  # fmt: skip
            await schedule_follow_up(
                patient, session.id, data.ended_at, plan.schedule,
                back_to_baseline=data.ready_to_leave_at is not None, now=now, policy=policy,
            )  # fmt: skip
            # The same event as a session completed at home (type, resource, payload), created at once.
            await record_session_written(viewer, session, "DosingSession.completed", Operation.CREATED, now)
        return Outcome(session.id, findings.advice)

    return await run_once(viewer, "recordClinicSession", data.idempotency_key, request_fields(data), write, now=now)


async def recorders(viewer: Viewer, user_ids: list[UUID]) -> dict[UUID, Provider]:
    """Who recorded clinic sessions (by user id), as far as the viewer may see providers (for a
    DataLoader: two queries whatever the number of sessions)."""
    users = {provider.id: provider.user_id for provider in await Provider.filter(user_id__in=user_ids)}  # type: ignore[attr-defined]
    visible = await get_providers(viewer, list(users))
    return {users[provider_id]: provider for provider_id, provider in visible.items()}


def _require_aware(field: str, moment: datetime | None) -> None:
    if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
        raise InvalidInput(field, f"{field} must include a time zone offset, e.g. 2026-11-25T14:00:00Z")


def _validate(data: ClinicSession, now: datetime, policy: ClinicPolicy) -> None:
    """The form itself, field by field, before any record is read."""
    for field, moment in (
        ("startedAt", data.started_at),
        ("endedAt", data.ended_at),
        ("readyToLeaveAt", data.ready_to_leave_at),
    ):
        _require_aware(field, moment)
    dose = data.dose_mg
    if not dose.is_finite() or dose <= 0 or dose >= Decimal(1_000_000):
        raise InvalidInput("doseMg", "doseMg must be a dose in mg, more than 0")
    if int(dose.as_tuple().exponent) < -2:
        raise InvalidInput("doseMg", "doseMg has at most 2 decimal places")
    if data.lot_number is not None and len(data.lot_number.strip()) > MAX_LOT_NUMBER:
        raise InvalidInput("lotNumber", f"lotNumber must be at most {MAX_LOT_NUMBER} characters")
    if not data.monitored_by.strip():
        raise InvalidInput("monitoredBy", "monitoredBy is required: who monitored the patient")
    if len(data.monitored_by.strip()) > MAX_MONITORED_BY:
        raise InvalidInput("monitoredBy", f"monitoredBy must be at most {MAX_MONITORED_BY} characters")
    if data.started_at < now - policy.oldest_backdated_entry:
        raise InvalidInput("startedAt", f"startedAt is more than {policy.oldest_backdated_entry.days} days ago")
    if data.ended_at <= data.started_at:
        raise InvalidInput("endedAt", "endedAt must be after startedAt")
    if data.ended_at > now + policy.clock_skew:
        raise InvalidInput("endedAt", "endedAt is in the future")
    if data.ready_to_leave_at is not None:
        if data.ready_to_leave_at < data.started_at:
            raise InvalidInput("readyToLeaveAt", "readyToLeaveAt is before the session started")
        if data.ready_to_leave_at > now + policy.clock_skew:
            raise InvalidInput("readyToLeaveAt", "readyToLeaveAt is in the future")
    _validate_readings(data, policy)
    kept_note(data.notes, "notes")


def _validate_readings(data: ClinicSession, policy: ClinicPolicy) -> None:
    """One reading per phase, PRE required (the REMS form records blood pressure before dosing),
    numbers a device can show, each taken when its phase says."""
    taken: dict[Phase, datetime] = {}
    for index, reading in enumerate(data.readings):
        where = f"readings[{index}]"
        if reading.phase in taken:
            raise InvalidInput(f"{where}.phase", f"one reading per phase: {reading.phase.value} is given twice")
        values = {
            "systolic": reading.systolic,
            "diastolic": reading.diastolic,
            "heartRate": reading.heart_rate,
            "spo2": reading.spo2,
        }
        for name, value in values.items():
            low, high = PLAUSIBLE[name]
            if value is not None and not low <= value <= high:
                raise InvalidInput(f"{where}.{name}", f"{name} must be between {low} and {high}")
        if reading.diastolic >= reading.systolic:
            raise InvalidInput(f"{where}.diastolic", "diastolic must be lower than systolic")
        _require_aware(f"{where}.measuredAt", reading.measured_at)
        if problem := _timing_problem(reading, data, policy, taken):
            raise InvalidInput(f"{where}.measuredAt", problem)
        taken[reading.phase] = reading.measured_at
    if Phase.PRE not in taken:
        raise InvalidInput("readings", "a PRE reading is required: blood pressure before dosing (REMS form)")


def _timing_problem(
    reading: ClinicReading, data: ClinicSession, policy: ClinicPolicy, taken: dict[Phase, datetime]
) -> str | None:
    """Why a reading's time does not fit its phase: PRE in the `bp_reading_valid_for` before the
    start (§2), the others between start and end, the 40-minute one before the last."""
    if reading.phase is Phase.PRE:
        # The form's times are all the clinic's own, written by one provider: no clock to allow
        # for, so a PRE reading is never after the start.
        if not reading_is_current(reading.measured_at, data.started_at, policy, after_start=timedelta(0)):
            minutes = int(policy.bp_reading_valid_for.total_seconds() // 60)
            return f"a PRE reading is taken in the {minutes} minutes before startedAt"
        return None
    if not data.started_at <= reading.measured_at <= data.ended_at:
        return f"an {reading.phase.value} reading is taken between startedAt and endedAt"
    mid: datetime | None
    post: datetime | None
    if reading.phase is Phase.AT_40_MIN:
        mid, post = reading.measured_at, taken.get(Phase.POST)
    else:
        mid, post = taken.get(Phase.AT_40_MIN), reading.measured_at
    if mid is not None and post is not None and post < mid:
        return "the AT_40_MIN reading is taken before the POST one"
    return None


def _usable_plan(plan: TreatmentPlan | None) -> TreatmentPlan:
    if plan is None:
        raise Conflict("the patient has no active treatment plan: prescribe one before recording a session")
    if plan.status is PlanStatus.ON_HOLD:
        raise Conflict(
            f"the patient's treatment plan is on hold ({plan.status_reason}): resume it before recording a session"
        )
    return plan


def _dose_problem(plan: TreatmentPlan, data: ClinicSession, policy: ClinicPolicy) -> str | None:
    """CLINICAL.md §1 for a dose given in clinic; see the module docstring for weight-based plans."""
    rule = formulation_limits(plan.formulation, policy)
    if rule.unit is DoseUnit.MG:
        return dose_problem(plan.formulation, CareSetting.CLINIC, data.dose_mg, policy)
    heaviest = policy.heaviest_patient_kg
    limit = rule.maximum * heaviest
    per = "mg/kg"
    if rule.unit is DoseUnit.MG_PER_KG_PER_HOUR:
        hours = Decimal((data.ended_at - data.started_at).total_seconds()) / 3600
        limit *= hours
        per = f"mg/kg per hour over {hours:.2f} hours"
    if data.dose_mg > limit:
        return (
            f"{plan.formulation.value} is at most {rule.maximum:g} {per}: {limit:.0f} mg even for a "
            f"{heaviest} kg patient (doseMg is the total given, in mg)"
        )
    return None


async def _overlapping(patient_id: UUID, data: ClinicSession, policy: ClinicPolicy) -> DosingSession | None:
    """A counted session of the patient whose time overlaps this one (one without an end spans
    the time after which it is closed as abandoned)."""
    ended = Q(ended_at__gt=data.started_at)
    open_ended = Q(ended_at__isnull=True, started_at__gt=data.started_at - policy.abandon_after)
    counted = DosingSession.filter(patient_id=patient_id).exclude(status=SessionStatus.ENTERED_IN_ERROR)
    return await counted.filter(ended | open_ended, started_at__lt=data.ended_at).order_by("started_at").first()


def _columns(
    viewer: Viewer, plan: TreatmentPlan, data: ClinicSession, now: datetime, policy: ClinicPolicy
) -> dict[str, Any]:
    """The session as the form describes it; `ended_early` flags monitoring shorter than §3's."""
    by_phase = {reading.phase: reading for reading in data.readings}
    columns: dict[str, Any] = {
        "patient_id": plan.patient_id,  # type: ignore[attr-defined]
        "plan": plan,
        "status": SessionStatus.COMPLETED,
        "setting": CLINIC_SETTING,
        "recorded_by_id": viewer.id,
        "formulation": plan.formulation.value,
        "dose_mg": data.dose_mg,
        "lot_number": (data.lot_number or "").strip() or None,
        "monitor_name": data.monitored_by.strip(),
        "checklist": {},
        "started_at": data.started_at,
        "ended_at": data.ended_at,
        "ended_early": ended_early(data.started_at, data.ended_at, policy),
        "sedation_observed": data.sedation,
        "dissociation_observed": data.dissociation,
        "respiratory_depression": data.respiratory_depression,
        "ready_to_leave_at": data.ready_to_leave_at,
        "back_to_baseline": data.ready_to_leave_at is not None,
        "notes": kept_note(data.notes, "notes"),
        "start_received_at": now,
        "completion_received_at": now,
    }
    for phase, prefix in ((Phase.PRE, "pre"), (Phase.AT_40_MIN, "mid"), (Phase.POST, "post")):
        if (reading := by_phase.get(phase)) is not None:
            columns |= {
                f"{prefix}_systolic": reading.systolic,
                f"{prefix}_diastolic": reading.diastolic,
                f"{prefix}_measured_at": reading.measured_at,
                f"{prefix}_heart_rate": reading.heart_rate,
                f"{prefix}_spo2": reading.spo2,
            }
    return columns
