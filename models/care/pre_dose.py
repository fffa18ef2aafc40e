"""The pre-dose checks of CLINICAL.md §2: the checklist asked every session, the facts the checks
look at (plan, monitor, blood pressure, interval, sessions used), every check that fails, and what
a start's content calls for before any of them can refuse it (§0).

`models.care.dosing` starts the session when they pass (or records a dose already taken offline
despite them); the checks themselves are pure functions of `SafetyFacts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from models.care.dosing_records import DosingSession, SessionStatus
from models.care.plan_records import CURRENT_STATUSES, CareSetting, PlanStatus, TreatmentPlan
from models.care.plan_rules import highest_dose_mg
from models.identity.accounts import Patient
from models.kernel.errors import InvalidInput
from models.kernel.idempotency import StoredRefusal
from models.kernel.policy import BloodPressure, ClinicPolicy
from models.safety.rules import Findings, Phase, checklist_findings, reading_findings

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


def reading_is_current(
    measured_at: datetime, started_at: datetime, policy: ClinicPolicy, *, after_start: timedelta
) -> bool:
    """CLINICAL.md §2 (`BP_MISSING`): a pre-dose reading counts when it was taken in the
    `bp_reading_valid_for` (30 minutes) before the start, or at most `after_start` after it: the
    caller says how far the times it compares may disagree."""
    return started_at - policy.bp_reading_valid_for <= measured_at <= started_at + after_start


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
    # The reading's time is the phone's and the start's the server's (unless replayed): a phone
    # clock running a little ahead makes a fresh reading look later than the start, so up to the
    # clock skew after it still counts.
    reading_is_recent = (
        facts.blood_pressure is not None
        and facts.measured_at is not None
        and reading_is_current(facts.measured_at, facts.now, policy, after_start=policy.clock_skew)
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


# Numbers a cuff or a pulse oximeter can show, at home and in clinic: anything else is a typing
# error, refused.
PLAUSIBLE: dict[str, tuple[int, int]] = {
    "systolic": (60, 300),
    "diastolic": (30, 200),
    "heartRate": (20, 250),
    "spo2": (50, 100),
}


def _plausible(name: str, value: int | None) -> bool:
    low, high = PLAUSIBLE[name]
    return value is None or low <= value <= high


def validate_reading(
    reading: BloodPressureReading | None, field_name: str, now: datetime, policy: ClinicPolicy
) -> None:
    """Numbers a cuff and a pulse oximeter can show (`PLAUSIBLE`), and not taken in the future."""
    if reading is None:
        return
    if not _plausible("systolic", reading.systolic) or not _plausible("diastolic", reading.diastolic):
        (low_s, high_s), (low_d, high_d) = PLAUSIBLE["systolic"], PLAUSIBLE["diastolic"]
        message = f"blood pressure must be systolic {low_s}-{high_s} and diastolic {low_d}-{high_d} mmHg"
        raise InvalidInput(field_name, message)
    if reading.diastolic >= reading.systolic:
        raise InvalidInput(field_name, "diastolic must be lower than systolic")
    if not _plausible("heartRate", reading.heart_rate):
        low, high = PLAUSIBLE["heartRate"]
        raise InvalidInput(f"{field_name}.heartRate", f"heart rate must be {low}-{high} beats per minute")
    if not _plausible("spo2", reading.spo2):
        low, high = PLAUSIBLE["spo2"]
        raise InvalidInput(f"{field_name}.spo2", f"SpO2 must be {low}-{high} %")
    if reading.measured_at is not None and reading.measured_at.tzinfo is None:
        raise InvalidInput(f"{field_name}.measuredAt", "measuredAt must include a time zone offset")
    if reading.measured_at is not None and reading.measured_at > now + policy.clock_skew:
        raise InvalidInput(field_name, "measuredAt is in the future")


def reading_content(reading: BloodPressureReading | None) -> dict[str, Any] | None:
    """A reading as the safety screen keeps it (the content an alert came from)."""
    if reading is None:
        return None
    return {
        "systolic": reading.systolic,
        "diastolic": reading.diastolic,
        "heartRate": reading.heart_rate,
        "spo2": reading.spo2,
        "measuredAt": reading.measured_at.isoformat() if reading.measured_at else None,
    }


def session_reading_findings(
    reading: BloodPressureReading | None, phase: Phase, policy: ClinicPolicy, ceiling: BloodPressure | None = None
) -> Findings:
    """What a session's reading calls for in its phase (CLINICAL.md §2, §3), nothing without one."""
    if reading is None:
        return Findings()
    return reading_findings(
        phase, policy, systolic=reading.systolic, diastolic=reading.diastolic, spo2=reading.spo2, ceiling=ceiling
    )


def start_findings(data: StartSession, ceiling: BloodPressure, policy: ClinicPolicy) -> Findings:
    """CLINICAL.md §0 and §2: what a start's content calls for, whatever else is wrong with it: the
    checklist's "yes" answers (`checklist_findings`) and the pre-dose reading's values."""
    findings = checklist_findings(data.answered_yes, policy)
    findings.merge(session_reading_findings(data.blood_pressure, Phase.PRE, policy, ceiling))
    return findings


def validate_start(data: StartSession, now: datetime, policy: ClinicPolicy) -> tuple[str, ...]:
    """`InvalidInput` for a start that cannot be read as CLINICAL.md §2's form (after the screen);
    the checklist items answered "yes"."""
    if data.problems:
        raise data.problems[0]
    if not Decimal(0) < data.dose_mg <= (highest := highest_dose_mg(policy)):
        raise InvalidInput("doseMg", f"doseMg must be more than 0 and at most {highest:g}")
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
    policy.check_device_time("recordedAt", data.recorded_at, now)
    return data.answered_yes


async def safety_facts(
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
