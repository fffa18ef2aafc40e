"""Dosing sessions: the pre-dose safety checks, the session record, its completion and abandonment.

The record carries what a REMS-style monitoring form asks for: dose, lot if known, pre- and
post-dose blood pressure, the treatment monitor, times and durations, the patient's ratings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models.alerts import alert_rules
from models.alerts.alerts import raise_alerts
from models.care.dosing_records import DosingSession, SessionStatus
from models.care.medications import start_warnings
from models.care.plan_records import CURRENT_STATUSES, CareSetting, PlanStatus, TreatmentPlan
from models.identity.access import Viewer
from models.identity.accounts import Patient, Role
from models.identity.directory import require_clinical_access, require_clinical_record, treating_provider_patient
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, denied, record_now, record_system
from models.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.kernel.events import Operation, record_event
from models.kernel.idempotency import Outcome, StoredRefusal, request_fields, run_once
from models.kernel.policy import BloodPressure, ClinicPolicy
from models.outcomes.opioids import InteractionWarning
from models.safety.rules import Findings, Phase, crisis_findings, reading_findings
from models.safety.screen import Action, Submission, screen
from models.surveys.surveys import cancel_session_surveys, open_post_session_check_now, schedule_follow_up

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


def refusal_advice(checks: list[FailedCheck]) -> dict[str, Any]:
    """What to tell a patient whose session was refused for a high reading (CLINICAL.md §2). The
    emergency instructions and crisis resources that a checklist answer or a reading calls for
    come from the safety screen, and win over this."""
    if any(check.code == "BP_ABOVE_CEILING" for check in checks):
        return {
            "safetyInstructions": "Do not dose today. Sit and rest; your care team will contact you. "
            "If you have chest pain, a severe headache or trouble breathing, call 911."
        }
    return {}


@dataclass(frozen=True)
class BloodPressureReading:
    systolic: int
    diastolic: int
    measured_at: datetime | None = None
    heart_rate: int | None = None
    spo2: int | None = None

    @property
    def pressure(self) -> BloodPressure:
        return BloodPressure(self.systolic, self.diastolic)

    def __str__(self) -> str:
        # How a reading enters an idempotency fingerprint: heart rate and SpO2 came later, so a
        # reading without them reads as it did before (a retry across the upgrade still matches).
        extra = (
            ""
            if self.heart_rate is None and self.spo2 is None
            else f", heart_rate={self.heart_rate!r}, spo2={self.spo2!r}"
        )
        return (
            f"BloodPressureReading(systolic={self.systolic!r}, diastolic={self.diastolic!r}, "
            f"measured_at={self.measured_at!r}{extra})"
        )


@dataclass(frozen=True)
class StartSession:
    dose_mg: Decimal
    monitor_present: bool
    monitor_name: str | None
    blood_pressure: BloodPressureReading | None
    # The checklist as sent, (code, answer) in order: an item sent twice is refused, but a "yes"
    # in it is screened first (CLINICAL.md §0).
    checklist: tuple[tuple[str, bool], ...]
    lot_number: str | None = None
    recorded_at: datetime | None = None
    idempotency_key: str | None = None
    # Input the API could not read (a time without its offset): refused after the screen.
    problems: tuple[InvalidInput, ...] = ()

    @property
    def answered_yes(self) -> tuple[str, ...]:
        """The known checklist items answered "yes" anywhere in the request, in checklist order."""
        yes = {code for code, answer in self.checklist if answer}
        return tuple(code for code in CHECKLIST if code in yes)


@dataclass(frozen=True)
class CompleteSession:
    session_id: UUID | None
    back_to_baseline: bool
    dissociation: int
    sedation: int
    ended_at: datetime | None = None
    blood_pressure: BloodPressureReading | None = None
    notes: str = ""
    recorded_at: datetime | None = None
    idempotency_key: str | None = None
    problems: tuple[InvalidInput, ...] = ()


def validate_reading(
    reading: BloodPressureReading | None, field_name: str, now: datetime, policy: ClinicPolicy
) -> None:
    """Numbers a cuff and a pulse oximeter can show, and not taken in the future."""
    if reading is None:
        return
    if not 60 <= reading.systolic <= 300 or not 30 <= reading.diastolic <= 200:
        raise InvalidInput(field_name, "blood pressure must be systolic 60-300 and diastolic 30-200 mmHg")
    if reading.diastolic >= reading.systolic:
        raise InvalidInput(field_name, "diastolic must be lower than systolic")
    if reading.heart_rate is not None and not 20 <= reading.heart_rate <= 250:
        raise InvalidInput(f"{field_name}.heartRate", "heart rate must be 20-250 beats per minute")
    if reading.spo2 is not None and not 50 <= reading.spo2 <= 100:
        raise InvalidInput(f"{field_name}.spo2", "SpO2 must be 50-100 %")
    if reading.measured_at is not None and reading.measured_at.tzinfo is None:
        raise InvalidInput(f"{field_name}.measuredAt", "measuredAt must include a time zone offset")
    if reading.measured_at is not None and reading.measured_at > now + policy.clock_skew:
        raise InvalidInput(field_name, "measuredAt is in the future")


def _require_patient(viewer: Viewer, action: AuditAction) -> UUID:
    if not viewer.is_role(Role.PATIENT) or viewer.patient_id is None:
        raise denied(viewer, Forbidden("dosing sessions are logged by the patient"), action, "DosingSession")
    return viewer.patient_id


def _reading_content(reading: BloodPressureReading | None) -> dict[str, Any] | None:
    if reading is None:
        return None
    return {
        "systolic": reading.systolic,
        "diastolic": reading.diastolic,
        "heartRate": reading.heart_rate,
        "spo2": reading.spo2,
        "measuredAt": reading.measured_at.isoformat() if reading.measured_at else None,
    }


def _reading_findings(
    reading: BloodPressureReading | None, phase: Phase, policy: ClinicPolicy, ceiling: BloodPressure | None = None
) -> Findings:
    if reading is None:
        return Findings()
    return reading_findings(
        phase, policy, systolic=reading.systolic, diastolic=reading.diastolic, spo2=reading.spo2, ceiling=ceiling
    )


def start_findings(data: StartSession, ceiling: BloodPressure, policy: ClinicPolicy) -> Findings:
    """CLINICAL.md §0 and §2: what a start's content calls for, whatever else is wrong with it: each
    "yes" on the checklist that §2 marks with an alert (emergency instructions for chest pain or a
    severe headache, crisis resources for suicidal thoughts), and the pre-dose reading's values."""
    findings = Findings()
    yes = data.answered_yes
    for spec in alert_rules.checklist_alerts(list(yes)):
        findings.add(spec)
    findings.add(None, emergency=bool(set(yes) & _EMERGENCY_ITEMS))
    if "SUICIDAL_THOUGHTS" in yes:
        findings.add(None, crisis_resources=policy.crisis_text())
    findings.merge(_reading_findings(data.blood_pressure, Phase.PRE, policy, ceiling))
    return findings


def _validate_start(data: StartSession, now: datetime, policy: ClinicPolicy) -> tuple[str, ...]:
    if data.problems:
        raise data.problems[0]
    if not Decimal(0) < data.dose_mg <= Decimal(800):
        raise InvalidInput("doseMg", "doseMg must be more than 0 and at most 800")
    codes = [code for code, _ in data.checklist]
    repeated = sorted({code for code in codes if codes.count(code) > 1})
    if repeated:
        raise InvalidInput("checklist", f"each item once; repeated: {', '.join(repeated)}")
    unknown = sorted(set(codes) - set(CHECKLIST))
    if unknown:
        raise InvalidInput("checklist", f"unknown checklist items: {', '.join(unknown)}")
    missing = [code for code in CHECKLIST if code not in codes]
    if missing:
        raise InvalidInput("checklist", f"answer every checklist item; missing: {', '.join(missing)}")
    if data.monitor_name is not None and len(data.monitor_name) > 100:
        raise InvalidInput("monitorName", "monitorName must be at most 100 characters")
    if data.lot_number is not None and len(data.lot_number) > 64:
        raise InvalidInput("lotNumber", "lotNumber must be at most 64 characters")
    validate_reading(data.blood_pressure, "bloodPressure", now, policy)
    if data.recorded_at is not None and (problem := policy.device_time_problem("recordedAt", data.recorded_at, now)):
        raise InvalidInput("recordedAt", problem)
    return data.answered_yes


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


def dose_taken_offline(data: StartSession, now: datetime, policy: ClinicPolicy) -> bool:
    """CLINICAL.md §2: a start replayed from an offline phone, its `recordedAt` more than
    `offline_dose_after` (10 minutes) before the server received it, describes a dose already taken."""
    return data.recorded_at is not None and now - data.recorded_at > policy.offline_dose_after


async def start_dosing_session(viewer: Viewer, data: StartSession, *, now: datetime, policy: ClinicPolicy) -> Outcome:
    """Run the pre-dose checks (CLINICAL.md §2) and start the session, or refuse listing every
    failed check. The request is screened first (§0): a "yes" on the checklist or a dangerous
    reading raises its alert and returns its advice whatever else is wrong with it.

    A start replayed from an offline phone (`recorded_at`) is checked as of the device's time:
    the reading must be from the 30 minutes before it, the interval is counted from it, and it
    becomes the session's start; alerts and the audit carry the server's time. When its checks
    fail it is recorded all the same, with the failed checks, and alerts the care team (§2)."""
    patient_id = _require_patient(viewer, AuditAction.CREATE)
    plan = await TreatmentPlan.filter(patient_id=patient_id, status__in=CURRENT_STATUSES).first()
    ceiling = plan.bp_ceiling if plan else policy.default_bp_ceiling
    content = {"answeredYes": list(data.answered_yes), "bloodPressure": _reading_content(data.blood_pressure)}
    submission = Submission(
        "startDosingSession", patient_id, content, start_findings(data, ceiling, policy),
        idempotency_key=data.idempotency_key, recorded_at=data.recorded_at,
    )  # fmt: skip
    screened = await screen(submission, now=now, policy=policy)
    return await screened.guard(_start(viewer, patient_id, data, now=now, policy=policy), record_type="DosingSession")


@dataclass(frozen=True)
class StartedSession:
    """What `startDosingSession` answers with: the write's outcome, the session, and the CLINICAL.md §8
    warnings kept on it when it started (`start_warnings`; a retry answers with the same ones)."""

    outcome: Outcome
    session: DosingSession
    warnings: tuple[InteractionWarning, ...]


async def start_session_with_warnings(
    viewer: Viewer, data: StartSession, *, now: datetime, policy: ClinicPolicy
) -> StartedSession:
    """`start_dosing_session`, then the session as the viewer may read it, with its §8 warnings."""
    outcome = await start_dosing_session(viewer, data, now=now, policy=policy)
    session = await get_session(viewer, outcome.resource_id)
    warnings = tuple(InteractionWarning(kept["code"], kept["message"]) for kept in session.interaction_warnings)
    return StartedSession(outcome, session, warnings)


async def _start(
    viewer: Viewer, patient_id: UUID, data: StartSession, *, now: datetime, policy: ClinicPolicy
) -> Outcome:
    answered_yes = _validate_start(data, now, policy)
    # As sent: a retry matches it whenever it comes (the checklist as the mapping it always was).
    request = {**request_fields(data), "checklist": dict(data.checklist)}
    started_at = data.recorded_at or now
    offline = dose_taken_offline(data, now, policy)

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
            refusal: SafetyCheckFailed | None = None
            if not failures:
                session = await _open_session(viewer, patient, plan, data, started_at, now, failed=[], policy=policy)
            elif offline and (
                recorded := await _record_dose_taken_offline(
                    viewer, patient, plan, data, failures, started_at, now, policy
                )
            ):
                session = recorded
            else:
                await _refused(viewer, patient, failures, now=now)
                refusal = SafetyCheckFailed(failures, refusal_advice(failures))
        if refusal is not None:
            raise refusal
        return Outcome(session.id)

    try:
        return await run_once(viewer, "startDosingSession", data.idempotency_key, request, write, now=now)
    except IntegrityError as error:  # the one-session-in-progress index settled a race
        raise Conflict("you already have a session in progress: complete it first") from error


async def _refused(viewer: Viewer, patient: Patient, failures: list[FailedCheck], *, now: datetime) -> None:
    """The audit row of a refused start (inside its transaction); its alerts were raised by the screen."""
    codes = ",".join(failure.code for failure in failures)[:200]
    entry = AuditEntry(AuditAction.EXECUTE, "DosingSession", AuditOutcome.DENIED, patient.id, None, codes)
    await record_now(viewer, entry, now=now, trail=viewer.audit)


# A dose taken offline cannot become a session in progress while another one is (one at a time).
_CANNOT_RECORD = frozenset({"SESSION_IN_PROGRESS"})


async def _record_dose_taken_offline(
    viewer: Viewer,
    patient: Patient,
    plan: TreatmentPlan | None,
    data: StartSession,
    failures: list[FailedCheck],
    started_at: datetime,
    now: datetime,
    policy: ClinicPolicy,
) -> DosingSession | None:
    """CLINICAL.md §2, a dose taken offline: recorded despite its failed checks, which are kept on
    the session, with a DOSED_DESPITE_FAILED_CHECKS alert. None when it cannot be recorded (no
    plan ever, or another session in progress): it is then refused, and still alerts."""
    urgent = alert_rules.failed_checks_are_urgent(
        [failure.item for failure in failures if failure.item],
        data.blood_pressure.pressure if data.blood_pressure else None,
        policy.pre_dose_urgent,
    )
    codes = [failure.code for failure in failures]
    record_plan = plan or await TreatmentPlan.filter(patient_id=patient.id).order_by("-created_at").first()
    if record_plan is None or _CANNOT_RECORD & set(codes):
        spec = alert_rules.dosed_despite_failed_checks_alert(codes, urgent=urgent, recorded=False)
        attempt = uuid5(NAMESPACE_URL, f"offline-dose:{patient.id}:{started_at.isoformat()}")
        await raise_alerts(
            [spec], patient=patient, source_type="OfflineDose", source_id=attempt, now=now, policy=policy
        )
        return None
    session = await _open_session(viewer, patient, record_plan, data, started_at, now, failed=failures, policy=policy)
    spec = alert_rules.dosed_despite_failed_checks_alert(codes, urgent=urgent, recorded=True)
    await raise_alerts(
        [spec], patient=patient, source_type="DosingSession", source_id=session.id, now=now, policy=policy
    )
    return session


async def _open_session(
    viewer: Viewer, patient: Patient, plan: TreatmentPlan | None, data: StartSession, started_at: datetime,
    now: datetime, *, failed: list[FailedCheck], policy: ClinicPolicy,
) -> DosingSession:  # fmt: skip
    reading = data.blood_pressure
    # Every check passed (so there is a current plan and a recent reading), or the dose was taken
    # offline despite the checks in `failed` (its plan is the one it was taken under).
    assert plan is not None
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
        pre_systolic=reading.systolic if reading else None,
        pre_diastolic=reading.diastolic if reading else None,
        pre_measured_at=reading.measured_at if reading else None,
        pre_heart_rate=reading.heart_rate if reading else None,
        pre_spo2=reading.spo2 if reading else None,
        start_received_at=now,
        dosed_despite_failed_checks=bool(failed),
        failed_checks=[vars(check) for check in failed],
        interaction_warnings=[vars(warning) for warning in await start_warnings(plan, started_at, policy=policy)],
    )
    await _session_written(viewer, session, "DosingSession.started", Operation.CREATED, now)
    return session


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


NOT_BACK_TO_BASELINE_ADVICE = (
    "Stay with your treatment monitor until you feel like yourself; do not drive. Your care team has been "
    "told and will check on you. If you feel unsafe or unwell, call 911."
)


def completion_findings(data: CompleteSession, policy: ClinicPolicy) -> Findings:
    """CLINICAL.md §0, §3 and §7: what a completion's content calls for, whatever else is wrong
    with it: the post-dose reading, crisis wording in the notes, and not being back to baseline."""
    findings = _reading_findings(data.blood_pressure, Phase.POST, policy)
    findings.merge(crisis_findings(data.notes, "session notes", policy))
    if not data.back_to_baseline:
        findings.add(alert_rules.not_back_to_baseline_alert(data.back_to_baseline))
        findings.advice.setdefault("safetyInstructions", NOT_BACK_TO_BASELINE_ADVICE)
    return findings


async def complete_dosing_session(
    viewer: Viewer, data: CompleteSession, *, now: datetime, policy: ClinicPolicy
) -> Outcome:
    """Close a session (CLINICAL.md §3): post-dose readings, ratings; the follow-up surveys are
    scheduled in the same transaction. The request is screened first (§0): a dangerous reading,
    crisis wording or "not back to baseline" alerts the care team even when the completion itself
    is refused (too early, late, not found), and "not back to baseline" makes the post-session
    check due at once."""
    patient_id = _require_patient(viewer, AuditAction.UPDATE)
    session = await DosingSession.get_or_none(id=data.session_id, patient_id=patient_id) if data.session_id else None
    actions: list[Action] = []
    if not data.back_to_baseline and session is not None and session.status is SessionStatus.IN_PROGRESS:
        session_id = session.id

        async def check_now(patient: Patient) -> None:
            await open_post_session_check_now(patient, session_id=session_id, now=now, policy=policy)

        actions.append(check_now)
    content = {
        "sessionId": str(data.session_id) if data.session_id else None,
        "backToBaseline": data.back_to_baseline,
        "bloodPressure": _reading_content(data.blood_pressure),
        "notes": data.notes,
    }
    submission = Submission(
        "completeDosingSession", patient_id, content, completion_findings(data, policy),
        idempotency_key=data.idempotency_key, recorded_at=data.recorded_at, actions=actions,
    )  # fmt: skip
    screened = await screen(submission, now=now, policy=policy)
    return await screened.guard(
        _complete(viewer, patient_id, data, now=now, policy=policy), record_type="DosingSession"
    )


async def _complete(
    viewer: Viewer, patient_id: UUID, data: CompleteSession, *, now: datetime, policy: ClinicPolicy
) -> Outcome:
    if data.problems:
        raise data.problems[0]
    session = await DosingSession.get_or_none(id=data.session_id, patient_id=patient_id)
    if session is None:  # another patient's or none at all: one answer, audited
        refusal = NotFound("dosing session")
        raise denied(viewer, refusal, AuditAction.UPDATE, "DosingSession", resource_id=data.session_id)

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
            current.post_heart_rate = reading.heart_rate if reading else None
            current.post_spo2 = reading.spo2 if reading else None
            current.dissociation, current.sedation = data.dissociation, data.sedation
            current.back_to_baseline = data.back_to_baseline
            current.notes = data.notes.strip()
            current.completion_received_at = now
            current.version += 1
            await current.save()
            patient = await Patient.get(id=patient_id)
            plan = await TreatmentPlan.get(id=current.plan_id)  # type: ignore[attr-defined]
            await schedule_follow_up(
                patient, current.id, ended_at, plan.schedule, back_to_baseline=data.back_to_baseline, now=now,
                policy=policy,
            )  # fmt: skip
            await _session_written(viewer, current, "DosingSession.completed", Operation.UPDATED, now)
        return Outcome(current.id)

    return await run_once(viewer, "completeDosingSession", data.idempotency_key, request_fields(data), write, now=now)


async def void_dosing_session(viewer: Viewer, session_id: UUID, reason: str, *, now: datetime) -> DosingSession:
    """A provider of the patient's care team marks a session entered in error (CLINICAL.md §12:
    corrections never delete). Its follow-up surveys not yet answered are cancelled (§6)."""
    if not viewer.is_role(Role.PROVIDER):
        refusal = Forbidden("only the patient's providers may void a session")
        raise denied(viewer, refusal, AuditAction.UPDATE, "DosingSession", resource_id=session_id)
    cleaned = " ".join(reason.split())
    if not cleaned or len(cleaned) > 500:
        raise InvalidInput("reason", "say why the session is void (1 to 500 characters)")
    session = await DosingSession.get_or_none(id=session_id)
    if session is None:
        raise denied(viewer, NotFound("dosing session"), AuditAction.UPDATE, "DosingSession", resource_id=session_id)
    await treating_provider_patient(
        viewer, session.patient_id, refusal=NotFound("dosing session"), resource_type="DosingSession",  # type: ignore[attr-defined]
        resource_id=session_id,
    )  # fmt: skip
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
            await raise_alerts(
                [spec], patient=patient, source_type="DosingSession", source_id=session.id, now=now, policy=policy
            )
            await _session_written(None, session, "DosingSession.abandoned", Operation.UPDATED, now)
            closed += 1
    return closed


async def get_session(viewer: Viewer, session_id: UUID) -> DosingSession:
    session = await DosingSession.get_or_none(id=session_id)
    if session is None:
        raise NotFound("dosing session")
    await require_clinical_record(viewer, session.patient_id, "DosingSession", NotFound("dosing session"))  # type: ignore[attr-defined]
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
