"""Dosing sessions: the pre-dose safety checks, the session record, its completion and abandonment.

The record carries what a REMS-style monitoring form asks for: dose, lot if known, pre- and
post-dose blood pressure, the treatment monitor, times and durations, the patient's ratings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models import alert_rules
from models.access import Viewer
from models.accounts import Patient, Role
from models.alert_rules import AlertSpec
from models.alerts import raise_alerts
from models.audit import AuditAction, AuditEntry, AuditOutcome, record_now, record_system
from models.base import Entity
from models.directory import require_clinical_access, treating_provider_patient
from models.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.events import Operation, record_event
from models.idempotency import Outcome, StoredRefusal, fingerprint, request_fields, run_once
from models.plans import CURRENT_STATUSES, CareSetting, PlanStatus, TreatmentPlan
from models.policy import EMERGENCY_INSTRUCTIONS, BloodPressure, ClinicPolicy
from models.safety.crisis import crisis_matches
from models.surveys import cancel_session_surveys, schedule_follow_up


class SessionStatus(StrEnum):
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    ABANDONED = "ABANDONED"
    # A record made by mistake: kept (never deleted, CLINICAL.md §12), not counted, surveys cancelled.
    ENTERED_IN_ERROR = "ENTERED_IN_ERROR"


# CLINICAL.md §2: the pre-dose checklist, asked every session, in the patient's words.
CHECKLIST: dict[str, str] = {
    "CHEST_PAIN_OR_SOB": "Do you have chest pain, a racing heart or trouble breathing right now?",
    "SEVERE_HEADACHE": "Do you have a sudden or severe headache or new weakness, numbness or trouble speaking?",
    "SUICIDAL_THOUGHTS": "Are you having thoughts of ending your life or hurting yourself?",
    "PREGNANT": "Are you pregnant, or could you be?",
    "SUBSTANCES_24H": (
        "Alcohol, cannabis, or a sedative or sleep medicine you were not told to take, in the last 24 hours?"
    ),
    "ATE_RECENTLY": "Have you eaten in the last 2 hours, or drunk anything in the last 30 minutes?",
    "UNWELL": "Fever, vomiting or feeling acutely unwell today?",
    "WILL_DRIVE": "Will you drive or operate machinery before tomorrow after a night's sleep?",
    "NEW_MEDICATION": "Started a new medication since your last session that your care team has not reviewed?",
}
_EMERGENCY_ITEMS = frozenset({"CHEST_PAIN_OR_SOB", "SEVERE_HEADACHE"})


@dataclass(frozen=True)
class FailedCheck:
    code: str
    message: str
    item: str | None = None


@dataclass(frozen=True)
class SafetyFacts:
    """Everything the pre-dose checks look at, gathered before they run."""

    now: datetime
    plan_status: PlanStatus | None
    plan_setting: CareSetting | None
    monitor_required: bool
    monitor_present: bool
    monitor_name: str | None
    blood_pressure: BloodPressure | None
    measured_at: datetime | None
    ceiling: BloodPressure
    session_in_progress: bool
    last_session_started_at: datetime | None
    min_hours_between_sessions: int
    completed_sessions: int
    planned_sessions: int | None
    answered_yes: tuple[str, ...]
    dose_mg: Decimal | None = None
    plan_dose_mg: Decimal | None = None
    # A session replayed from an offline phone may be older than one already logged.
    next_session_started_at: datetime | None = None


def failed_safety_checks(facts: SafetyFacts, policy: ClinicPolicy) -> list[FailedCheck]:
    """CLINICAL.md §2: run every pre-dose check and return all that fail, in the table's order."""
    failed: list[FailedCheck] = []
    if facts.plan_status not in CURRENT_STATUSES:
        failed.append(FailedCheck("NO_ACTIVE_PLAN", "You have no active treatment plan. Contact your care team."))
    elif facts.plan_status is PlanStatus.ON_HOLD:
        failed.append(FailedCheck("PLAN_ON_HOLD", "Your treatment plan is on hold. Your care team will contact you."))
    if facts.plan_setting is CareSetting.CLINIC:
        failed.append(FailedCheck("CLINIC_ONLY", "This treatment is given in the clinic only, not at home."))
    if facts.monitor_required and not (facts.monitor_present and (facts.monitor_name or "").strip()):
        failed.append(
            FailedCheck(
                "MONITOR_NOT_CONFIRMED",
                "Confirm that your treatment monitor (a sober adult) is with you, and give their name.",
            )
        )
    reading_is_recent = (
        facts.blood_pressure is not None
        and facts.measured_at is not None
        and facts.now - policy.bp_reading_valid_for <= facts.measured_at <= facts.now + policy.clock_skew
    )
    if not reading_is_recent:
        minutes = int(policy.bp_reading_valid_for.total_seconds() // 60)
        failed.append(
            FailedCheck("BP_MISSING", f"Take your blood pressure now: it must be from the last {minutes} minutes.")
        )
    elif facts.blood_pressure is not None and facts.blood_pressure.reaches(facts.ceiling):
        failed.append(
            FailedCheck(
                "BP_ABOVE_CEILING",
                f"Your blood pressure {facts.blood_pressure} is at or above your limit of {facts.ceiling}. "
                "Do not dose today; your care team has been told.",
            )
        )
    if facts.session_in_progress:
        failed.append(FailedCheck("SESSION_IN_PROGRESS", "You already have a session in progress: complete it first."))
    if facts.last_session_started_at is not None:
        earliest = facts.last_session_started_at + timedelta(hours=facts.min_hours_between_sessions)
        if facts.now < earliest:
            hours = (earliest - facts.now).total_seconds() / 3600
            failed.append(
                FailedCheck(
                    "TOO_SOON",
                    f"Sessions must be at least {facts.min_hours_between_sessions} hours apart: "
                    f"wait {hours:.1f} more hours.",
                )
            )
    if facts.next_session_started_at is not None:
        latest = facts.next_session_started_at - timedelta(hours=facts.min_hours_between_sessions)
        if facts.now > latest:
            hours = (facts.next_session_started_at - facts.now).total_seconds() / 3600
            failed.append(
                FailedCheck(
                    "TOO_SOON",
                    f"Sessions must be at least {facts.min_hours_between_sessions} hours apart: "
                    f"another session started {hours:.1f} hours after this one.",
                )
            )
    if facts.planned_sessions is not None and facts.completed_sessions >= facts.planned_sessions:
        failed.append(
            FailedCheck(
                "SESSIONS_USED_UP",
                f"You have completed all {facts.planned_sessions} planned sessions. Contact your care team.",
            )
        )
    if facts.dose_mg is not None and facts.plan_dose_mg is not None and facts.dose_mg > facts.plan_dose_mg:
        # Not in §2's table: a product guard rail against a mistyped or self-escalated dose.
        failed.append(
            FailedCheck(
                "DOSE_ABOVE_PLAN",
                f"The dose you entered ({facts.dose_mg.normalize():f} mg) is more than your plan's "
                f"{facts.plan_dose_mg.normalize():f} mg. Take only the prescribed dose.",
            )
        )
    for code in facts.answered_yes:
        failed.append(
            FailedCheck("CONTRAINDICATION", f"You answered yes to: {CHECKLIST[code]} Do not dose today.", code)
        )
    return failed


class SafetyCheckFailed(StoredRefusal):
    """startDosingSession refused: `checks` lists every failed check (CLINICAL.md §2)."""

    def __init__(self, checks: list[FailedCheck], advice: dict[str, Any]) -> None:
        details = {"failedChecks": [vars(check) for check in checks], "advice": advice}
        super().__init__("the session cannot start: see failedChecks", "SafetyCheckFailed", details)
        self.checks = checks
        self.advice = advice


def refusal_advice(checks: list[FailedCheck], policy: ClinicPolicy) -> dict[str, Any]:
    """What to tell a patient whose session was refused (CLINICAL.md §2 and §7)."""
    items = {check.item for check in checks if check.item}
    advice: dict[str, Any] = {}
    if items & _EMERGENCY_ITEMS:
        advice["safetyInstructions"] = EMERGENCY_INSTRUCTIONS
    elif any(check.code == "BP_ABOVE_CEILING" for check in checks):
        advice["safetyInstructions"] = (
            "Do not dose today. Sit and rest; your care team will contact you. If you have chest pain, "
            "a severe headache or trouble breathing, call 911."
        )
    if "SUICIDAL_THOUGHTS" in items:
        advice["crisisResources"] = policy.crisis_text()
    return advice


class DosingSession(Entity):
    patient: fields.ForeignKeyRelation[Patient] = fields.ForeignKeyField(
        "ketafollow.Patient", related_name="dosing_sessions", on_delete=fields.RESTRICT
    )
    plan: fields.ForeignKeyRelation[TreatmentPlan] = fields.ForeignKeyField(
        "ketafollow.TreatmentPlan", related_name="dosing_sessions", on_delete=fields.RESTRICT
    )
    status = fields.CharEnumField(SessionStatus, max_length=16)
    formulation = fields.CharField(max_length=32)
    dose_mg = fields.DecimalField(max_digits=8, decimal_places=2)
    lot_number = fields.CharField(max_length=64, null=True)
    monitor_name = fields.CharField(max_length=100, null=True)
    checklist: dict[str, bool] = fields.JSONField()
    # The device's times (`recordedAt` from an offline phone) or, without them, the server's.
    started_at = fields.DatetimeField()
    # Null only on a dose taken offline without a reading (BP_MISSING among its failedChecks).
    pre_systolic = fields.IntField(null=True)
    pre_diastolic = fields.IntField(null=True)
    pre_measured_at = fields.DatetimeField(null=True)
    pre_heart_rate = fields.IntField(null=True)
    pre_spo2 = fields.IntField(null=True)
    # A clinic session's reading at about 40 minutes (REMS monitoring form, CLINICAL.md §1).
    mid_systolic = fields.IntField(null=True)
    mid_diastolic = fields.IntField(null=True)
    mid_heart_rate = fields.IntField(null=True)
    mid_spo2 = fields.IntField(null=True)
    mid_measured_at = fields.DatetimeField(null=True)
    ended_at = fields.DatetimeField(null=True)
    post_systolic = fields.IntField(null=True)
    post_diastolic = fields.IntField(null=True)
    post_measured_at = fields.DatetimeField(null=True)
    post_heart_rate = fields.IntField(null=True)
    post_spo2 = fields.IntField(null=True)
    dissociation = fields.IntField(null=True)
    sedation = fields.IntField(null=True)
    back_to_baseline = fields.BooleanField(null=True)
    ended_early = fields.BooleanField(default=False)
    notes = fields.TextField(default="")
    version = fields.IntField(default=1)
    # When the server received the start and the completion (null on sessions logged before
    # these were kept): a session replayed from an offline phone started before it was received.
    start_received_at = fields.DatetimeField(null=True)
    completion_received_at = fields.DatetimeField(null=True)
    # AT_HOME (logged by the patient) or CLINIC (recorded by a provider of the care team, who is
    # `recorded_by_id`, with the REMS form's observations: each yes/no).
    setting = fields.CharField(max_length=16, default="AT_HOME")
    recorded_by_id = fields.UUIDField(null=True)
    sedation_observed = fields.BooleanField(null=True)
    dissociation_observed = fields.BooleanField(null=True)
    respiratory_depression = fields.BooleanField(null=True)
    ready_to_leave_at = fields.DatetimeField(null=True)
    # CLINICAL.md §2: a dose taken offline is recorded even when its checks failed; they are kept here.
    dosed_despite_failed_checks = fields.BooleanField(default=False)
    failed_checks: list[dict[str, Any]] = fields.JSONField(default=list)
    # CLINICAL.md §8: the interaction warnings shown at the start, kept as the REMS form does.
    interaction_warnings: list[dict[str, Any]] = fields.JSONField(default=list)

    class Meta:
        table = "dosing_session"
        indexes = (("patient_id", "started_at"),)

    @property
    def duration(self) -> timedelta | None:
        return self.ended_at - self.started_at if self.ended_at else None


@dataclass(frozen=True)
class BloodPressureReading:
    systolic: int
    diastolic: int
    measured_at: datetime | None = None

    @property
    def pressure(self) -> BloodPressure:
        return BloodPressure(self.systolic, self.diastolic)


@dataclass(frozen=True)
class StartSession:
    dose_mg: Decimal
    monitor_present: bool
    monitor_name: str | None
    blood_pressure: BloodPressureReading | None
    checklist: dict[str, bool]
    lot_number: str | None = None
    recorded_at: datetime | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class CompleteSession:
    session_id: UUID
    back_to_baseline: bool
    dissociation: int
    sedation: int
    ended_at: datetime | None = None
    blood_pressure: BloodPressureReading | None = None
    notes: str = ""
    recorded_at: datetime | None = None
    idempotency_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def validate_reading(
    reading: BloodPressureReading | None, field_name: str, now: datetime, policy: ClinicPolicy
) -> None:
    """Numbers a cuff can show, and not taken in the future."""
    if reading is None:
        return
    if not 60 <= reading.systolic <= 300 or not 30 <= reading.diastolic <= 200:
        raise InvalidInput(field_name, "blood pressure must be systolic 60-300 and diastolic 30-200 mmHg")
    if reading.diastolic >= reading.systolic:
        raise InvalidInput(field_name, "diastolic must be lower than systolic")
    if reading.measured_at is not None and reading.measured_at > now + policy.clock_skew:
        raise InvalidInput(field_name, "measuredAt is in the future")


def _require_patient(viewer: Viewer) -> UUID:
    if not viewer.is_role(Role.PATIENT) or viewer.patient_id is None:
        raise Forbidden("dosing sessions are logged by the patient")
    return viewer.patient_id


def _validate_start(data: StartSession, now: datetime, policy: ClinicPolicy) -> tuple[str, ...]:
    if not Decimal(0) < data.dose_mg <= Decimal(800):
        raise InvalidInput("doseMg", "doseMg must be more than 0 and at most 800")
    unknown = sorted(set(data.checklist) - set(CHECKLIST))
    if unknown:
        raise InvalidInput("checklist", f"unknown checklist items: {', '.join(unknown)}")
    missing = [code for code in CHECKLIST if code not in data.checklist]
    if missing:
        raise InvalidInput("checklist", f"answer every checklist item; missing: {', '.join(missing)}")
    if data.monitor_name is not None and len(data.monitor_name) > 100:
        raise InvalidInput("monitorName", "monitorName must be at most 100 characters")
    if data.lot_number is not None and len(data.lot_number) > 64:
        raise InvalidInput("lotNumber", "lotNumber must be at most 64 characters")
    validate_reading(data.blood_pressure, "bloodPressure", now, policy)
    if data.recorded_at is not None and (problem := policy.device_time_problem("recordedAt", data.recorded_at, now)):
        raise InvalidInput("recordedAt", problem)
    return tuple(code for code in CHECKLIST if data.checklist[code])


async def _facts(
    patient: Patient,
    plan: TreatmentPlan | None,
    data: StartSession,
    answered_yes: tuple[str, ...],
    started_at: datetime,
    policy: ClinicPolicy,
) -> SafetyFacts:
    """The facts as they were when the session started (the device's time, for a replayed one)."""
    sessions = DosingSession.filter(patient_id=patient.id)
    counted = sessions.exclude(status=SessionStatus.ENTERED_IN_ERROR)
    last = await counted.filter(started_at__lte=started_at).order_by("-started_at").first()
    following = await counted.filter(started_at__gt=started_at).order_by("started_at").first()
    completed = await sessions.filter(plan_id=plan.id, status=SessionStatus.COMPLETED).count() if plan else 0
    reading = data.blood_pressure
    return SafetyFacts(
        now=started_at,
        plan_status=plan.status if plan else None,
        plan_setting=plan.setting if plan else None,
        monitor_required=plan.monitor_required if plan else True,
        monitor_present=data.monitor_present,
        monitor_name=data.monitor_name,
        blood_pressure=reading.pressure if reading else None,
        measured_at=reading.measured_at if reading else None,
        ceiling=plan.bp_ceiling if plan else policy.default_bp_ceiling,
        session_in_progress=await sessions.filter(status=SessionStatus.IN_PROGRESS).exists(),
        last_session_started_at=last.started_at if last else None,
        min_hours_between_sessions=plan.min_hours_between_sessions if plan else 0,
        completed_sessions=completed,
        planned_sessions=plan.planned_sessions if plan else None,
        answered_yes=answered_yes,
        dose_mg=data.dose_mg,
        plan_dose_mg=plan.dose if plan else None,
        next_session_started_at=following.started_at if following else None,
    )


async def start_dosing_session(viewer: Viewer, data: StartSession, *, now: datetime, policy: ClinicPolicy) -> Outcome:
    """Run the pre-dose checks (CLINICAL.md §2) and start the session, or refuse listing every
    failed check. A refusal still raises the alerts it calls for and is kept under its key.

    A start replayed from an offline phone (`recorded_at`) is checked as of the device's time:
    the reading must be from the 30 minutes before it, the interval is counted from it, and it
    becomes the session's start; alerts and the audit carry the server's time."""
    patient_id = _require_patient(viewer)
    answered_yes = _validate_start(data, now, policy)
    request = request_fields(data)  # as sent: a retry matches it whenever it comes
    started_at = data.recorded_at or now
    if data.blood_pressure is not None and data.blood_pressure.measured_at is None:
        # A reading sent without its time was taken as the session started: checked (and alerts) as such.
        data = replace(data, blood_pressure=replace(data.blood_pressure, measured_at=started_at))

    async def write() -> Outcome:
        async with in_transaction():
            patient = await Patient.get(id=patient_id)
            plan = (
                await TreatmentPlan.filter(patient_id=patient_id, status__in=CURRENT_STATUSES)
                .select_for_update()
                .first()
            )
            facts = await _facts(patient, plan, data, answered_yes, started_at, policy)
            failures = failed_safety_checks(facts, policy)
            if failures:
                await _refused(viewer, patient, plan, data, answered_yes, failures, now=now, policy=policy)
                refusal: SafetyCheckFailed | None = SafetyCheckFailed(failures, refusal_advice(failures, policy))
            else:
                refusal = None
                session = await _open_session(viewer, patient, plan, data, started_at, now)
        if refusal is not None:
            raise refusal
        return Outcome(session.id)

    try:
        return await run_once(viewer, "startDosingSession", data.idempotency_key, request, write, now=now)
    except IntegrityError as error:  # the one-session-in-progress index settled a race
        raise Conflict("you already have a session in progress: complete it first") from error


async def _refused(
    viewer: Viewer,
    patient: Patient,
    plan: TreatmentPlan | None,
    data: StartSession,
    answered_yes: tuple[str, ...],
    failures: list[FailedCheck],
    *,
    now: datetime,
    policy: ClinicPolicy,
) -> None:
    """The alerts and the audit row of a refused start (inside its transaction)."""
    specs = alert_rules.checklist_alerts(list(answered_yes))
    if data.blood_pressure is not None and any(failure.code == "BP_ABOVE_CEILING" for failure in failures):
        ceiling = plan.bp_ceiling if plan else policy.default_bp_ceiling
        if spec := alert_rules.pre_dose_blood_pressure_alert(data.blood_pressure.pressure, ceiling):
            specs.insert(0, spec)
    await raise_alerts(
        specs, patient=patient, source_type="DoseAttempt", source_id=_attempt_id(patient.id, data, now), now=now
    )
    codes = ",".join(failure.code for failure in failures)[:200]
    entry = AuditEntry(AuditAction.EXECUTE, "DosingSession", AuditOutcome.DENIED, patient.id, None, codes)
    await record_now(viewer, entry, now=now, trail=viewer.audit)


async def _open_session(
    viewer: Viewer, patient: Patient, plan: TreatmentPlan | None, data: StartSession, started_at: datetime,
    now: datetime,
) -> DosingSession:  # fmt: skip
    reading = data.blood_pressure
    # Every check passed, so there is a current plan and a recent reading.
    assert plan is not None and reading is not None and reading.measured_at is not None
    session = await DosingSession.create(
        patient=patient,
        plan=plan,
        status=SessionStatus.IN_PROGRESS,
        formulation=plan.formulation.value,
        dose_mg=data.dose_mg,
        lot_number=(data.lot_number or "").strip() or None,
        monitor_name=(data.monitor_name or "").strip() or None,
        checklist=dict(data.checklist),
        started_at=started_at,
        pre_systolic=reading.systolic,
        pre_diastolic=reading.diastolic,
        pre_measured_at=reading.measured_at,
        start_received_at=now,
    )
    await _session_written(viewer, session, "DosingSession.started", Operation.CREATED, now)
    return session


ATTEMPT_WINDOW = timedelta(minutes=10)


def _attempt_id(patient_id: UUID, data: Any, now: datetime) -> UUID:
    """One id per distinct attempt: the same request repeated within 10 minutes (a retry
    without a key) raises its alerts once; anything else is a new attempt with new alerts."""
    bucket = int(now.timestamp() // ATTEMPT_WINDOW.total_seconds())
    return uuid5(NAMESPACE_URL, f"attempt:{patient_id}:{fingerprint(request_fields(data))}:{bucket}")


async def _session_written(
    viewer: Viewer | None, session: DosingSession, event: str, operation: Operation, now: datetime
) -> None:
    patient_id: UUID = session.patient_id  # type: ignore[attr-defined]
    await record_event(
        event,
        resource_type="DosingSession",
        resource_id=session.id,
        operation=operation,
        version=session.version,
        now=now,
        patient_id=patient_id,
        payload={
            "status": session.status.value,
            "endedAt": session.ended_at.isoformat() if session.ended_at else None,
        },
    )
    action = AuditAction.CREATE if operation is Operation.CREATED else AuditAction.UPDATE
    entry = AuditEntry(action, "DosingSession", AuditOutcome.SUCCESS, patient_id, str(session.id), event)
    if viewer is None:
        await record_system(entry, now=now)
    else:
        await record_now(viewer, entry, now=now, trail=viewer.audit)


def _validate_completion(
    data: CompleteSession, session: DosingSession, now: datetime, policy: ClinicPolicy
) -> datetime:
    if data.recorded_at is not None and (problem := policy.device_time_problem("recordedAt", data.recorded_at, now)):
        raise InvalidInput("recordedAt", problem)
    ended_at = data.ended_at or data.recorded_at or now
    if problem := policy.device_time_problem("endedAt", ended_at, now):
        raise InvalidInput("endedAt", problem)
    if data.recorded_at is not None and ended_at > data.recorded_at + policy.clock_skew:
        raise InvalidInput("endedAt", "endedAt is after recordedAt, the time the phone logged the end")
    if ended_at < session.started_at:
        raise InvalidInput("endedAt", "endedAt is before the session started")
    if ended_at - session.started_at < policy.minimum_monitoring and not data.back_to_baseline:
        hours = policy.minimum_monitoring.total_seconds() / 3600
        raise InvalidInput(
            "endedAt",
            f"stay with your monitor for at least {hours:g} hours after dosing, until you feel like yourself",
        )
    for name, value in (("dissociation", data.dissociation), ("sedation", data.sedation)):
        if not 0 <= value <= 10:
            raise InvalidInput(name, f"{name} must be between 0 and 10")
    if len(data.notes) > 2000:
        raise InvalidInput("notes", "notes must be at most 2000 characters")
    validate_reading(data.blood_pressure, "bloodPressure", now, policy)
    return ended_at


def _completion_alerts(data: CompleteSession, policy: ClinicPolicy) -> tuple[list[AlertSpec], dict[str, Any]]:
    """What the patient's own completion report calls for (CLINICAL.md §3, §7), and the advice."""
    reading = data.blood_pressure
    matches = crisis_matches(data.notes, policy.crisis_phrases)
    blood_pressure = alert_rules.post_dose_blood_pressure_alert(reading.pressure if reading else None, policy)
    crisis = alert_rules.crisis_language_alert(matches, "session notes")
    advice: dict[str, Any] = {}
    if blood_pressure is not None and blood_pressure.severity is alert_rules.Severity.URGENT:
        advice["safetyInstructions"] = EMERGENCY_INSTRUCTIONS
    if matches:
        advice["crisisResources"] = policy.crisis_text()
    return [spec for spec in (blood_pressure, crisis) if spec is not None], advice


async def complete_dosing_session(
    viewer: Viewer, data: CompleteSession, *, now: datetime, policy: ClinicPolicy
) -> Outcome:
    """Close a session (CLINICAL.md §3): post-dose readings, ratings, alerts; the follow-up
    surveys are scheduled in the same transaction. A dangerous reading or crisis wording alerts
    the care team even when the completion itself is refused (late, too early, not found)."""
    patient_id = _require_patient(viewer)
    urgent, advice = _completion_alerts(data, policy)
    try:
        return await _complete(viewer, patient_id, data, urgent, advice, now=now, policy=policy)
    except (Conflict, InvalidInput, NotFound) as refusal:
        if urgent:
            async with in_transaction():
                patient = await Patient.get(id=patient_id)
                attempt = _attempt_id(patient_id, data, now)
                await raise_alerts(urgent, patient=patient, source_type="CompletionAttempt", source_id=attempt, now=now)
            refusal.advice.update(advice)
        raise


async def _complete(
    viewer: Viewer,
    patient_id: UUID,
    data: CompleteSession,
    urgent: list[AlertSpec],
    advice: dict[str, Any],
    *,
    now: datetime,
    policy: ClinicPolicy,
) -> Outcome:
    session = await DosingSession.get_or_none(id=data.session_id, patient_id=patient_id)
    if session is None:
        raise NotFound("dosing session")

    async def write() -> Outcome:
        async with in_transaction():
            current = await DosingSession.filter(id=session.id).select_for_update().first()
            assert current is not None
            if current.status is not SessionStatus.IN_PROGRESS:
                raise Conflict(f"the session is already {current.status.value.lower().replace('_', ' ')}")
            ended_at = _validate_completion(data, current, now, policy)
            reading = data.blood_pressure
            current.status = SessionStatus.COMPLETED
            current.ended_at = ended_at
            current.ended_early = ended_at - current.started_at < policy.minimum_monitoring
            current.post_systolic = reading.systolic if reading else None
            current.post_diastolic = reading.diastolic if reading else None
            current.post_measured_at = (reading.measured_at or ended_at) if reading else None
            current.dissociation, current.sedation = data.dissociation, data.sedation
            current.back_to_baseline = data.back_to_baseline
            current.notes = data.notes.strip()
            current.completion_received_at = now
            current.version += 1
            await current.save()
            patient = await Patient.get(id=patient_id)
            baseline = alert_rules.not_back_to_baseline_alert(data.back_to_baseline)
            specs = [*urgent, *([baseline] if baseline else [])]
            await raise_alerts(specs, patient=patient, source_type="DosingSession", source_id=current.id, now=now)
            plan = await TreatmentPlan.get(id=current.plan_id)  # type: ignore[attr-defined]
            await schedule_follow_up(
                patient, current.id, ended_at, plan.schedule, back_to_baseline=data.back_to_baseline, now=now
            )
            await _session_written(viewer, current, "DosingSession.completed", Operation.UPDATED, now)
        return Outcome(current.id, advice)

    return await run_once(viewer, "completeDosingSession", data.idempotency_key, request_fields(data), write, now=now)


async def void_dosing_session(viewer: Viewer, session_id: UUID, reason: str, *, now: datetime) -> DosingSession:
    """A provider of the patient's care team marks a session entered in error (CLINICAL.md §12:
    corrections never delete). Its follow-up surveys not yet answered are cancelled (§6)."""
    if not viewer.is_role(Role.PROVIDER):
        raise Forbidden("only the patient's providers may void a session")
    cleaned = " ".join(reason.split())
    if not cleaned or len(cleaned) > 500:
        raise InvalidInput("reason", "say why the session is void (1 to 500 characters)")
    session = await DosingSession.get_or_none(id=session_id)
    if session is None:
        raise NotFound("dosing session")
    await treating_provider_patient(viewer, session.patient_id)  # type: ignore[attr-defined]
    async with in_transaction():
        current = await DosingSession.filter(id=session_id).select_for_update().first()
        assert current is not None
        if current.status is SessionStatus.ENTERED_IN_ERROR:
            return current
        if current.status is SessionStatus.IN_PROGRESS:
            raise Conflict("a session in progress cannot be voided: complete it first")
        current.status = SessionStatus.ENTERED_IN_ERROR
        current.notes = f"{current.notes}\n[entered in error: {cleaned}]".strip()
        current.version += 1
        await current.save(update_fields=["status", "notes", "version", "updated_at"])
        await cancel_session_surveys(current.id, now=now)
        await _session_written(viewer, current, "DosingSession.voided", Operation.UPDATED, now)
    return current


async def close_abandoned_sessions(*, now: datetime, policy: ClinicPolicy) -> int:
    """Job: sessions still IN_PROGRESS past the limit become ABANDONED, each with a HIGH alert
    for the care team (CLINICAL.md §3). Each is claimed with a conditional update.

    A start replayed from an offline phone may already be past the limit when it arrives; its
    completion follows in the same queue, so it is left alone for `policy.replay_grace` after
    it was received."""
    cutoff = now - policy.abandon_after
    received = Q(start_received_at__isnull=True) | Q(start_received_at__lte=now - policy.replay_grace)
    closed = 0
    for session in await DosingSession.filter(received, status=SessionStatus.IN_PROGRESS, started_at__lte=cutoff):
        async with in_transaction():
            claimed = await DosingSession.filter(id=session.id, status=SessionStatus.IN_PROGRESS).update(
                status=SessionStatus.ABANDONED, version=session.version + 1, updated_at=now
            )
            if claimed != 1:
                continue
            session.status, session.version = SessionStatus.ABANDONED, session.version + 1
            patient = await Patient.get(id=session.patient_id)  # type: ignore[attr-defined]
            spec = alert_rules.abandoned_session_alert(policy.abandon_after.total_seconds() / 3600)
            await raise_alerts([spec], patient=patient, source_type="DosingSession", source_id=session.id, now=now)
            await _session_written(None, session, "DosingSession.abandoned", Operation.UPDATED, now)
            closed += 1
    return closed


async def get_session(viewer: Viewer, session_id: UUID) -> DosingSession:
    session = await DosingSession.get_or_none(id=session_id)
    if session is None:
        raise NotFound("dosing session")
    await require_clinical_access(viewer, session.patient_id, "DosingSession")  # type: ignore[attr-defined]
    return session


async def list_sessions(
    viewer: Viewer, patient_id: UUID, *, limit: int, before: tuple[datetime, UUID] | None = None
) -> list[DosingSession]:
    """A patient's sessions, newest first."""
    await require_clinical_access(viewer, patient_id, "DosingSession")
    query = DosingSession.filter(patient_id=patient_id)
    if before is not None:
        query = query.filter(Q(started_at__lt=before[0]) | Q(started_at=before[0], id__lt=before[1]))
    return list(await query.order_by("-started_at", "-id").limit(limit))
